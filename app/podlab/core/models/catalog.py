"""The model catalog: the bundled `resources/catalog.yaml` merged with the user's catalog files.

Two file formats are read:

- Podlab's own (`version: 1`): models with one variant per downloadable file. See the comment
  at the top of `resources/catalog.yaml`.
- Podman AI Lab's JSON catalog (`version: "1.0"`): each of its models becomes a model with a
  single variant. Its `recipes` and `categories` are accepted and not read (recipes run from
  the folders under recipes/).

Files are merged by id in order: bundled, the user's folder (sorted by name), then extra files;
a later entry replaces an earlier one. A broken file never hides the others: an entry with a
problem is skipped with a `ConfigError` naming the file and line, the good entries of the same
file still load, and a file that does not parse is skipped whole.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

from podlab.core.errors import ConfigError
from podlab.core.models.modelinfo import BACKENDS, CAPABILITIES, ModelInfo, ModelVariant
from podlab.core.paths import Locations
from podlab.core.resources import resource

PODLAB_VERSION = 1
AI_LAB_VERSION = "1.0"
CATALOG_SUFFIXES = (".yaml", ".yml", ".json")
MAX_FILE_BYTES = 16 * 1024 * 1024
_MAX_NODES = 500_000
_MAX_DEPTH = 64

# libyaml's composer when PyYAML was built with it (20x faster), else the pure-Python one.
_FAST_LOADER: Any = getattr(yaml, "CSafeLoader", None)
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
# Quantization names as they appear in GGUF file names (…-Q4_K_M.gguf, ….q8_0.gguf, …-IQ4_XS…).
_QUANT = re.compile(
    r"(?:^|[-_.])(I?Q[1-8](?:_[0-9A-Z]+)*|F16|F32|BF16|MXFP4(?:_MOE)?)(?=[-_.]|$)",
    re.IGNORECASE,
)
_SPDX_CASE = {"apache-2.0": "Apache-2.0", "mit": "MIT"}

MODEL_FIELDS = frozenset(
    {
        "id",
        "name",
        "description",
        "publisher",
        "license",
        "parameters",
        "context_length",
        "architecture",
        "backend",
        "capabilities",
        "properties",
        "variants",
        "source",
        # Shorthand for a model with a single variant.
        "url",
        "file_name",
        "quantization",
        "sha256",
        "size",
        "memory",
    }
)
AI_LAB_UNREAD = ("recipes", "categories")
"""Top-level lists of Podman AI Lab's catalog that Podlab accepts and does not read."""
VARIANT_FIELDS = frozenset(
    {"id", "url", "file_name", "quantization", "sha256", "size", "memory", "source"}
)
AI_LAB_MODEL_FIELDS = frozenset(
    {
        "id",
        "name",
        "description",
        "registry",
        "license",
        "url",
        "memory",
        "properties",
        "sha256",
        "backend",
    }
)


@dataclass
class Catalog:
    """Models by id, in the order they were first defined."""

    models: dict[str, ModelInfo] = field(default_factory=dict)

    def __iter__(self) -> Iterator[ModelInfo]:
        return iter(self.models.values())

    def __len__(self) -> int:
        return len(self.models)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self.models

    def model(self, model_id: str) -> ModelInfo | None:
        return self.models.get(model_id)

    def find_variant(self, ref: str) -> tuple[ModelInfo, ModelVariant] | None:
        """Resolve "model-id" (its default variant), "model-id:QUANT" or a variant id."""
        model = self.models.get(ref)
        if model is not None:
            default = model.default_variant
            return (model, default) if default is not None else None
        for model in self.models.values():
            for variant in model.variants:
                if variant.id == ref:
                    return model, variant
        model_id, sep, quant = ref.rpartition(":")
        if sep and model_id in self.models:
            model = self.models[model_id]
            found = model.variant(quant)
            if found is not None:
                return model, found
        return None

    def find_sha256(self, digest: str) -> tuple[ModelInfo, ModelVariant] | None:
        """The variant whose file has this sha256 (an imported file that is byte for byte a
        catalog download)."""
        wanted = digest.lower()
        for model in self.models.values():
            for variant in model.variants:
                if variant.sha256 and variant.sha256.lower() == wanted:
                    return model, variant
        return None

    def search(self, text: str) -> list[ModelInfo]:
        """Models whose id, name, publisher, license, capabilities, quantizations or
        description contain `text` (case-insensitive)."""
        needle = text.casefold()
        found = []
        for model in self.models.values():
            haystack = [
                model.id,
                model.name,
                model.publisher or "",
                model.license or "",
                model.description,
                *model.capabilities,
                *(v.quantization or "" for v in model.variants),
            ]
            if any(needle in item.casefold() for item in haystack):
                found.append(model)
        return found

    def suggest(self, ref: str, limit: int = 3) -> list[str]:
        """Model ids close to a mistyped one, for hints."""
        return difflib.get_close_matches(ref, list(self.models), n=limit, cutoff=0.5)


