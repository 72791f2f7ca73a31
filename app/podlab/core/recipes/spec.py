"""`ai-lab.yaml` (version v1.0), read exactly as ai-lab-recipes writes it, into typed specs.

One `RecipeContainer` per `application.containers[]` entry carries everything a runner or an
exporter needs to build and wire that container (resolved context folder and Containerfile,
ports, role), so both read the same spec instead of re-reading YAML.

Podlab adds one key of its own, `embedding-service: true`, for a second model server that
answers `/v1/embeddings` (RAG); ai-lab-recipes files never use it and parse unchanged.

Every problem found is reported as `file:line: problem`, all of them at once, so a recipe author
fixes a file in one pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

from podlab.core.errors import ConfigError, PodlabError
from podlab.core.recipes.yamlnodes import Node, read_yaml

SPEC_FILE_NAME = "ai-lab.yaml"
SUPPORTED_VERSION = "v1.0"
APPLICATION_TYPES = ("language", "audio", "vision", "multimodal")
ARCHITECTURES = ("amd64", "arm64", "ppc64le", "s390x")

ROOT_KEYS = frozenset({"version", "application"})
APPLICATION_KEYS = frozenset({"type", "name", "description", "containers"})
CONTAINER_KEYS = frozenset(
    {
        "name",
        "contextdir",
        "containerfile",
        "arch",
        "ports",
        "image",
        "model-service",
        "backend",
        "vectordb",
        "gpu-env",
        "embedding-service",
    }
)
_CONTAINER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")


class ContainerRole(StrEnum):
    """What a container of a recipe is for; the runner wires each role differently."""

    MODEL_SERVICE = "model-service"
    EMBEDDING_SERVICE = "embedding-service"
    VECTORDB = "vectordb"
    APP = "app"


# The ai-lab.yaml flag that marks each role (an app has none).
_ROLE_FLAGS = {
    "model-service": ContainerRole.MODEL_SERVICE,
    "embedding-service": ContainerRole.EMBEDDING_SERVICE,
    "vectordb": ContainerRole.VECTORDB,
}


@dataclass(frozen=True)
class RecipeContainer:
    """One container of a recipe, with its build inputs resolved to absolute paths."""

    name: str
    role: ContainerRole
    context_dir: Path
    containerfile: Path
    """The Containerfile, inside `context_dir`."""
    ports: tuple[int, ...]
    """Ports the container listens on inside the pod; the runner maps each to a host port."""
    arch: tuple[str, ...] = ()
    image: str | None = None
    """The tag ai-lab-recipes publishes; Podlab builds the image itself and uses it as a name."""
    backends: tuple[str, ...] = ()
    gpu_env: tuple[str, ...] = ()
    line: int = 0
    """Line of the entry in ai-lab.yaml, for messages about this container."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role.value,
            "contextdir": str(self.context_dir),
            "containerfile": str(self.containerfile),
            "ports": list(self.ports),
            "arch": list(self.arch),
            "image": self.image,
            "backend": list(self.backends),
            "gpu-env": list(self.gpu_env),
        }


@dataclass(frozen=True)
class RecipeSpec:
    """A parsed, validated ai-lab.yaml."""

    path: Path
    version: str
    type: str
    name: str
    description: str
    containers: tuple[RecipeContainer, ...]

    @property
    def folder(self) -> Path:
        return self.path.parent

    def with_role(self, role: ContainerRole) -> tuple[RecipeContainer, ...]:
        return tuple(c for c in self.containers if c.role is role)

    @property
    def model_service(self) -> RecipeContainer | None:
        found = self.with_role(ContainerRole.MODEL_SERVICE)
        return found[0] if found else None

    @property
    def backends(self) -> tuple[str, ...]:
        """The backends the model service accepts (empty when the recipe has none)."""
        service = self.model_service
        return service.backends if service else ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "version": self.version,
            "type": self.type,
            "name": self.name,
            "description": self.description,
            "containers": [c.to_dict() for c in self.containers],
        }


class RecipeSpecError(PodlabError):
    """An ai-lab.yaml with problems; `problems` holds each as a ConfigError (file and line)."""

    def __init__(self, problems: list[ConfigError]) -> None:
        super().__init__(
            "\n".join(p.message for p in problems),
            "the ai-lab.yaml format: version v1.0, application.containers[] with name, contextdir, "
            "containerfile, ports, ...",
        )
        self.problems = tuple(problems)


