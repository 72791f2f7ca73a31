"""YAML read into plain values that remember their line, so every problem can say `file:line`.

Recipe files come from other people's repositories: anchors and aliases are refused (they allow
exponential "billion laughs" expansion and no recipe needs them), as are duplicate keys, which
YAML would silently resolve to the last one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from podlab.core.errors import ConfigError

MAX_FILE_BYTES = 1024 * 1024
_MAX_NODES = 20_000

# libyaml's composer when PyYAML was built with it, else the pure-Python one.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Node:
    """A YAML value (str, int, bool, float, None, list[Node] or dict[str, Node]) and its line."""

    value: Any
    line: int

    def get(self, key: str) -> Node | None:
        """The child under `key` of a mapping node (None for a missing key or a non-mapping)."""
        if isinstance(self.value, dict):
            child: Node | None = self.value.get(key)
            return child
        return None


def read_yaml(path: Path) -> Node:
    """Parse one YAML document; any problem is a ConfigError naming the file and line."""
    shown = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(shown, None, f"is {size} bytes; a recipe file is at most 1 MiB")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(shown, None, "does not exist") from None
    except UnicodeDecodeError:
        raise ConfigError(shown, None, "is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(shown, None, f"cannot be read: {exc.strerror or exc}") from None
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise ConfigError(shown, line, f"is not valid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(shown, None, f"is not valid YAML: {exc}") from None
    if root is None:
        raise ConfigError(shown, 1, "is empty")
    return _convert(root, shown, set())


def _convert(node: yaml.Node, path: str, seen: set[int]) -> Node:
    line = node.start_mark.line + 1
    if id(node) in seen:
        raise ConfigError(path, line, "anchors and aliases are not supported in recipe files")
    seen.add(id(node))
    if len(seen) > _MAX_NODES:
        raise ConfigError(path, line, f"has more than {_MAX_NODES} values")
    if isinstance(node, yaml.MappingNode):
        mapping: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            if not isinstance(key, str):
                raise ConfigError(path, key_node.start_mark.line + 1, "keys must be text")
            if key in mapping:
                raise ConfigError(path, key_node.start_mark.line + 1, f"duplicate key '{key}'")
            mapping[key] = _convert(value_node, path, seen)
        return Node(mapping, line)
    if isinstance(node, yaml.SequenceNode):
        return Node([_convert(item, path, seen) for item in node.value], line)
    return Node(_scalar(node), line)


def _scalar(node: yaml.Node) -> Any:
    """A scalar resolved with YAML 1.1 safe types (the types PyYAML's safe_load gives)."""
    if not isinstance(node, yaml.ScalarNode):
        return node
    constructor = yaml.SafeLoader.yaml_constructors.get(node.tag)
    if constructor is None:
        return node.value
    return constructor(yaml.SafeLoader(""), node)