@dataclass
class CatalogLoad:
    """A catalog plus what was wrong with the files it came from."""

    catalog: Catalog
    errors: list[ConfigError] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    """Every file read, in merge order."""


# --- values with line numbers ---------------------------------------------------------------


@dataclass
class _V:
    """A parsed value with the line it starts on (None when unknown).

    Mappings hold dict[str, _V], sequences list[_V], scalars plain Python values.
    """

    value: Any
    line: int | None


class _TooBig(Exception):
    pass


class _NodeConverter:
    """Turn a composed YAML node tree into _V, with limits against alias bombs and cycles."""

    def __init__(self) -> None:
        self.constructor = yaml.SafeLoader("")
        self.count = 0

    def convert(self, node: yaml.Node, depth: int = 0) -> _V:
        self.count += 1
        if self.count > _MAX_NODES or depth > _MAX_DEPTH:
            raise _TooBig
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            self.constructor.flatten_mapping(node)
            mapping: dict[str, _V] = {}
            for key_node, value_node in node.value:
                key = self.constructor.construct_object(key_node, deep=True)
                mapping[str(key)] = self.convert(value_node, depth + 1)
            return _V(mapping, line)
        if isinstance(node, yaml.SequenceNode):
            return _V([self.convert(item, depth + 1) for item in node.value], line)
        return _V(self.constructor.construct_object(node, deep=True), line)


def _attach_lines(value: Any, node: yaml.Node | None, depth: int = 0) -> _V:
    """Values from the json module, lines from the YAML node tree of the same text."""
    if depth > _MAX_DEPTH:
        raise _TooBig
    line = node.start_mark.line + 1 if node is not None else None
    if isinstance(value, dict):
        children: dict[str, yaml.Node] = {}
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    children[key_node.value] = value_node
        return _V(
            {str(k): _attach_lines(v, children.get(str(k)), depth + 1) for k, v in value.items()},
            line,
        )
    if isinstance(value, list):
        items = node.value if isinstance(node, yaml.SequenceNode) else []
        return _V(
            [
                _attach_lines(v, items[i] if i < len(items) else None, depth + 1)
                for i, v in enumerate(value)
            ],
            line,
        )
    return _V(value, line)


def _compose(text: str) -> yaml.Node | None:
    """Compose with libyaml when present; on any complaint ask the pure-Python parser, which
    accepts what libyaml refuses (JSON surrogate escapes) and words its errors the same way
    everywhere."""
    if _FAST_LOADER is not None:
        try:
            node: yaml.Node | None = yaml.compose(text, Loader=_FAST_LOADER)
            return node
        except yaml.YAMLError:
            pass
    return yaml.compose(text, Loader=yaml.SafeLoader)


def _parse_file(text: str, path: str, is_json: bool, errors: list[ConfigError]) -> _V | None:
    """Parse one file; on a syntax error record it (with its line) and return None."""
    if is_json:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            errors.append(ConfigError(path, exc.lineno, f"not valid JSON: {exc.msg}"))
            return None
        except RecursionError:
            errors.append(ConfigError(path, None, "is nested too deeply"))
            return None
        # JSON is YAML too, so the same composer gives line numbers. Raw tabs can only be
        # whitespace in valid JSON, and PyYAML refuses them as indentation, so blank them.
        try:
            root = _compose(text.replace("\t", " "))
        except (yaml.YAMLError, RecursionError):
            root = None
        try:
            return _attach_lines(data, root)
        except _TooBig:
            errors.append(ConfigError(path, None, "is nested too deeply"))
            return None
    try:
        root = _compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = f"not valid YAML: {exc.problem or exc}"
        context = exc.context_mark
        if exc.context and context is not None and context.line + 1 != line:
            problem += f" ({exc.context} at line {context.line + 1})"
        errors.append(ConfigError(path, line, problem))
        return None
    except yaml.YAMLError as exc:
        errors.append(ConfigError(path, None, f"not valid YAML: {exc}"))
        return None
    except RecursionError:
        errors.append(ConfigError(path, None, "is nested too deeply"))
        return None
    if root is None:
        return _V({}, 1)
    try:
        return _NodeConverter().convert(root)
    except _TooBig:
        errors.append(
            ConfigError(path, None, "is too large or nested too deeply (aliases expand to it)")
        )
        return None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        errors.append(ConfigError(path, line, f"not valid YAML: {exc}"))
        return None


