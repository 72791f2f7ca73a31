"""Background work started from the UI: one helper that names, keeps and cancels every task.

asyncio holds only weak references to tasks, so a task nobody keeps may vanish mid-run, and
its error would surface (if ever) as "exception was never retrieved" at garbage collection.
`start` keeps each task until it ends, reports its failure through the error reporter at once,
and `cancel_all` stops what is left when the window closes.

asyncio is imported on first use, not here: the app paints its first page before it loads
asyncio and qasync, and a page shown then asks `when_loop_ready` to start its loading.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from podlab.ui.crash import report_error

if TYPE_CHECKING:
    import asyncio

T = TypeVar("T")

_running: set[asyncio.Task[Any]] = set()
_waiting_for_loop: list[Callable[[], None]] | None = None
"""Work held back while the app paints before its loop exists (None: the loop is there)."""


def hold_until_loop() -> None:
    """Called by the app before it paints its first page, which happens before the asyncio
    loop exists: `when_loop_ready` keeps callbacks until `loop_ready`."""
    global _waiting_for_loop
    if _waiting_for_loop is None:
        _waiting_for_loop = []


def loop_ready() -> None:
    """The app's asyncio loop is set: run what `when_loop_ready` held back, in order."""
    global _waiting_for_loop
    waiting, _waiting_for_loop = _waiting_for_loop or [], None
    for callback in waiting:
        callback()


def when_loop_ready(callback: Callable[[], None]) -> None:
    """Run `callback` now, or once the app's loop is set if it paints before that."""
    if _waiting_for_loop is None:
        callback()
    else:
        _waiting_for_loop.append(callback)


def start(coro: Coroutine[Any, Any, T], name: str, *, awaited: bool = False) -> asyncio.Task[T]:
    """Run `coro` on the app's loop as a task called `name`; a failure is reported, not lost.

    `awaited=True` says that callers await the task and handle its failure themselves (a
    shared probe, say): it is kept and cancelled like the others but not reported here.
    """
    import asyncio

    task = asyncio.get_event_loop_policy().get_event_loop().create_task(coro, name=name)
    _running.add(task)
    task.add_done_callback(_finished_awaited if awaited else _finished)
    return task


def running() -> list[asyncio.Task[Any]]:
    """The tasks started here that have not finished yet."""
    return [task for task in _running if not task.done()]


def cancel_all() -> list[asyncio.Task[Any]]:
    """Cancel every task still running; returns them, for a caller that wants to await them."""
    tasks = running()
    for task in tasks:
        task.cancel()
    return tasks


def _finished_awaited(task: asyncio.Task[Any]) -> None:
    _running.discard(task)


def _finished(task: asyncio.Task[Any]) -> None:
    _running.discard(task)
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        report_error(error, f"background task {task.get_name()}")
