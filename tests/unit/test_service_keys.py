"""Where the keys of Podlab's own services are kept: the keyring, else a file only the user
can read, one per endpoint (host and port)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from podlab.core.paths import Locations
from podlab.core.serving.keys import KEYRING_SERVICE, ServiceKeys, endpoint_account
from tests.keyrings import install_memory_keyring


@pytest.fixture
def keys(tmp_path: Path) -> ServiceKeys:
    return ServiceKeys(Locations(config_dir=tmp_path / "c", data_dir=tmp_path / "d",
                                 state_dir=tmp_path / "s", cache_dir=tmp_path / "k"))  # fmt: skip


def test_one_account_per_endpoint_whatever_the_loopback_name() -> None:
    assert endpoint_account("http://localhost:35000/v1") == "127.0.0.1:35000"
    assert endpoint_account("127.0.0.1:35000") == "127.0.0.1:35000"
    assert endpoint_account("http://[::1]:35000") == "127.0.0.1:35000"
    assert endpoint_account("http://example.org/v1") is None


def test_keys_go_to_the_keyring_and_no_file_stays(
    keys: ServiceKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = install_memory_keyring(monkeypatch)
    keys.save("http://127.0.0.1:35001/v1", "k1")
    assert backend.items == {(KEYRING_SERVICE, "127.0.0.1:35001"): "k1"}
    assert not keys.folder.exists() or not list(keys.folder.iterdir())
    assert keys.get("http://localhost:35001") == "k1"
    keys.delete("http://localhost:35001")
    assert backend.items == {} and keys.get("http://localhost:35001") is None
    keys.delete("http://localhost:35001")  # twice is fine


def test_a_locked_keyring_falls_back_to_a_private_file(
    keys: ServiceKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = install_memory_keyring(monkeypatch)
    backend.locked = True
    keys.save("http://127.0.0.1:35002", "k2")
    (stored,) = keys.folder.iterdir()
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stored.read_text() == "k2" and keys.get("http://127.0.0.1:35002") == "k2"
    backend.locked = False
    keys.save("http://127.0.0.1:35002", "k3")  # the keyring works again: the file goes
    assert not stored.exists() and keys.get("http://127.0.0.1:35002") == "k3"
