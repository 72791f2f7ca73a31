"""`podlab` picks the window or the command line from its arguments."""

from __future__ import annotations

import pytest

from podlab.launcher import wants_gui


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--screenshot", "x.png"],
        ["--page", "models"],
        ["model.gguf"],
        ["/home/me/Models/Qwen3-4B-Q4_K_M.GGUF"],
        ["--log-level", "debug", "a.gguf", "b.gguf"],
    ],
)
def test_window_arguments_open_the_window(argv: list[str]) -> None:
    assert wants_gui(argv)


@pytest.mark.parametrize("argv", [["models", "list"], ["models", "import", "a.gguf"], ["doctor"]])
def test_commands_run_the_command_line(argv: list[str]) -> None:
    assert not wants_gui(argv)
