"""`core` and `cli` never import Qt: checked on the real import graph, not only statically."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import podlab.cli
import podlab.core

pytestmark = pytest.mark.unit


def test_importing_all_of_core_and_cli_loads_no_qt() -> None:
    modules = [f"podlab.core.{m.name}" for m in pkgutil.iter_modules(podlab.core.__path__)]
    modules += [f"podlab.cli.{m.name}" for m in pkgutil.iter_modules(podlab.cli.__path__)]
    modules.append("podlab.cli")
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "qt = ('PySide6', 'qasync', 'shiboken6')\n"
        "bad = sorted(m for m in sys.modules\n"
        "             if m.split('.')[0] in qt or m.startswith('podlab.ui'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert len(modules) > 5
    assert result.stdout.strip() == ""