# --- field checks ---------------------------------------------------------------------------


class _Bad(Exception):
    """One entry is unusable; carries the line of the offending value."""

    def __init__(self, line: int | None, problem: str) -> None:
        super().__init__(problem)
        self.line = line
        self.problem = problem


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "a mapping", list: "a list", bool: "true/false", str: "text"}.get(
        type(value), type(value).__name__
    )


def _get(entry: _V, key: str) -> _V | None:
    child = entry.value.get(key)
    if child is None or child.value is None:
        return None
    assert isinstance(child, _V)
    return child


def _line(entry: _V, key: str) -> int | None:
    """The line of `key` in `entry`, or the entry's own line when the key is absent."""
    child = _get(entry, key)
    return child.line if child else entry.line


def _str(entry: _V, key: str, *, required: bool = False) -> str | None:
    child = _get(entry, key)
    if child is None:
        if required:
            raise _Bad(entry.line, f"missing required field '{key}'")
        return None
    if not isinstance(child.value, str):
        raise _Bad(child.line, f"'{key}' must be text, not {_type_name(child.value)}")
    if required and not child.value.strip():
        raise _Bad(child.line, f"'{key}' must not be empty")
    return child.value


def _int(entry: _V, key: str, *, positive: bool = True) -> int | None:
    child = _get(entry, key)
    if child is None:
        return None
    value = child.value
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(child.line, f"'{key}' must be a whole number, not {_type_name(value)}")
    if positive and value <= 0:
        raise _Bad(child.line, f"'{key}' must be positive")
    return value


def _str_list(entry: _V, key: str) -> tuple[str, ...]:
    child = _get(entry, key)
    if child is None:
        return ()
    if not isinstance(child.value, list):
        raise _Bad(child.line, f"'{key}' must be a list, not {_type_name(child.value)}")
    items = []
    for item in child.value:
        if not isinstance(item.value, str):
            raise _Bad(item.line, f"'{key}' items must be text, not {_type_name(item.value)}")
        items.append(item.value)
    return tuple(items)


def _properties(entry: _V) -> dict[str, str]:
    child = _get(entry, "properties")
    if child is None:
        return {}
    if not isinstance(child.value, dict):
        raise _Bad(child.line, f"'properties' must be a mapping, not {_type_name(child.value)}")
    props: dict[str, str] = {}
    for key, value in child.value.items():
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", key):
            raise _Bad(value.line, f"property name '{key}' must be letters, digits and '_'")
        if isinstance(value.value, bool):
            props[key] = "true" if value.value else "false"
        elif isinstance(value.value, str | int | float):
            props[key] = str(value.value)
        else:
            raise _Bad(value.line, f"property '{key}' must be text, not {_type_name(value.value)}")
    return props


def check_safe_name(value: str, what: str) -> str | None:
    """A problem with an id or file name that becomes a path component, or None if safe."""
    if not value or not value.strip():
        return f"{what} must not be empty"
    if "/" in value or "\\" in value:
        return f"{what} '{value}' must not contain '/' or '\\'"
    if ".." in value:
        return f"{what} '{value}' must not contain '..'"
    if value.startswith("."):
        return f"{what} '{value}' must not start with '.'"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return f"{what} must not contain control characters"
    if len(value) > 200:
        return f"{what} is longer than 200 characters"
    return None


def _safe(child_line: int | None, value: str, what: str) -> str:
    problem = check_safe_name(value, what)
    if problem:
        raise _Bad(child_line, problem)
    return value


