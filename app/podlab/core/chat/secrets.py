"""API keys for remote endpoints: in the system keyring when there is one, never in files or logs.

Keys are stored per endpoint (the normalized base URL) under the service name "podlab". When no
usable keyring backend exists (a headless box without Secret Service), keys live in memory for
this process only and `keyring_available()` is False, so the UI can say that they will not be
remembered; an environment variable is the other way to provide one.

Keyring calls may block (D-Bus, an unlock prompt): from asyncio, call them through
`asyncio.to_thread`.
"""

from __future__ import annotations

import logging
import threading

from podlab.core.chat.client import normalize_base_url
from podlab.core.errors import PodlabError
from podlab.core.keyring_backend import (
    keyring_available,
    keyring_delete,
    keyring_get,
    keyring_set,
)

__all__ = [
    "SERVICE",
    "Secret",
    "delete_api_key",
    "get_api_key",
    "keyring_available",
    "set_api_key",
]

log = logging.getLogger(__name__)

SERVICE = "podlab"
_memory: dict[str, str] = {}
_memory_lock = threading.Lock()


class Secret(str):
    """A key that shows as `***` in repr, str(), f-strings and log messages.

    `reveal()` gives the value; `ChatClient` accepts a Secret directly.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, format_spec: str) -> str:
        return format("***", format_spec)

    def reveal(self) -> str:
        return str.__str__(self)


def _account(endpoint: str) -> str:
    return normalize_base_url(endpoint)


def get_api_key(endpoint: str) -> Secret | None:
    """The stored key for an endpoint, or None."""
    account = _account(endpoint)
    value = keyring_get(SERVICE, account)
    if value:
        return Secret(value)
    with _memory_lock:
        value = _memory.get(account)
    return Secret(value) if value else None


def set_api_key(endpoint: str, key: str) -> bool:
    """Store a key; True when it went to the keyring, False when it is kept in memory only."""
    if not key:
        delete_api_key(endpoint)
        return keyring_available()
    account = _account(endpoint)
    try:
        stored = keyring_set(SERVICE, account, str.__str__(key))
    except Exception as exc:
        raise PodlabError(
            f"cannot store the API key for {account} in the keyring ({type(exc).__name__})",
            "unlock the keyring, or provide the key through an environment variable",
        ) from None
    with _memory_lock:
        if stored:
            _memory.pop(account, None)
        else:
            _memory[account] = str.__str__(key)
    return stored


def delete_api_key(endpoint: str) -> None:
    account = _account(endpoint)
    with _memory_lock:
        _memory.pop(account, None)
    keyring_delete(SERVICE, account)
