"""Blocking work of a download (socket reads, hashing a resumed prefix) in threads of its own."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any


def in_thread(function: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
    """Run `function(*args)` in a new daemon thread; its outcome lands in the returned future.

    Daemon, not a pool's thread: a thread abandoned while it connects (cancel, Ctrl-C) must not
    hold the process open at exit until the connect timeout.
    """
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def work() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = function(*args)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)

    threading.Thread(target=work, name="podlab-download", daemon=True).start()
    return future