def check_url(url: str) -> str | None:
    """A problem with a download URL, or None: https:// with a host, or hf://org/repo/file."""
    if any(ch.isspace() for ch in url):
        return f"url '{url}' must not contain spaces"
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"url '{url}' is not a valid URL"
    if parts.scheme == "https":
        if not parts.hostname:
            return f"url '{url}' has no host"
        return None
    if parts.scheme == "hf":
        segments = [parts.netloc, *parts.path.split("/")[1:]]
        if len(segments) < 3 or any(not s or s in (".", "..") for s in segments):
            return f"url '{url}' must look like hf://org/repo/file"
        return None
    scheme = f"'{parts.scheme}:'" if parts.scheme else "no scheme"
    return f"url '{url}' has {scheme}; only https:// and hf:// URLs are allowed"


def file_name_from_url(url: str) -> str:
    """The last path segment of a URL, percent-decoded ('' when there is none)."""
    return unquote(PurePosixPath(urlsplit(url).path).name)


def guess_quantization(file_name: str) -> str | None:
    """The quantization a GGUF file name states (Q4_K_M, Q8_0, F16, ...), upper-cased."""
    stem = file_name[: -len(".gguf")] if file_name.lower().endswith(".gguf") else file_name
    matches = _QUANT.findall(stem)
    return matches[-1].upper() if matches else None


def _url(entry: _V, key: str = "url") -> str:
    url = _str(entry, key, required=True)
    assert url is not None
    problem = check_url(url)
    if problem:
        raise _Bad(_line(entry, key), problem)
    return url


def _sha256(entry: _V) -> str | None:
    sha = _str(entry, "sha256")
    if sha is None or sha == "":
        return None
    if not _SHA256.match(sha):
        raise _Bad(_line(entry, "sha256"), "'sha256' must be 64 hexadecimal digits")
    return sha.lower()


def _unknown_fields(
    entry: _V, known: frozenset[str], what: str, path: str, errors: list[ConfigError]
) -> None:
    for key, child in entry.value.items():
        if key not in known:
            errors.append(ConfigError(path, child.line, f"{what}: unknown field '{key}' ignored"))


def _license(value: str | None) -> str | None:
    if value is None:
        return None
    return _SPDX_CASE.get(value.strip().lower(), value.strip())


# --- entries --------------------------------------------------------------------------------


def _required_id(entry: _V, what: str) -> str:
    """The entry's `id`: present, text, and safe as a file-system name."""
    value = _str(entry, "id", required=True)
    assert value is not None
    return _safe(_line(entry, "id"), value, what)


def _backend(entry: _V, default: str) -> str:
    backend = _str(entry, "backend") or default
    if backend not in BACKENDS:
        raise _Bad(
            _line(entry, "backend"), f"unknown backend '{backend}' (known: {', '.join(BACKENDS)})"
        )
    return backend


def _variant(entry: _V, model_id: str) -> ModelVariant:
    url = _url(entry)
    file_child = _get(entry, "file_name") or _get(entry, "url")
    file_name = _str(entry, "file_name") or file_name_from_url(url)
    _safe(file_child.line if file_child else entry.line, file_name, "file name")
    quant = _str(entry, "quantization") or guess_quantization(file_name)
    variant_id = _str(entry, "id") or (f"{model_id}:{quant}" if quant else model_id)
    _safe(_line(entry, "id"), variant_id, "variant id")
    return ModelVariant(
        id=variant_id,
        url=url,
        file_name=file_name,
        quantization=quant,
        sha256=_sha256(entry),
        size=_int(entry, "size"),
        memory=_int(entry, "memory"),
    )


