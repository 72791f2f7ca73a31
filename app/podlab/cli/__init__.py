"""The `podlab` command line: a second face of `podlab.core`, headless and scriptable.

Conventions: `--json` prints machine output; an expected error exits non-zero with one clear
line and a hint on stderr, never a traceback. This package must not import Qt.
Each command group lives in its own module with `register(subparsers)`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable

from podlab import __version__
from podlab.cli.output import terminal_safe
from podlab.core.errors import PodlabError
from podlab.core.logs import add_log_level_option, configure_logging
from podlab.core.paths import Locations, tighten_private_files

# Modules under podlab.cli that add subcommands; each has register(subparsers).
COMMAND_MODULES: tuple[str, ...] = ("catalog", "models", "serve", "chat", "recipe", "eval")

log = logging.getLogger(__name__)

EXIT_ERROR = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="podlab",
        description="A desktop lab for open LLMs. Run with no arguments to open the window.",
        epilog="Window options: podlab [--screenshot FILE [--page NAME] [--size WxH]]",
    )
    parser.add_argument("--version", action="version", version=f"podlab {__version__}")
    add_log_level_option(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"podlab.cli.{name}")
        module.register(subparsers)
    return parser


def fail(message: str, hint: str = "") -> int:
    """Print an expected error as one line (plus a hint line) and return the exit code."""
    print(f"podlab: error: {terminal_safe(message)}", file=sys.stderr)
    if hint:
        print(f"hint: {terminal_safe(hint)}", file=sys.stderr)
    return EXIT_ERROR


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    configure_logging(args.log_level)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    tighten_private_files(Locations.default())
    try:
        return handler(args)
    except PodlabError as exc:
        return fail(exc.message, exc.hint)
    except KeyboardInterrupt:
        return 130
    except Exception:
        log.exception("podlab %s failed", args.command)
        raise
