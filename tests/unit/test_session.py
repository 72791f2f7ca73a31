"""The remembered session: saved at once, private, and never a reason to fail."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from podlab.core.lab import Lab
from podlab.core.paths import Locations
from podlab.core.session import Session

pytestmark = pytest.mark.unit


def test_sections_survive_a_restart_in_a_private_file(tmp_path: Path) -> None:
    locations = Locations(tmp_path / "c", tmp_path / "d", tmp_path / "k", tmp_path / "s")
    lab = Lab.open(locations)
    lab.session.put("playground", {"conversation_id": 3, "endpoint": "http://h:1"})
    lab.session.put("compare", {"panes": [{"model": "m"}]})
    path = locations.session_file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = Lab.open(locations).session
    assert again.get("playground") == {"conversation_id": 3, "endpoint": "http://h:1"}
    assert again.get("compare")["panes"] == [{"model": "m"}]
    assert again.get("elsewhere") == {}


def test_a_broken_file_is_an_empty_session(tmp_path: Path) -> None:
    path = tmp_path / "session.json"
    path.write_text("{not json", encoding="utf-8")
    session = Session.load(path)
    assert session.get("playground") == {}
    session.put("playground", {"endpoint": "x"})  # saving replaces the broken file
    assert Session.load(path).get("playground") == {"endpoint": "x"}
    path.write_text("[1, 2]", encoding="utf-8")
    assert Session.load(path).sections == {}
