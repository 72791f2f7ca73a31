"""Prompt sets: the items an evaluation asks every cell, each with how its answer is scored.

A set is a YAML file (a mapping with `items`, and defaults for `scorer`, `params` and `system`)
or a JSONL file (one item per line). JSONL also accepts the shape other evaluation tools write:
`input`/`question` for the prompt (or a list of chat messages) and `output`/`answer`/`ideal`/
`target` for the reference. Every problem is refused as `file:line: problem`, so a user can fix
their own file without reading a traceback.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import as_file
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from podlab.core.errors import ConfigError
from podlab.core.evaluate.scorers import SCORERS, check_params
from podlab.core.recipes.yamlnodes import MAX_FILE_BYTES, Node, read_yaml
from podlab.core.resources import resource

BUILTIN_FOLDER = "promptsets"
_PROMPT_KEYS = ("prompt", "input", "question")
_REFERENCE_KEYS = ("reference", "output", "answer", "ideal", "target")
_ITEM_KEYS = {*_PROMPT_KEYS, *_REFERENCE_KEYS, "id", "system", "scorer", "params", "tags"}
_SET_KEYS = {"name", "description", "scorer", "params", "system", "items"}

Reference = str | list[str] | None


@dataclass(frozen=True)
class ScorerSpec:
    """Which scorer judges an answer and its parameters (tolerance, pattern, schema, ...)."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScorerSpec:
        return cls(str(data["name"]), dict(data.get("params") or {}))


@dataclass(frozen=True)
class PromptItem:
    """One prompt of a set. `reference` is a text (numbers are kept as written) or a list of
    accepted texts."""

    id: str
    prompt: str
    scorer: ScorerSpec
    system: str | None = None
    reference: Reference = None
    tags: tuple[str, ...] = ()
    line: int | None = None

    def messages(self) -> list[dict[str, str]]:
        """The chat messages sent for this item (system first when there is one)."""
        messages = [] if not self.system else [{"role": "system", "content": self.system}]
        messages.append({"role": "user", "content": self.prompt})
        return messages

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "prompt": self.prompt,
            "system": self.system,
            "reference": self.reference,
            "scorer": self.scorer.to_dict(),
            "tags": list(self.tags),
            "line": self.line,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptItem:
        return cls(
            id=str(data["id"]),
            prompt=str(data["prompt"]),
            system=data.get("system"),
            reference=data.get("reference"),
            scorer=ScorerSpec.from_dict(data["scorer"]),
            tags=tuple(data.get("tags") or ()),
            line=data.get("line"),
        )


