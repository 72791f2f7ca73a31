"""Where Podlab keeps its files, following platformdirs (and so the XDG_* variables on Linux).

Podlab's folders hold private things: conversations and votes, settings, service records (which
will hold API keys) and logs. So its folders are created readable by the user alone (0700) and
its files so too (0600), whatever the umask, with the helpers below; `tighten_private_files`
fixes what an earlier version left open, at every start. Downloaded models are the exception:
containers that run as other users read them, so the models folder keeps its own modes.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import platformdirs

APP_NAME = "podlab"
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


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
    def eval_database_file(self) -> Path:
        """Evaluation runs, their cells and every answer with its score (SQLite)."""
        return self.state_dir / "eval.sqlite3"

    @property
    def session_file(self) -> Path:
        """Where each page was left (conversation, endpoints, Compare's panes)."""
        return self.state_dir / "session.json"

    @property
    def log_dir(self) -> Path:
        """Logs of the processes Podlab starts (Podman service, local servers)."""
        return self.state_dir / "logs"

    @property
    def roots(self) -> tuple[Path, ...]:
        return (self.config_dir, self.data_dir, self.state_dir, self.cache_dir)

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


def private_dir(path: Path) -> Path:
    """Create the folder `path` readable by the user alone, with any missing parents; an
    existing one is tightened (existing parents are left as they are)."""
    missing: list[Path] = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile, by another thread
            folder.mkdir(PRIVATE_DIR_MODE)
    _make_private(path)
    return path


def private_file(path: Path) -> Path:
    """Create the file `path` (empty) readable by the user alone, in a private folder; an
    existing one is tightened and kept. For files that others open by name (SQLite)."""
    private_dir(path.parent)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE))
    _make_private(path)
    return path


def open_private_log(path: Path) -> BinaryIO:
    """Open a log file for appending, created readable by the user alone, in a private folder."""
    private_file(path)
    return path.open("ab")


def tighten_private_files(locations: Locations) -> None:
    """Make Podlab's folders and files readable by the user alone where they are not (made by
    an earlier version, or copied in); the models folder and symbolic links are left alone.

    The cache folder is only closed itself (0700), not walked: it holds build caches of tens of
    thousands of files, and walking them made every start 0.7 s slower; a closed folder already
    keeps other users out of everything below it.
    """
    if locations.cache_dir.is_dir():
        _make_private(locations.cache_dir)
    for root in (locations.config_dir, locations.data_dir, locations.state_dir):
        for folder, subfolders, files in os.walk(root):
            current = Path(folder)
            _make_private(current)
            subfolders[:] = [name for name in subfolders if current / name != locations.models_dir]
            for name in files:
                _make_private(current / name)


def _make_private(path: Path) -> None:
    """Take the group's and others' permissions away from a file or folder (links untouched)."""
    try:
        mode = path.lstat().st_mode
        if (stat.S_ISREG(mode) or stat.S_ISDIR(mode)) and mode & 0o077:
            path.chmod(stat.S_IMODE(mode) & 0o700)
    except OSError:  # gone meanwhile, or someone else's: nothing Podlab may change
        pass


def atomic_write_text(path: Path, text: str, *, private: bool = False) -> None:
    """Write a file so that a crash leaves either the old or the new content, never half.

    The file is readable by the user alone (as mkstemp makes it); `private` makes a missing
    folder so too (`private_dir`).
    """
    atomic_write_bytes(path, text.encode("utf-8"), private=private)


def atomic_write_bytes(path: Path, data: bytes, *, private: bool = False) -> None:
    if private:
        private_dir(path.parent)
    else:
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
