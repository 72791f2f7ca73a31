"""User settings: a YAML file with defaults and validation.

A broken file never stops Podlab: each problem is reported with the file name and line, the
defaults stand in for the broken values, and the file is left untouched until the user saves
deliberately.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podlab.core.errors import ConfigError
from podlab.core.paths import Locations, atomic_write_text

ENGINES = ("auto", "podman", "local")
THEMES = ("system", "light", "dark")
SERVICES_ON_CLOSE = ("ask", "keep", "stop")


def _setting(default: Any, help_text: str) -> Any:
    """A settings field whose help text the Settings page shows."""
    return field(default=default, metadata={"help": help_text})


@dataclass
class Settings:
    """Every user-settable value with its default and a help text."""

    theme: str = _setting("system", "Colour scheme: follow the system, or force light or dark.")
    engine: str = _setting(
        "auto", "Where services run: Podman when found (auto), always Podman, or the local engine."
    )
    podman_url: str = _setting(
        "",
        "Podman API URL (unix:///run/podman/podman.sock, ssh://user@host/run/podman/podman.sock "
        "or tcp://host:port); empty means discover it.",
    )
    models_dir: str = _setting("", "Where downloaded models are stored; empty: the data folder.")
    bind_address: str = _setting(
        "127.0.0.1", "Interface service ports are published on; other than loopback exposes them."
    )
    require_api_key: bool = _setting(
        True,
        "Services require a key Podlab makes (Playground, Compare and the client code use it). "
        "Off: any program or web page on this computer can use a service.",
    )
    use_host_ca_certificates: bool = _setting(
        False, "Mount the host's CA bundle into image builds (for TLS-intercepting proxies)."
    )
    max_parallel_downloads: int = _setting(2, "How many downloads run at once; the rest wait.")
    download_stall_seconds: float = _setting(
        30.0, "With no byte received for this long, a download reconnects and resumes."
    )
    default_context_size: int = _setting(
        4096, "Context length for new services and for the hardware fit estimate."
    )
    services_on_close: str = _setting(
        "ask",
        "When the window closes with services running: ask, keep them running, or stop them.",
    )
    server_images: dict[str, str] = field(
        default_factory=dict,
        metadata={
            "help": "Model-server image per variant (cpu, cuda, rocm, intel, vllm), "
            "overriding the defaults."
        },
    )

    @classmethod
    def help_text(cls, name: str) -> str:
        return str(next(f for f in dataclasses.fields(cls) if f.name == name).metadata["help"])

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _expected_type(name: str) -> type:
    return {
        "max_parallel_downloads": int,
        "default_context_size": int,
        "download_stall_seconds": float,
        "use_host_ca_certificates": bool,
        "require_api_key": bool,
        "server_images": dict,
    }.get(name, str)


def _check_value(name: str, value: Any) -> str | None:
    """Return a problem description, or None when the value is acceptable."""
    expected = _expected_type(name)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if expected is int and isinstance(value, bool):
        return f"'{name}' must be a whole number, not {value!r}"
    if not isinstance(value, expected):
        return f"'{name}' must be {expected.__name__}, not {type(value).__name__} {value!r}"
    return _check_range(name, value)


def _check_range(name: str, value: Any) -> str | None:
    if name == "engine" and value not in ENGINES:
        return f"'engine' must be one of {', '.join(ENGINES)}, not {value!r}"
    if name == "theme" and value not in THEMES:
        return f"'theme' must be one of {', '.join(THEMES)}, not {value!r}"
    if name == "services_on_close" and value not in SERVICES_ON_CLOSE:
        choices = ", ".join(SERVICES_ON_CLOSE)
        return f"'services_on_close' must be one of {choices}, not {value!r}"
    if name in ("max_parallel_downloads", "default_context_size") and value < 1:
        return f"'{name}' must be at least 1"
    if name == "download_stall_seconds" and value <= 0:
        return "'download_stall_seconds' must be positive"
    if name == "server_images" and not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return "'server_images' must map variant names to image references"
    return None


@dataclass
class LoadedSettings:
    """Settings plus what was wrong with the file they came from."""

    settings: Settings
    path: Path
    errors: list[ConfigError]

    @property
    def file_is_broken(self) -> bool:
        return bool(self.errors)


def load_settings(path: Path | None = None) -> LoadedSettings:
    """Read settings, falling back to defaults value by value (or wholly on a syntax error)."""
    path = path or Locations.default().settings_file
    settings = Settings()
    errors: list[ConfigError] = []
    if not path.exists():
        return LoadedSettings(settings, path, errors)
    # Imported here: on a first start there is no file, and the window appears 14 ms sooner.
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        errors.append(ConfigError(str(path), line, f"not valid YAML: {exc.problem}"))
        return LoadedSettings(settings, path, errors)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        errors.append(ConfigError(str(path), None, f"cannot be read: {exc}"))
        return LoadedSettings(settings, path, errors)
    if root is None:
        return LoadedSettings(settings, path, errors)
    if not isinstance(root, yaml.MappingNode):
        errors.append(
            ConfigError(str(path), root.start_mark.line + 1, "must be a mapping of key: value")
        )
        return LoadedSettings(settings, path, errors)
    known = set(Settings.field_names())
    constructor = yaml.SafeLoader("")
    for key_node, value_node in root.value:
        line = key_node.start_mark.line + 1
        key = key_node.value
        if key not in known:
            errors.append(ConfigError(str(path), line, f"unknown setting '{key}'"))
            continue
        try:
            value = constructor.construct_object(value_node, deep=True)
        except yaml.YAMLError as exc:
            errors.append(ConfigError(str(path), line, f"'{key}': {exc}"))
            continue
        problem = _check_value(key, value)
        if problem:
            errors.append(ConfigError(str(path), value_node.start_mark.line + 1, problem))
            continue
        if _expected_type(key) is float:
            value = float(value)
        setattr(settings, key, value)
    return LoadedSettings(settings, path, errors)


def save_settings(loaded: LoadedSettings, *, overwrite_broken: bool = False) -> None:
    """Write settings atomically; a file that failed to load is kept unless the user insists."""
    if loaded.file_is_broken and not overwrite_broken:
        raise ConfigError(
            str(loaded.path),
            loaded.errors[0].line,
            "has errors and was not overwritten",
            hint="fix the file by hand, or save again and choose to replace it",
        )
    import yaml

    text = yaml.safe_dump(loaded.settings.to_dict(), sort_keys=False, allow_unicode=True)
    atomic_write_text(loaded.path, text, private=True)
    loaded.errors.clear()
