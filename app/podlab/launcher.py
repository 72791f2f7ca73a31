"""The `podlab` entry point: the GUI when asked for a window, the CLI otherwise.

It sits outside both faces so that `podlab.cli` never imports Qt and the GUI never parses
subcommands.
"""

from __future__ import annotations

import sys

GUI_FLAGS = ("--screenshot", "--page", "--size")


def wants_gui(argv: list[str]) -> bool:
    """No arguments, or only window options, means the user asked for the window."""
    if not argv:
        return True
    return argv[0] in GUI_FLAGS or any(arg.split("=", 1)[0] == "--screenshot" for arg in argv)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if wants_gui(args):
        from podlab.ui.app import run_gui

        return run_gui(args)
    from podlab.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
