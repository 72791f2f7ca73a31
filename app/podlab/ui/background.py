"""Background work started from the UI: one helper that names, keeps and cancels every task.

asyncio holds only weak references to tasks, so a task nobody keeps may vanish mid-run, and
its error would surface (if ever) as "exception was never retrieved" at garbage collection.
`start` keeps each task until it ends, reports its failure through the error reporter at once,
and `cancel_all` stops what is left when the window closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from podlab.ui.crash import report_error

T = TypeVar("T")

_running: set[asyncio.Task[Any]] = set()


def start(coro: Coroutine[Any, Any, T], name: str, *, awaited: bool = False) -> asyncio.Task[T]:
    """Run `coro` on the app's loop as a task called `name`; a failure is reported, not lost.

    `awaited=True` says that callers await the task and handle its failure themselves (a
    shared probe, say): it is kept and cancelled like the others but not reported here.
    """
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
