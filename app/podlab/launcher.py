"""The `podlab` entry point: the GUI when asked for a window, the CLI otherwise.

It sits outside both faces so that `podlab.cli` never imports Qt and the GUI never parses
subcommands.
"""

from __future__ import annotations

import sys

GUI_FLAGS = ("--screenshot", "--page", "--size")
GLOBAL_FLAGS = ("--log-level",)
"""Options of both faces: they say nothing about which one the user asked for."""


def wants_gui(argv: list[str]) -> bool:
    """No arguments, only window options, or GGUF files to open (`podlab FILE.gguf`, as the
    desktop entry runs it) mean the user asked for the window."""
    rest = _without_global_options(argv)
    if not rest:
        return True
    if rest[0] in GUI_FLAGS or rest[0].lower().endswith(".gguf"):
        return True
    return any(arg.split("=", 1)[0] == "--screenshot" for arg in rest)


def _without_global_options(argv: list[str]) -> list[str]:
    rest: list[str] = []
    skip_value = False
    for arg in argv:
        if skip_value:
            skip_value = False
        elif arg in GLOBAL_FLAGS:
            skip_value = True
        elif arg.split("=", 1)[0] not in GLOBAL_FLAGS:
            rest.append(arg)
    return rest


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if wants_gui(args):
        from podlab.ui.app import run_gui

        return run_gui(args)
    from podlab.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
