"""Long jobs (downloads, builds, service starts) as tasks: one list the Tasks panel shows.

A `Task` wraps an asyncio task with a name, a state, progress and a log. Listeners are plain
callables, so the Qt layer can subscribe without core knowing about Qt.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from podlab.core.errors import PodlabError

log = logging.getLogger(__name__)


class TaskState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED)


@dataclass
class Task:
    """A unit of long work the user can watch and cancel."""

    id: int
    name: str
    kind: str
    state: TaskState = TaskState.QUEUED
    progress: float | None = None
    """0..1, or None when the amount of work is unknown."""
    detail: str = ""
    """One line for the user: bytes, rate and ETA for a download, the last build step, ..."""
    error: str = ""
    log: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    finished_at: float | None = None
    _handle: asyncio.Task[Any] | None = field(default=None, repr=False)
    _manager: TaskManager | None = field(default=None, repr=False)

    def report(self, progress: float | None = None, detail: str | None = None) -> None:
        """Called by the work itself; listeners decide how often to repaint."""
        if progress is not None:
            self.progress = max(0.0, min(1.0, progress))
        if detail is not None:
            self.detail = detail
        self._changed()

    def add_log(self, line: str) -> None:
        self.log.append(line)
        self._changed()

    def cancel(self) -> None:
        if self._handle is not None and not self._handle.done():
            self._handle.cancel()

    def _changed(self) -> None:
        if self._manager is not None:
            self._manager.notify(self)


TaskListener = Callable[[Task], None]


class TaskManager:
    """Starts tasks on the running loop and tells listeners about every change."""

    def __init__(self) -> None:
        self._tasks: list[Task] = []
        self._ids = itertools.count(1)
        self._listeners: list[TaskListener] = []

    @property
    def tasks(self) -> list[Task]:
        return list(self._tasks)

    def subscribe(self, listener: TaskListener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: TaskListener) -> None:
        self._listeners.remove(listener)

    def notify(self, task: Task) -> None:
        for listener in list(self._listeners):
            listener(task)

    def start(
        self,
        name: str,
        kind: str,
        work: Callable[[Task], Coroutine[Any, Any, Any]],
    ) -> Task:
        """Run `work(task)` as a task; its exceptions become the task's error, never a crash."""
        task = Task(id=next(self._ids), name=name, kind=kind, _manager=self)
        self._tasks.append(task)
        task._handle = asyncio.get_running_loop().create_task(self._run(task, work))
        self.notify(task)
        return task

    async def _run(self, task: Task, work: Callable[[Task], Coroutine[Any, Any, Any]]) -> None:
        task.state = TaskState.RUNNING
        self.notify(task)
        try:
            await work(task)
        except asyncio.CancelledError:
            task.state = TaskState.CANCELLED
        except PodlabError as exc:
            task.state = TaskState.FAILED
            task.error = f"{exc.message}" + (f" ({exc.hint})" if exc.hint else "")
        except Exception as exc:  # the task list is where unexpected failures are shown
            log.exception("task %r failed", task.name)
            task.state = TaskState.FAILED
            task.error = f"{type(exc).__name__}: {exc}"
        else:
            task.state = TaskState.DONE
            task.progress = 1.0
        task.finished_at = time.time()
        self.notify(task)

    def running(self) -> list[Task]:
        return [task for task in self._tasks if not task.state.finished]

    def clear_finished(self) -> None:
        self._tasks = [task for task in self._tasks if not task.state.finished]

    async def cancel_all(self, grace_seconds: float = 5.0) -> None:
        """Cancel what still runs and wait for it, so the app quits with no pending tasks."""
        handles = [t._handle for t in self._tasks if t._handle is not None and not t._handle.done()]
        for handle in handles:
            handle.cancel()
        if handles:
            await asyncio.wait(handles, timeout=grace_seconds)
