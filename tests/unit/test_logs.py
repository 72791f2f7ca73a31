"""Podlab's log file: private, rotating, at the chosen level, and never holding a secret."""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from podlab.core.logs import (
    REDACTED,
    close_logging,
    configure_logging,
    hold_logging,
    log_file,
    redact,
)
from podlab.core.paths import Locations

pytestmark = pytest.mark.unit

log = logging.getLogger("podlab.test")


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("HF_TOKEN", "plainvaluefromenv42")
    path = configure_logging("info")
    yield path
    close_logging()


def test_the_log_is_private_in_the_state_folder(logged: Path) -> None:
    assert logged == Locations.default().state_dir / "podlab.log" == log_file()
    assert stat.S_IMODE(logged.stat().st_mode) == 0o600
    assert stat.S_IMODE(logged.parent.stat().st_mode) == 0o700


def test_records_at_the_level_asked_for(logged: Path) -> None:
    log.debug("a debug detail")
    log.info("an info line")
    close_logging()
    text = logged.read_text()
    assert "an info line" in text and "a debug detail" not in text
    configure_logging("debug")
    log.debug("now the detail")
    close_logging()
    assert "now the detail" in logged.read_text()


def test_records_held_before_the_file_opens_are_written_to_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The GUI paints before it opens the log file: what was logged meanwhile is not lost, and
    is redacted and filtered by level like the rest."""
    monkeypatch.setenv("HF_TOKEN", "heldvaluefromenv42")
    hold_logging("info")
    log.info("before the first paint, token %s", "heldvaluefromenv42")
    log.debug("a held debug detail")
    assert log_file() is None
    path = configure_logging("info")
    log.info("after the first paint")
    close_logging()
    lines = path.read_text().splitlines()
    held = [n for n, line in enumerate(lines) if "before the first paint" in line]
    after = [n for n, line in enumerate(lines) if "after the first paint" in line]
    assert held and after and held[-1] < after[-1]
    assert "heldvaluefromenv42" not in lines[held[-1]] and REDACTED in lines[held[-1]]
    assert not any("a held debug detail" in line for line in lines)


def test_secrets_never_reach_the_file(logged: Path) -> None:
    log.warning("request headers %s", {"Authorization": "Bearer sk-abcdef1234567890"})
    log.info("pull with HF_TOKEN=hf_AbCdEfGhIjKlMnOp and api_key=s3cr3t-value")
    log.info("the token from the environment: %s", "plainvaluefromenv42")
    try:
        raise RuntimeError("server said: Authorization: Basic dXNlcjpwYXNzd29yZA==")
    except RuntimeError:
        log.exception("the request failed")
    close_logging()
    text = logged.read_text()
    for secret in (
        "sk-abcdef1234567890",
        "hf_AbCdEfGhIjKlMnOp",
        "s3cr3t-value",
        "plainvaluefromenv42",
        "dXNlcjpwYXNzd29yZA==",
    ):
        assert secret not in text
    assert text.count(REDACTED) >= 5
    assert "Traceback" in text and "the request failed" in text


def test_redact_keeps_ordinary_words() -> None:
    line = "completion_tokens: 12, max_tokens=64, model=smollm2"
    assert redact(line) == line


def test_a_second_configuration_replaces_the_first(logged: Path) -> None:
    configure_logging("info")
    log.info("once")
    close_logging()
    assert logged.read_text().count("once") == 1
