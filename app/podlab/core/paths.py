"""Where Podlab keeps its files, following platformdirs (and so the XDG_* variables on Linux)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP_NAME = "podlab"


@dataclass(frozen=True)
class Locations:
    """The folders Podlab reads and writes; each is created on first use, not at import."""

    config_dir: Path
    data_dir: Path
    cache_dir: Path
    state_dir: Path

    @property
    def settings_file(self) -> Path:
        return self.config_dir / "settings.yaml"

    @property
    def user_catalog_dir(self) -> Path:
        """Extra catalog files (YAML or Podman AI Lab JSON) merged over the bundled one."""
        return self.config_dir / "catalogs"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def database_file(self) -> Path:
        """Conversations, comparisons and votes (SQLite)."""
        return self.data_dir / "podlab.sqlite3"

    @property
    def log_dir(self) -> Path:
        """Logs of the processes Podlab starts (Podman service, local servers)."""
        return self.state_dir / "logs"

    @property
    def log_file(self) -> Path:
        """Podlab's own log: what went wrong, with tracebacks, for a bug report."""
        return self.state_dir / "podlab.log"

    @classmethod
    def default(cls) -> Locations:
        """Read fresh each call so that tests and users can change XDG_* at run time."""
        return cls(
            config_dir=Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)),
            data_dir=Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)),
            cache_dir=Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)),
            state_dir=Path(platformdirs.user_state_dir(APP_NAME, appauthor=False)),
        )


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that a crash leaves either the old or the new content, never half."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