@dataclass(frozen=True)
class PromptSet:
    """A named, ordered set of items; `sha256` is of the file's bytes (stored with each run)."""

    name: str
    items: tuple[PromptItem, ...]
    sha256: str
    source: str
    description: str = ""

    def item(self, item_id: str) -> PromptItem:
        for item in self.items:
            if item.id == item_id:
                return item
        raise KeyError(item_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "sha256": self.sha256,
            "items": [item.to_dict() for item in self.items],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptSet:
        return cls(
            name=str(data["name"]),
            description=str(data.get("description") or ""),
            source=str(data.get("source") or ""),
            sha256=str(data.get("sha256") or ""),
            items=tuple(PromptItem.from_dict(item) for item in data.get("items") or ()),
        )


def builtin_set_names() -> list[str]:
    """The sets shipped with Podlab (resources/promptsets/*.yaml), by name."""
    folder = resource(BUILTIN_FOLDER)
    names = (entry.name for entry in folder.iterdir())
    return sorted(name.removesuffix(".yaml") for name in names if name.endswith(".yaml"))


def builtin_set_file(name: str) -> Traversable:
    return resource(BUILTIN_FOLDER).joinpath(f"{name}.yaml")


def resolve_prompt_set(name_or_path: str | Path) -> PromptSet:
    """A built-in set by name, else a file; a name that is neither says which sets exist."""
    text = str(name_or_path)
    if text in builtin_set_names():
        entry = builtin_set_file(text)
        with as_file(entry) as path:
            return load_prompt_set(path, shown=f"built-in set '{text}'")
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise ConfigError(
            text,
            None,
            "is neither a prompt set file nor a built-in set",
            "built-in sets: " + ", ".join(builtin_set_names()),
        )
    return load_prompt_set(path)


def load_prompt_set(path: Path, *, shown: str | None = None) -> PromptSet:
    """Read a YAML (.yaml/.yml) or JSONL (.jsonl/.json lines) prompt set, checking every item."""
    where = shown or str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES * 16:
        raise ConfigError(str(path), None, "is larger than 16 MiB")
    digest = hashlib.sha256(data).hexdigest()
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        items = _jsonl_items(str(path), data)
        name, description = path.stem, ""
    else:
        if len(data) > MAX_FILE_BYTES:
            raise ConfigError(str(path), None, "is larger than 1 MiB; use JSONL for big sets")
        root = read_yaml(path)
        name, description, items = _yaml_set(str(path), root, path.stem)
    if not items:
        raise ConfigError(str(path), None, "has no items")
    _check_unique(str(path), items)
    return PromptSet(
        name=name, items=tuple(items), sha256=digest, source=where, description=description
    )


# ---------------------------------------------------------------------------------------------
# YAML


def _yaml_set(path: str, root: Node, default_name: str) -> tuple[str, str, list[PromptItem]]:
    if not isinstance(root.value, dict):
        raise ConfigError(path, root.line, "a prompt set is a mapping with an 'items' list")
    for key, node in root.value.items():
        if key not in _SET_KEYS:
            raise ConfigError(
                path, node.line, f"unknown key '{key}' (known: {', '.join(sorted(_SET_KEYS))})"
            )
    items_node = root.get("items")
    if items_node is None or not isinstance(items_node.value, list):
        line = root.line if items_node is None else items_node.line
        raise ConfigError(path, line, "'items' must be a list of prompts")
    defaults = {key: _plain(root.get(key)) for key in ("scorer", "params", "system")}
    items = [
        _item(path, node.line, _plain_mapping(path, node), index, defaults)
        for index, node in enumerate(items_node.value, start=1)
    ]
    name = _text(path, root.line, "name", _plain(root.get("name"))) or default_name
    description = _text(path, root.line, "description", _plain(root.get("description"))) or ""
    return name, description, items


def _plain(node: Node | None) -> Any:
    """A Node tree back to plain values (lines are only needed at the item level)."""
    if node is None:
        return None
    if isinstance(node.value, dict):
        return {key: _plain(child) for key, child in node.value.items()}
    if isinstance(node.value, list):
        return [_plain(child) for child in node.value]
    return node.value


def _plain_mapping(path: str, node: Node) -> dict[str, Any]:
    if not isinstance(node.value, dict):
        raise ConfigError(path, node.line, "each item must be a mapping with a 'prompt'")
    return {key: _plain(child) for key, child in node.value.items()}


# ---------------------------------------------------------------------------------------------
# JSONL


def _jsonl_items(path: str, data: bytes) -> list[PromptItem]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(path, None, "is not UTF-8 text") from None
    items: list[PromptItem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(path, number, f"is not valid JSON: {exc.msg}") from None
        if not isinstance(value, dict):
            raise ConfigError(path, number, "each line must be a JSON object")
        items.append(_item(path, number, value, len(items) + 1, {}, lenient=True))
    return items


# ---------------------------------------------------------------------------------------------
# Items


def _item(
    path: str,
    line: int,
    data: Mapping[str, Any],
    index: int,
    defaults: Mapping[str, Any],
    *,
    lenient: bool = False,
) -> PromptItem:
    """One item; `lenient` (JSONL) ignores unknown keys, as other tools' files carry extras."""
    if not lenient:
        for key in data:
            if key not in _ITEM_KEYS:
                raise ConfigError(
                    path, line, f"unknown key '{key}' (known: {', '.join(sorted(_ITEM_KEYS))})"
                )
    prompt_value = _first(data, _PROMPT_KEYS)
    system = _text(path, line, "system", data.get("system", defaults.get("system")))
    if isinstance(prompt_value, list):
        prompt, from_messages = _from_messages(path, line, prompt_value)
        system = from_messages or system
    else:
        prompt = _text(path, line, "prompt", prompt_value) or ""
    if not prompt.strip():
        raise ConfigError(path, line, "the item has no prompt ('prompt', 'input' or 'question')")
    reference = _reference(path, line, _first(data, _REFERENCE_KEYS))
    scorer = _scorer(path, line, data, defaults, reference)
    item_id = data.get("id", str(index))
    if not isinstance(item_id, str | int) or isinstance(item_id, bool) or not str(item_id):
        raise ConfigError(path, line, "'id' must be text or a number")
    tags = data.get("tags") or []
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise ConfigError(path, line, "'tags' must be a list of words")
    return PromptItem(
        id=str(item_id),
        prompt=prompt,
        system=system or None,
        reference=reference,
        scorer=scorer,
        tags=tuple(tags),
        line=line,
    )


def _first(data: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for key in keys:
        if key in data:
            return data[key]
    return None


def _text(path: str, line: int, key: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(path, line, f"'{key}' must be text")
    return str(value)


def _from_messages(path: str, line: int, messages: list[Any]) -> tuple[str, str | None]:
    """The prompt (last user message) and system text of an `input` given as chat messages."""
    system: str | None = None
    prompt = ""
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise ConfigError(path, line, "'input' messages need a 'role' and a text 'content'")
        if message.get("role") == "system":
            system = message["content"]
        elif message.get("role") == "user":
            prompt = message["content"]
    return prompt, system


def _reference(path: str, line: int, value: Any) -> Reference:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(path, line, "the reference must be text, a number or a list of texts")
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, list) and value and all(isinstance(v, str | int | float) for v in value):
        return [str(v) for v in value]
    raise ConfigError(path, line, "the reference must be text, a number or a list of texts")


def _scorer(
    path: str,
    line: int,
    data: Mapping[str, Any],
    defaults: Mapping[str, Any],
    reference: Reference,
) -> ScorerSpec:
    """`scorer: NAME` with `params: {...}`, or `scorer: {name: NAME, ...params}`."""
    raw = data.get("scorer", defaults.get("scorer"))
    params: dict[str, Any] = {}
    default_params = defaults.get("params")
    if isinstance(default_params, dict) and "scorer" not in data:
        params.update(default_params)
    if isinstance(raw, dict):
        name = raw.get("name")
        params.update({k: v for k, v in raw.items() if k != "name"})
    else:
        name = raw
    item_params = data.get("params")
    if item_params is not None:
        if not isinstance(item_params, dict):
            raise ConfigError(path, line, "'params' must be a mapping")
        params.update(item_params)
    if name is None:
        if reference is None:
            raise ConfigError(path, line, "the item has neither a reference nor a scorer")
        name = "contains"
    if name not in SCORERS:
        raise ConfigError(path, line, f"unknown scorer '{name}' (known: {', '.join(SCORERS)})")
    problem = check_params(str(name), params, reference)
    if problem:
        raise ConfigError(path, line, problem)
    return ScorerSpec(str(name), params)


def _check_unique(path: str, items: Sequence[PromptItem]) -> None:
    seen: dict[str, int | None] = {}
    for item in items:
        if item.id in seen:
            raise ConfigError(
                path, item.line, f"duplicate item id '{item.id}' (first at line {seen[item.id]})"
            )
        seen[item.id] = item.line