class _Checker:
    """Collects problems while reading one file, each with the file and line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[ConfigError] = []

    def problem(self, line: int | None, text: str) -> None:
        self.problems.append(ConfigError(str(self.path), line, text))

    def keys(self, node: Node, known: frozenset[str], where: str) -> None:
        for key, child in node.value.items():
            if key not in known:
                self.problem(child.line, f"unknown key '{key}' in {where}")

    def text(self, node: Node, key: str, where: str, required: bool = True) -> str | None:
        child = node.get(key)
        if child is None:
            if required:
                self.problem(node.line, f"{where} has no '{key}'")
            return None
        if not isinstance(child.value, str) or not child.value.strip():
            self.problem(child.line, f"'{key}' must be non-empty text")
            return None
        return child.value.strip()

    def flag(self, node: Node, key: str) -> bool:
        child = node.get(key)
        if child is None:
            return False
        if not isinstance(child.value, bool):
            self.problem(child.line, f"'{key}' must be true or false")
            return False
        return child.value

    def text_list(self, node: Node, key: str) -> tuple[str, ...]:
        child = node.get(key)
        if child is None:
            return ()
        if not isinstance(child.value, list):
            self.problem(child.line, f"'{key}' must be a list")
            return ()
        items: list[str] = []
        for item in child.value:
            if not isinstance(item.value, str) or not item.value.strip():
                self.problem(item.line, f"each entry of '{key}' must be non-empty text")
            else:
                items.append(item.value.strip())
        return tuple(items)

    def ports(self, node: Node) -> tuple[tuple[int, int], ...]:
        """(port, line) pairs of the container's `ports`."""
        child = node.get("ports")
        if child is None:
            return ()
        if not isinstance(child.value, list):
            self.problem(child.line, "'ports' must be a list of port numbers")
            return ()
        ports: list[tuple[int, int]] = []
        for item in child.value:
            value = item.value
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
                self.problem(item.line, f"port {value!r} must be a number from 1 to 65535")
            else:
                ports.append((value, item.line))
        return tuple(ports)


def load_recipe_spec(path: Path, check_context: bool = True) -> RecipeSpec:
    """Read and validate an ai-lab.yaml (or the folder holding one).

    With `check_context` the context folders and Containerfiles must exist; without it only the
    file itself is checked (for a file copied out of its repository).
    """
    if path.is_dir():
        path = path / SPEC_FILE_NAME
    try:
        root = read_yaml(path)
    except ConfigError as exc:
        raise RecipeSpecError([exc]) from None
    check = _Checker(path)
    spec = _read_root(root, check, check_context)
    if check.problems or spec is None:
        raise RecipeSpecError(check.problems)
    return spec


def _read_root(root: Node, check: _Checker, check_context: bool) -> RecipeSpec | None:
    if not isinstance(root.value, dict):
        check.problem(root.line, "the file must be a mapping with 'version' and 'application'")
        return None
    check.keys(root, ROOT_KEYS, "the top level")
    version_node = root.get("version")
    version = SUPPORTED_VERSION
    if version_node is None:
        check.problem(root.line, f"no 'version' (this format is 'version: {SUPPORTED_VERSION}')")
    elif version_node.value != SUPPORTED_VERSION:
        check.problem(
            version_node.line,
            f"unsupported version {version_node.value!r} (supported: {SUPPORTED_VERSION})",
        )
    application = root.get("application")
    if application is None:
        check.problem(root.line, "no 'application'")
        return None
    if not isinstance(application.value, dict):
        check.problem(application.line, "'application' must be a mapping")
        return None
    check.keys(application, APPLICATION_KEYS, "application")
    app_type = check.text(application, "type", "application") or "language"
    if app_type.lower() not in APPLICATION_TYPES:
        type_line = application.get("type")
        check.problem(
            type_line.line if type_line else application.line,
            f"unknown application type '{app_type}' (known: {', '.join(APPLICATION_TYPES)})",
        )
    name = check.text(application, "name", "application") or ""
    description = check.text(application, "description", "application", required=False) or ""
    containers = _read_containers(application, check, check_context)
    return RecipeSpec(
        path=check.path,
        version=version,
        type=app_type,
        name=name,
        description=description,
        containers=containers,
    )


