"""A keyring backend held in memory, for the tests of what Podlab keeps in the system keyring
(no Secret Service runs here; the keyring package's own calls still run)."""

from __future__ import annotations

import pytest


class MemoryKeyring:
    """A minimal keyring backend (what keyring.set_keyring accepts)."""

    priority = 1

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], str] = {}
        self.locked = False

    def get_password(self, service: str, user: str) -> str | None:
        self._check()
        return self.items.get((service, user))

    def set_password(self, service: str, user: str, password: str) -> None:
        self._check()
        self.items[(service, user)] = password

    def delete_password(self, service: str, user: str) -> None:
        from keyring.errors import PasswordDeleteError

        self._check()
        if (service, user) not in self.items:
            raise PasswordDeleteError(user)
        del self.items[(service, user)]

    def _check(self) -> None:
        from keyring.errors import KeyringLocked

        if self.locked:
            raise KeyringLocked("the keyring is locked")


def install_memory_keyring(monkeypatch: pytest.MonkeyPatch) -> MemoryKeyring:
    import keyring

    backend = MemoryKeyring()
    monkeypatch.setattr(keyring, "get_keyring", lambda: backend)
    monkeypatch.setattr(keyring, "get_password", backend.get_password)
    monkeypatch.setattr(keyring, "set_password", backend.set_password)
    monkeypatch.setattr(keyring, "delete_password", backend.delete_password)
    return backend
