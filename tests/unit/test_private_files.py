"""Podlab's own files are readable by the user alone: created so after real use, whatever the
umask, and tightened at start when an earlier version (or a copy) left them open."""

from __future__ import annotations

import os
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podlab.core.chat.conversations import ConversationStore
from podlab.core.lab import Lab
from podlab.core.paths import Locations
from podlab.core.serving.local_server import LocalEngine, LocalRecord
from podlab.core.settings import load_settings, save_settings

pytestmark = pytest.mark.unit


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The loosest usual umask: without care, files would be 0644 and folders 0755."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_private_files_are_created_for_the_user_alone(open_umask: None) -> None:
    locations = Locations.default()
    assert not any(root.exists() for root in locations.roots)

    store = ConversationStore(locations.database_file)
    chat = store.create_conversation("secret plans")
    store.add_message(chat.id, "user", "the launch code is 1234")
    store.add_vote(["a", "b"], 0)

    loaded = load_settings()
    loaded.settings.theme = "dark"
    save_settings(loaded)

    local = LocalEngine(locations)
    record = LocalRecord(
        id="private-check",
        name="private-check",
        model_ref="none",
        model_file="none",
        host="127.0.0.1",
        port=9,
        log_path=str(local.new_log_path("private-check")),
        command=[sys.executable, "-c", "print('served')"],
    )
    local.spawn(record)  # writes the record and the log
    log_file = Path(record.log_path)
    deadline = time.monotonic() + 10
    while b"served" not in log_file.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    store.close()

    files = [locations.settings_file, locations.database_file, log_file]
    files += list(local.records_dir.glob("*.json"))
    files += list(locations.data_dir.glob("podlab.sqlite3-*"))  # SQLite's -wal and -shm
    assert len(files) >= 4 and b"served" in log_file.read_bytes()
    assert {str(p): mode(p) for p in files} == {str(p): 0o600 for p in files}
    folders = [locations.config_dir, locations.data_dir, locations.state_dir]
    folders += [local.records_dir, locations.log_dir]
    assert {str(p): mode(p) for p in folders} == {str(p): 0o700 for p in folders}


def test_start_tightens_what_is_open_and_leaves_models_readable(open_umask: None) -> None:
    locations = Locations.default()
    loose = [
        locations.settings_file,
        locations.database_file,
        locations.state_dir / "services" / "old.json",
        locations.log_dir / "local-old.log",
    ]
    cached = locations.cache_dir / "builds" / "big-tree-file"
    cached.parent.mkdir(parents=True)
    cached.write_text("{}")
    for path in loose:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("theme: dark\n" if path == locations.settings_file else "{}")
        path.chmod(0o644)
    model = locations.models_dir / "m" / "m.gguf"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"GGUF")
    folders = {p.parent for p in loose} | set(locations.roots)
    assert all(mode(p) == 0o755 for p in folders) and all(mode(p) == 0o644 for p in loose)

    lab = Lab.open()
    assert lab.settings.theme == "dark"

    assert {str(p): mode(p) for p in loose} == {str(p): 0o600 for p in loose}
    assert {str(p): mode(p) for p in folders} == {str(p): 0o700 for p in folders}
    # Containers that run as other users read the models: their folder keeps its modes.
    assert mode(locations.models_dir) == mode(model.parent) == 0o755 and mode(model) == 0o644
    # The cache is closed at its root, not walked (it holds large build trees).
    assert mode(locations.cache_dir) == 0o700 and mode(cached) == 0o644