def _podlab_model(entry: _V, path: str, errors: list[ConfigError]) -> ModelInfo:
    if not isinstance(entry.value, dict):
        raise _Bad(entry.line, f"a model must be a mapping, not {_type_name(entry.value)}")
    model_id = _required_id(entry, "model id")
    name = _str(entry, "name", required=True)
    assert name is not None
    backend = _backend(entry, default="llama-cpp")
    capabilities = _str_list(entry, "capabilities")
    for cap in capabilities:
        if cap not in CAPABILITIES:
            raise _Bad(
                _line(entry, "capabilities"),
                f"unknown capability '{cap}' (known: {', '.join(CAPABILITIES)})",
            )
    _unknown_fields(entry, MODEL_FIELDS, f"model '{model_id}'", path, errors)

    variants: list[ModelVariant] = []
    variants_child = _get(entry, "variants")
    if variants_child is not None:
        if not isinstance(variants_child.value, list):
            raise _Bad(variants_child.line, "'variants' must be a list")
        if "url" in entry.value:
            raise _Bad(entry.value["url"].line, "give either 'variants' or a 'url', not both")
        seen: set[str] = set()
        for item in variants_child.value:
            try:
                if not isinstance(item.value, dict):
                    raise _Bad(item.line, "a variant must be a mapping")
                _unknown_fields(item, VARIANT_FIELDS, f"variant of '{model_id}'", path, errors)
                variant = _variant(item, model_id)
                if variant.id in seen:
                    raise _Bad(item.line, f"duplicate variant id '{variant.id}'")
                seen.add(variant.id)
                variants.append(variant)
            except _Bad as bad:
                errors.append(
                    ConfigError(
                        path, bad.line, f"model '{model_id}': {bad.problem}; variant skipped"
                    )
                )
        if not variants:
            raise _Bad(variants_child.line, "has no usable variant")
    elif "url" in entry.value:
        variants.append(_variant(entry, model_id))
    else:
        raise _Bad(entry.line, "needs 'variants' (or a single 'url')")

    return ModelInfo(
        id=model_id,
        name=name,
        description=_str(entry, "description") or "",
        publisher=_str(entry, "publisher"),
        license=_license(_str(entry, "license")),
        parameters=_int(entry, "parameters"),
        context_length=_int(entry, "context_length"),
        architecture=_str(entry, "architecture"),
        backend=backend,
        capabilities=capabilities,
        properties=_properties(entry),
        variants=tuple(variants),
        source=path,
        provenance=_str(entry, "source") or "",
    )


def _ai_lab_model(entry: _V, path: str, errors: list[ConfigError]) -> ModelInfo:
    """A Podman AI Lab catalog model: one file at `url`, becoming a single variant."""
    if not isinstance(entry.value, dict):
        raise _Bad(entry.line, f"a model must be a mapping, not {_type_name(entry.value)}")
    model_id = _required_id(entry, "model id")
    name = _str(entry, "name", required=True)
    assert name is not None
    description = _str(entry, "description", required=True)
    backend = _backend(entry, default="none")
    if _get(entry, "url") is None:
        raise _Bad(entry.line, "has no 'url', so there is nothing to download")
    url = _url(entry)
    file_name = file_name_from_url(url)
    _safe(_line(entry, "url"), file_name, "file name (from url)")
    quant = guess_quantization(file_name)
    variant_id = f"{model_id}:{quant}" if quant else model_id
    _safe(entry.line, variant_id, "variant id")
    _unknown_fields(entry, AI_LAB_MODEL_FIELDS, f"model '{model_id}'", path, errors)
    # AI Lab serves every llama-cpp model through its chat playground.
    capabilities = ("chat", "completion") if backend == "llama-cpp" else ()
    registry = _str(entry, "registry")
    return ModelInfo(
        id=model_id,
        name=name,
        description=description or "",
        license=_license(_str(entry, "license")),
        backend=backend,
        capabilities=capabilities,
        properties=_properties(entry),
        variants=(
            ModelVariant(
                id=variant_id,
                url=url,
                file_name=file_name,
                quantization=quant,
                sha256=_sha256(entry),
                memory=_int(entry, "memory"),
            ),
        ),
        source=path,
        provenance=f"Podman AI Lab catalog ({registry})" if registry else "Podman AI Lab catalog",
    )


# --- files ----------------------------------------------------------------------------------


@dataclass
class _FileEntries:
    models: list[ModelInfo] = field(default_factory=list)


def _entries(
    root: _V, key: str, path: str, errors: list[ConfigError], build: Any, kind: str
) -> list[Any]:
    child = root.value.get(key)
    if child is None or child.value is None:
        return []
    if not isinstance(child.value, list):
        errors.append(
            ConfigError(path, child.line, f"'{key}' must be a list, not {_type_name(child.value)}")
        )
        return []
    built: list[Any] = []
    seen: set[str] = set()
    for item in child.value:
        try:
            obj = build(item, path, errors)
        except _Bad as bad:
            label = _label(item)
            errors.append(ConfigError(path, bad.line, f"{kind}{label}: {bad.problem}; skipped"))
            continue
        if obj.id in seen:
            errors.append(
                ConfigError(
                    path, item.line, f"duplicate {kind} id '{obj.id}' in this file; skipped"
                )
            )
            continue
        seen.add(obj.id)
        built.append(obj)
    return built


def _label(item: _V) -> str:
    if isinstance(item.value, dict):
        ident = item.value.get("id")
        if ident is not None and isinstance(ident.value, str):
            return f" '{ident.value}'"
    return ""


