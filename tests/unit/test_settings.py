"""Settings: defaults, XDG locations, validation with file and line, broken files kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from podlab.core.errors import ConfigError
from podlab.core.paths import Locations
from podlab.core.settings import Settings, load_settings, save_settings

pytestmark = pytest.mark.unit


def test_locations_follow_xdg_variables(isolated_user_dirs: dict[str, Path]) -> None:
    locations = Locations.default()
    assert locations.config_dir == isolated_user_dirs["config"] / "podlab"
    assert locations.data_dir == isolated_user_dirs["data"] / "podlab"
    assert locations.cache_dir == isolated_user_dirs["cache"] / "podlab"
    assert locations.models_dir == isolated_user_dirs["data"] / "podlab" / "models"
    assert locations.database_file.parent == locations.data_dir


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    loaded = load_settings(tmp_path / "settings.yaml")
    assert loaded.settings == Settings()
    assert loaded.errors == []


def test_valid_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("theme: dark\nmax_parallel_downloads: 4\ndownload_stall_seconds: 5\n")
    loaded = load_settings(path)
    assert loaded.errors == []
    assert loaded.settings.theme == "dark"
    assert loaded.settings.max_parallel_downloads == 4
    assert loaded.settings.download_stall_seconds == 5.0


def test_syntax_error_names_file_and_line_and_uses_defaults(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    text = "theme: dark\nengine: podman\nbind_address: [127.0.0.1\nmodels_dir: /x\n"
    path.write_text(text)
    loaded = load_settings(path)
    assert loaded.settings == Settings()
    [error] = loaded.errors
    assert error.path == str(path)
    assert error.line in (3, 4)
    assert str(error).startswith(f"{path}:{error.line}: not valid YAML")


def test_bad_values_are_reported_by_line_and_good_values_kept(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("theme: dark\nengine: docker\nmax_parallel_downloads: many\nfoo: 1\n")
    loaded = load_settings(path)
    assert loaded.settings.theme == "dark"
    assert loaded.settings.engine == "auto"
    assert loaded.settings.max_parallel_downloads == 2
    assert [(e.line, e.problem.split(" ")[0]) for e in loaded.errors] == [
        (2, "'engine'"),
        (3, "'max_parallel_downloads'"),
        (4, "unknown"),
    ]


def test_a_broken_file_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    original = "theme: [dark\n"
    path.write_text(original)
    loaded = load_settings(path)
    loaded.settings.theme = "light"
    with pytest.raises(ConfigError, match="was not overwritten"):
        save_settings(loaded)
    assert path.read_text() == original
    save_settings(loaded, overwrite_broken=True)
    assert load_settings(path).settings.theme == "light"


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "settings.yaml"
    loaded = load_settings(path)
    loaded.settings.server_images = {"cuda": "quay.io/example/server@sha256:" + "a" * 64}
    loaded.settings.use_host_ca_certificates = True
    save_settings(loaded)
    again = load_settings(path)
    assert again.errors == []
    assert again.settings == loaded.settings
