"""One bearer key per service, made by Podlab and kept where only the user can read it.

A service on 127.0.0.1 is out of other machines' reach but not of the web pages the user opens:
any page can send requests to it. Every model server Podlab starts therefore requires a key
that Podlab generates, hands to its own clients (Playground, Compare, `podlab chat`) and shows
in the client snippets. Keys are stored per endpoint (host and port, which a service keeps for
its whole life): in the system keyring when there is one, otherwise in a file readable by the
user alone. Keyring calls may block; from asyncio, call these through `asyncio.to_thread`.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from podlab.core.keyring_backend import keyring_delete, keyring_get, keyring_set
from podlab.core.paths import Locations, atomic_write_text

log = logging.getLogger(__name__)

KEYRING_SERVICE = "podlab-services"
SECRET_NAME = "api-key"
"""The name a container spec gives the key (see `ContainerSpec.secret_env`)."""
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")


def new_key() -> str:
    """A fresh key: 256 random bits, URL-safe, for an `Authorization: Bearer` header."""
    return secrets.token_urlsafe(32)


def endpoint_account(endpoint: str) -> str | None:
    """`http://localhost:35000/v1` -> `127.0.0.1:35000`: one name per service endpoint (None
    for a URL without a port, which no Podlab service has)."""
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    try:
        port = parts.port
    except ValueError:
        return None
    if port is None or not parts.hostname:
        return None
    host = "127.0.0.1" if parts.hostname in LOOPBACK_NAMES else parts.hostname.lower()
    return f"{host}:{port}"


class ServiceKeys:
    """Where the keys of Podlab's services are kept (keyring, else a private file each)."""

    def __init__(self, locations: Locations | None = None) -> None:
        self.folder = (locations or Locations.default()).state_dir / "service-keys"

    def save(self, endpoint: str, key: str) -> None:
        account = self._account(endpoint)
        try:
            if keyring_set(KEYRING_SERVICE, account, key):
                self._file(account).unlink(missing_ok=True)
                return
        except Exception as exc:  # a locked keyring: the private file still works
            log.warning("cannot store a service key in the keyring: %s", type(exc).__name__)
        atomic_write_text(self._file(account), key, private=True)

    def get(self, endpoint: str) -> str | None:
        """The key of the service at `endpoint`, or None when Podlab made none for it."""
        account = endpoint_account(endpoint)
        if account is None:
            return None
        value = keyring_get(KEYRING_SERVICE, account)
        if value:
            return value
        try:
            return self._file(account).read_text().strip() or None
        except OSError:
            return None

    def delete(self, endpoint: str) -> None:
        account = endpoint_account(endpoint)
        if account is None:
            return
        self._file(account).unlink(missing_ok=True)
        keyring_delete(KEYRING_SERVICE, account)

    def _account(self, endpoint: str) -> str:
        account = endpoint_account(endpoint)
        if account is None:
            raise ValueError(f"{endpoint!r} names no host and port")
        return account

    def _file(self, account: str) -> Path:
        return self.folder / account.replace(":", "-").replace("/", "_")
