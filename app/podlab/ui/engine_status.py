"""The status bar's container-engine line: Podman found and its version, or how to fix it."""

from __future__ import annotations

import asyncio

from podlab.ui.main_window import MainWindow

RECHECK_SECONDS = 30.0


async def refresh_engine_status(window: MainWindow) -> None:
    status = await window.lab.engine.connect()
    if status.available:
        window.set_engine_status(f"Podman {status.version}", status.url or "", ok=True)
    else:
        window.set_engine_status(
            "Podman: not available — services use the local engine",
            f"{status.problem}\n{status.hint}".strip(),
            ok=False,
        )


async def watch_engine(window: MainWindow) -> None:
    """Check at start and then now and then, so starting Podman later is noticed."""
    while True:
        await refresh_engine_status(window)
        await asyncio.sleep(RECHECK_SECONDS)
