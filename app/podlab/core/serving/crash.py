"""Why a server process ended, in words: one formatter for the local engine and Podman.

A local process's exit status is negative when a signal ended it (-11: SIGSEGV); a container's
ExitCode is 128 + the signal (137: SIGKILL) and Podman adds OOMKilled. Both become the same
text, e.g. "crashed (signal 11, SIGSEGV)", so that a dead llama.cpp is never reported only as a
dropped connection. When the exit status is lost (the process that started the server is gone),
the server's own log still tells: Python's faulthandler, on in every server Podlab starts, writes
"Fatal Python error: Segmentation fault" before the process dies.
"""

from __future__ import annotations

import platform
import re
import shlex
import signal

SIGNAL_MEANINGS = {
    signal.SIGILL: "an instruction this CPU does not have: llama.cpp was built for another CPU",
    signal.SIGSEGV: "a memory access fault (also how a general protection fault shows)",
    signal.SIGBUS: "a bus error (a memory access fault)",
    signal.SIGFPE: "an arithmetic fault",
    signal.SIGABRT: "the program aborted itself (a failed check in llama.cpp)",
    signal.SIGKILL: "killed (by the out-of-memory killer, or by hand)",
}
"""What a signal that ends a server usually means, in a few words."""

CPU_FAULT_SIGNALS = frozenset({signal.SIGILL, signal.SIGSEGV, signal.SIGBUS})
"""Signals a llama.cpp compiled for another CPU ends with: a portable rebuild is the fix."""

_FAULTHANDLER_NAMES = {
    "Segmentation fault": signal.SIGSEGV,
    "Illegal instruction": signal.SIGILL,
    "Floating point exception": signal.SIGFPE,
    "Floating-point exception": signal.SIGFPE,
    "Bus error": signal.SIGBUS,
    "Aborted": signal.SIGABRT,
}
_FAULTHANDLER_LINE = re.compile(r"^Fatal Python error: (?P<name>[A-Za-z -]+?)\s*$", re.MULTILINE)

# The same portable baseline scripts/setup.sh compiles for.
PORTABLE_CMAKE_ARGS = {
    "x86_64": "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
    "-DGGML_AVX512=OFF",
}
GENERIC_CMAKE_ARGS = "-DGGML_NATIVE=OFF"


def signal_name(number: int) -> str:
    """ "SIGSEGV" for 11; "signal 99" for a number this system does not name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def signal_of(code: int | None, *, from_container: bool = False, log_text: str = "") -> int | None:
    """The signal that ended a process: from its exit status, else from its log."""
    if code is not None and code < 0:
        return -code
    if from_container and code is not None and 128 < code < 128 + 65:
        return code - 128
    if code is None:
        return signal_in_log(log_text)
    return None


def signal_in_log(text: str) -> int | None:
    """The signal Python's faulthandler reported last in a log ("Fatal Python error: ...")."""
    found = None
    for match in _FAULTHANDLER_LINE.finditer(text):
        found = _FAULTHANDLER_NAMES.get(match.group("name"), found)
    return None if found is None else int(found)


def describe_exit(
    code: int | None,
    *,
    from_container: bool = False,
    oom_killed: bool = False,
    log_text: str = "",
) -> str:
    """One line: "crashed (signal 11, SIGSEGV)", "exited with code 1", "killed: out of memory
    (OOMKilled, signal 9, SIGKILL)"...

    `code` is a process's exit status (negative: a signal) or, with `from_container`, a
    container's ExitCode (128 + N: signal N). None means the status is unknown: the log is
    read for a crash report instead.
    """
    number = signal_of(code, from_container=from_container, log_text=log_text)
    if oom_killed:
        number = number or int(signal.SIGKILL)
        return f"killed: out of memory (OOMKilled, signal {number}, {signal_name(number)})"
    if number is not None:
        return f"crashed (signal {number}, {signal_name(number)})"
    if code is None:
        return "exited (its exit status is unknown)"
    if code == 0:
        return "exited normally (code 0)"
    return f"exited with code {code}"


def signal_meaning(number: int | None) -> str:
    """What the signal usually means for a server ("" when nothing useful is known)."""
    if number is None:
        return ""
    try:
        return SIGNAL_MEANINGS.get(signal.Signals(number), "")
    except ValueError:
        return ""


def portable_rebuild_command(python: str, version: str | None) -> str:
    """The shell command that rebuilds llama-cpp-python for a portable CPU baseline in the
    environment of `python` (the interpreter that runs the local engine)."""
    cmake = PORTABLE_CMAKE_ARGS.get(platform.machine().lower(), GENERIC_CMAKE_ARGS)
    package = f"llama-cpp-python=={version}" if version else "llama-cpp-python"
    return (
        f"CMAKE_ARGS={shlex.quote(cmake)} {shlex.quote(python)} -m pip install "
        f"--force-reinstall --no-cache-dir --no-deps --no-binary llama-cpp-python "
        f"{shlex.quote(package)}"
    )


def crash_fix(number: int | None, python: str, version: str | None) -> str:
    """What to do about a local engine that died by `number` ("" when no fix is known)."""
    if number is None:
        return ""
    if number in CPU_FAULT_SIGNALS:
        return (
            "llama.cpp was probably compiled for another CPU; rebuild it for a portable "
            f"baseline: {portable_rebuild_command(python, version)}"
        )
    if number == signal.SIGKILL:
        return "free memory, or serve a smaller model or a shorter context (--ctx)"
    return ""


__all__ = [
    "CPU_FAULT_SIGNALS",
    "crash_fix",
    "describe_exit",
    "portable_rebuild_command",
    "signal_in_log",
    "signal_meaning",
    "signal_name",
    "signal_of",
]
