"""When a finished task deserves a desktop notification."""

from __future__ import annotations

import pytest

from podlab.core.tasks import Task, TaskState
from podlab.ui.notify import notification_for


def _task(state: TaskState, **fields: str) -> Task:
    return Task(id=1, name="Download qwen3-4b", kind="download", state=state, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("state", [TaskState.DONE, TaskState.FAILED])
def test_a_task_that_ends_while_the_window_is_active_is_not_notified(state: TaskState) -> None:
    assert notification_for(_task(state), window_active=True) is None


@pytest.mark.parametrize("state", [TaskState.QUEUED, TaskState.RUNNING, TaskState.CANCELLED])
def test_running_or_cancelled_tasks_are_not_notified(state: TaskState) -> None:
    """A cancel comes from the user, who knows already."""
    assert notification_for(_task(state), window_active=False) is None


def test_a_finished_task_out_of_sight_is_notified_with_its_detail() -> None:
    note = notification_for(_task(TaskState.DONE, detail="2.5 GB in 3 min"), window_active=False)
    assert note is not None and not note.failed
    assert (note.title, note.text) == ("Finished: Download qwen3-4b", "2.5 GB in 3 min")


def test_a_failed_task_out_of_sight_is_notified_with_its_error() -> None:
    note = notification_for(_task(TaskState.FAILED, error="disk full"), window_active=False)
    assert note is not None and note.failed
    assert (note.title, note.text) == ("Failed: Download qwen3-4b", "disk full")