def _read_containers(
    application: Node, check: _Checker, check_context: bool
) -> tuple[RecipeContainer, ...]:
    node = application.get("containers")
    if node is None:
        check.problem(application.line, "application has no 'containers'")
        return ()
    if not isinstance(node.value, list) or not node.value:
        check.problem(node.line, "'containers' must be a non-empty list")
        return ()
    containers: list[RecipeContainer] = []
    names: dict[str, int] = {}
    ports: dict[int, str] = {}
    for item in node.value:
        read = _read_container(item, check, check_context)
        if read is None:
            continue
        container, port_lines = read
        if container.name in names:
            check.problem(
                item.line,
                f"two containers named '{container.name}' (first on line {names[container.name]})",
            )
        names.setdefault(container.name, item.line)
        for port, line in port_lines:
            if port in ports:
                check.problem(
                    line,
                    f"containers '{ports[port]}' and '{container.name}' both use port {port}; "
                    "containers of one pod share its ports",
                )
            ports.setdefault(port, container.name)
        containers.append(container)
    for role in (ContainerRole.MODEL_SERVICE, ContainerRole.EMBEDDING_SERVICE):
        extra = [c for c in containers if c.role is role][1:]
        for container in extra:
            check.problem(container.line, f"more than one container is a {role.value}")
    if containers and all(c.role is not ContainerRole.APP for c in containers):
        check.problem(node.line, "no application container (one without a service role)")
    return tuple(containers)


def _read_container(
    item: Node, check: _Checker, check_context: bool
) -> tuple[RecipeContainer, tuple[tuple[int, int], ...]] | None:
    """The container and its (port, line) pairs, or None when it has no usable name."""
    if not isinstance(item.value, dict):
        check.problem(item.line, "each container must be a mapping")
        return None
    check.keys(item, CONTAINER_KEYS, "a container")
    name = check.text(item, "name", "a container")
    if name is None:
        return None
    where = f"container '{name}'"
    if not _CONTAINER_NAME.match(name):
        check.problem(
            _line(item, "name"), f"{where}: a name uses letters, digits, '_', '.' and '-' only"
        )
    roles = [role for flag, role in _ROLE_FLAGS.items() if check.flag(item, flag)]
    if len(roles) > 1:
        check.problem(item.line, f"{where} has more than one role: {', '.join(roles)}")
    role = roles[0] if roles else ContainerRole.APP
    context_text = check.text(item, "contextdir", where)
    containerfile_text = check.text(item, "containerfile", where, required=False)
    arch = check.text_list(item, "arch")
    for value in arch:
        if value not in ARCHITECTURES:
            check.problem(
                _line(item, "arch"),
                f"{where}: unknown arch '{value}' (known: {', '.join(ARCHITECTURES)})",
            )
    backends = check.text_list(item, "backend")
    if backends and role not in (ContainerRole.MODEL_SERVICE, ContainerRole.EMBEDDING_SERVICE):
        check.problem(_line(item, "backend"), f"{where}: 'backend' belongs to a model service")
    port_lines = check.ports(item)
    context_dir, containerfile = _build_inputs(
        item, check, where, context_text, containerfile_text or "Containerfile", check_context
    )
    container = RecipeContainer(
        name=name,
        role=role,
        context_dir=context_dir,
        containerfile=containerfile,
        ports=tuple(port for port, _ in port_lines),
        arch=arch,
        image=check.text(item, "image", where, required=False),
        backends=backends,
        gpu_env=check.text_list(item, "gpu-env"),
        line=item.line,
    )
    return container, port_lines


def _line(node: Node, key: str) -> int:
    child = node.get(key)
    return child.line if child is not None else node.line


def _build_inputs(
    item: Node,
    check: _Checker,
    where: str,
    context_text: str | None,
    containerfile_text: str,
    check_context: bool,
) -> tuple[Path, Path]:
    """The absolute context folder and Containerfile, with the checks a build relies on."""
    folder = check.path.parent
    if context_text is None:
        return folder, folder / containerfile_text
    context_rel = PurePosixPath(context_text)
    if context_rel.is_absolute():
        check.problem(
            _line(item, "contextdir"), f"{where}: contextdir must be relative to the recipe folder"
        )
    context_dir = (folder / context_rel).resolve()
    containerfile_rel = PurePosixPath(containerfile_text)
    containerfile = (context_dir / containerfile_rel).resolve()
    if containerfile_rel.is_absolute() or not containerfile.is_relative_to(context_dir):
        check.problem(
            _line(item, "containerfile"),
            f"{where}: containerfile '{containerfile_text}' must be inside its contextdir",
        )
    if check_context:
        if not context_dir.is_dir():
            check.problem(
                _line(item, "contextdir"),
                f"{where}: context folder '{context_text}' does not exist ({context_dir})",
            )
        elif not containerfile.is_file():
            check.problem(
                _line(item, "containerfile") if item.get("containerfile") else item.line,
                f"{where}: containerfile '{containerfile_text}' does not exist in '{context_text}'",
            )
    return context_dir, containerfile
