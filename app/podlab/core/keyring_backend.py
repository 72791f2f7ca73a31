"""The system keyring (Secret Service, KWallet, macOS Keychain), when a real one is configured.

Shared by the endpoint keys the user types (chat) and the keys Podlab makes for its own
services (serving); neither may import the other, so the keyring calls live here. Values and
their accounts are never logged, only the kind of failure.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def keyring_backend() -> object | None:
    """The configured backend, or None when there is none that keeps secrets across restarts."""
    import keyring  # imported on first use: finding the backend takes a while
    from keyring.backends import fail

    try:
        backend = keyring.get_keyring()
    except Exception:  # a broken keyring setup: secrets are kept elsewhere
        log.info("no usable keyring backend", exc_info=True)
        return None
    if isinstance(backend, fail.Keyring):
        return None
    priority = getattr(backend, "priority", 1)
    try:
        if float(priority) <= 0:  # the "null" and "fail" style backends
            return None
    except (TypeError, ValueError):
        pass
    return backend


def keyring_available() -> bool:
    """True when secrets survive a restart (a real keyring backend is configured)."""
    return keyring_backend() is not None


def keyring_get(service: str, account: str) -> str | None:
    """The stored value, or None when there is no keyring, no value, or the keyring fails."""
    if keyring_backend() is None:
        return None
    import keyring

    try:
        return keyring.get_password(service, account) or None
    except Exception as exc:
        log.warning("cannot read a key from the keyring: %s", type(exc).__name__)
        return None


def keyring_set(service: str, account: str, value: str) -> bool:
    """Store a value; False when there is no keyring. A failing keyring raises its error."""
    if keyring_backend() is None:
        return False
    import keyring

    keyring.set_password(service, account, value)
    return True


def keyring_delete(service: str, account: str) -> None:
    """Forget a value; a value that is not there, or no keyring, is not an error."""
    if keyring_backend() is None:
        return
    import keyring
    from keyring.errors import PasswordDeleteError

    try:
        keyring.delete_password(service, account)
    except PasswordDeleteError:
        pass
    except Exception as exc:
        log.warning("cannot delete a key from the keyring: %s", type(exc).__name__)
