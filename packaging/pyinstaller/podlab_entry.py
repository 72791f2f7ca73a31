"""The bundle's entry point: Podlab, or a Python for the local engine's child processes.

A frozen bundle has no `python` to run llama-cpp-python's server or the engine's self-test with:
the bundle's own executable plays that part when its first argument is `--as-python`
(`podlab-python`, next to the libraries, is the small wrapper Podlab is pointed at).
"""

from __future__ import annotations

import faulthandler
import os
import runpy
import sys

AS_PYTHON = "--as-python"
LOCAL_PYTHON_ENV = "PODLAB_LOCAL_PYTHON"  # podlab.core.serving.local_server.PYTHON_ENV


def run_as_python(args: list[str]) -> int:
    """The part of `python [-X faulthandler] (-c CODE | SCRIPT) ARGS…` the local engine uses."""
    while args[:1] == ["-X"]:
        if args[1:2] == ["faulthandler"]:
            faulthandler.enable()
        args = args[2:]
    if os.environ.get("PYTHONFAULTHANDLER"):  # the frozen interpreter ignores PYTHON* variables
        faulthandler.enable()
    if args[:1] == ["-c"]:
        sys.argv = ["-c", *args[2:]]
        exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__"})
        return 0
    sys.argv = list(args)
    runpy.run_path(args[0], run_name="__main__")
    return 0


def main() -> int:
    if sys.argv[1:2] == [AS_PYTHON]:
        return run_as_python(sys.argv[2:])
    bundle_python = os.path.join(getattr(sys, "_MEIPASS", ""), "podlab-python")
    os.environ.setdefault(LOCAL_PYTHON_ENV, bundle_python)
    from podlab.launcher import main as podlab_main

    return podlab_main()


if __name__ == "__main__":
    sys.exit(main())
