"""Whether a real system keyring is configured (Secret Service, KWallet, macOS Keychain).

Shared by the endpoint keys the user types (chat) and the keys Podlab makes for its own
services (serving); neither may import the other, so the check lives here.
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