def parse_catalog_text(text: str, path: str, errors: list[ConfigError]) -> _FileEntries | None:
    """Entries of one catalog file's text; problems go to `errors`. None: file skipped."""
    is_json = path.lower().endswith(".json")
    root = _parse_file(text, path, is_json, errors)
    if root is None:
        return None
    if not isinstance(root.value, dict):
        errors.append(
            ConfigError(
                path, root.line, f"must be a mapping at the top, not {_type_name(root.value)}"
            )
        )
        return None
    if not root.value:
        return _FileEntries()
    version_child = root.value.get("version")
    version = version_child.value if version_child is not None else None
    if version is None:
        errors.append(
            ConfigError(
                path,
                root.line,
                f"missing 'version' (use {PODLAB_VERSION} for a Podlab catalog); file skipped",
            )
        )
        return None
    line = version_child.line if version_child is not None else root.line
    if (type(version) is int and version == PODLAB_VERSION) or version == str(PODLAB_VERSION):
        model_builder: Any = _podlab_model
    elif version == AI_LAB_VERSION or (type(version) is float and version == 1.0):
        # Podman AI Lab's JSON; `version: 1.0` unquoted in YAML reads as a float.
        model_builder = _ai_lab_model
    else:
        errors.append(
            ConfigError(
                path,
                line,
                f"unsupported catalog version {version!r} (this Podlab reads version "
                f'{PODLAB_VERSION} and Podman AI Lab\'s "{AI_LAB_VERSION}"); file skipped, '
                "the other catalogs are used",
            )
        )
        return None
    for key, child in root.value.items():
        if key not in ("version", "models", *AI_LAB_UNREAD):
            errors.append(ConfigError(path, child.line, f"unknown top-level field '{key}' ignored"))
    return _FileEntries(
        models=_entries(root, "models", path, errors, model_builder, "model"),
    )


def _read_file(path: Path, errors: list[ConfigError]) -> str | None:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            errors.append(
                ConfigError(str(path), None, f"is {size} bytes, over {MAX_FILE_BYTES}; skipped")
            )
            return None
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        errors.append(ConfigError(str(path), None, f"is not UTF-8 text ({exc.reason}); skipped"))
    except OSError as exc:
        errors.append(ConfigError(str(path), None, f"cannot be read: {exc.strerror or exc}"))
    return None


def user_catalog_files(directory: Path | None = None) -> list[Path]:
    """The user's catalog files (*.yaml, *.yml, *.json), sorted by name; hidden files skipped."""
    directory = directory or Locations.default().user_catalog_dir
    try:
        candidates = sorted(directory.iterdir())
    except OSError:
        return []
    return [
        p
        for p in candidates
        if p.suffix.lower() in CATALOG_SUFFIXES and not p.name.startswith(".") and p.is_file()
    ]


def load_catalog(
    extra_files: Sequence[Path] = (),
    include_user_dir: bool = True,
    *,
    include_bundled: bool = True,
) -> CatalogLoad:
    """The bundled catalog, then the user's folder, then `extra_files`, merged by id."""
    catalog = Catalog()
    result = CatalogLoad(catalog)
    sources: list[tuple[str, str | None]] = []
    if include_bundled:
        bundled = resource("catalog.yaml")
        try:
            sources.append((str(bundled), bundled.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            result.errors.append(ConfigError(str(bundled), None, f"cannot be read: {exc}"))
    files = list(user_catalog_files()) if include_user_dir else []
    files.extend(Path(p) for p in extra_files)
    for path in files:
        sources.append((str(path), _read_file(path, result.errors)))

    for path_name, text in sources:
        if text is None:
            continue
        result.files.append(path_name)
        entries = parse_catalog_text(text, path_name, result.errors)
        if entries is None:
            continue
        for model in entries.models:
            catalog.models[model.id] = model
    _check_variant_ids(catalog, result.errors)
    return result


def _check_variant_ids(catalog: Catalog, errors: list[ConfigError]) -> None:
    """Variant ids name downloaded files: two models must not share one."""
    owner: dict[str, ModelInfo] = {}
    for model in catalog.models.values():
        for variant in model.variants:
            first = owner.setdefault(variant.id, model)
            if first is not model:
                errors.append(
                    ConfigError(
                        model.source,
                        None,
                        f"variant id '{variant.id}' of model '{model.id}' is also used by model "
                        f"'{first.id}' ({first.source}); give one of them another id",
                    )
                )
