"""The recipes Podlab knows: the bundled ones in `recipes/` plus folders the user imported.

A recipe is a folder with an `ai-lab.yaml`. Its catalog entry (id, name, description, readme,
categories, recommended models, backend) comes from an optional `podlab-recipe.yaml` beside it;
a folder without one (a recipe from an ai-lab-recipes checkout) gets its entry from
`ai-lab.yaml` and `README.md`, and its category from the ai-lab-recipes layout
(`recipes/<category>/<recipe>/`).

Imports are remembered as folder paths in `recipe-sources.yaml` in the config folder; a recipe
is read from where it lives, because ai-lab-recipes context folders point outside the recipe
(`../../../model_servers/...`).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from podlab.core.errors import ConfigError, PodlabError
from podlab.core.paths import Locations, atomic_write_text
from podlab.core.recipes.spec import SPEC_FILE_NAME, RecipeSpec, RecipeSpecError, load_recipe_spec
from podlab.core.recipes.yamlnodes import Node, read_yaml
from podlab.core.resources import recipe_file

ENTRY_FILE_NAME = "podlab-recipe.yaml"
SOURCES_FILE_NAME = "recipe-sources.yaml"
README_FILE_NAME = "README.md"
ENTRY_KEYS = frozenset(
    {
        "id",
        "name",
        "description",
        "readme",
        "categories",
        "recommended",
        "recommended-embedding",
        "backend",
    }
)
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
MAX_README_BYTES = 256 * 1024


@dataclass(frozen=True)
class RecipeEntry:
    """A recipe as the catalog shows it, with its parsed ai-lab.yaml."""

    id: str
    name: str
    description: str
    readme: str
    """Markdown from the recipe's author: render it inert (no raw HTML, no remote images)."""
    categories: tuple[str, ...]
    recommended: tuple[str, ...]
    """Model ids from the model catalog, best first; any model with the backend may run it."""
    recommended_embedding: tuple[str, ...]
    """Embedding model ids, for recipes with an embedding service."""
    backend: str | None
    spec: RecipeSpec
    origin: str
    """'bundled', or the folder (and git commit) it was imported from."""

    @property
    def folder(self) -> Path:
        return self.spec.folder

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "categories": list(self.categories),
            "recommended": list(self.recommended),
            "recommended_embedding": list(self.recommended_embedding),
            "backend": self.backend,
            "origin": self.origin,
            "folder": str(self.folder),
            "readme": self.readme,
            "application": self.spec.to_dict(),
        }


@dataclass
class RecipeCatalog:
    """Recipes by id in the order first found, and the problems of the ones that were skipped."""

    entries: dict[str, RecipeEntry] = field(default_factory=dict)
    errors: list[PodlabError] = field(default_factory=list)

    def __iter__(self) -> Iterator[RecipeEntry]:
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, recipe_id: str) -> RecipeEntry | None:
        return self.entries.get(recipe_id)

    def categories(self) -> list[str]:
        return sorted({c for entry in self for c in entry.categories})

    def backends(self) -> list[str]:
        return sorted({entry.backend for entry in self if entry.backend})

    def filtered(
        self, category: str | None = None, backend: str | None = None
    ) -> list[RecipeEntry]:
        return [
            entry
            for entry in self
            if (category is None or category in entry.categories)
            and (backend is None or entry.backend == backend)
        ]


def category_label(category_id: str) -> str:
    """'natural-language-processing' → 'Natural language processing'."""
    words = category_id.replace("_", "-").split("-")
    return " ".join(words).capitalize()


def bundled_recipes_dir() -> Path:
    """The `recipes/` folder shipped in the package (a real folder in a checkout and a wheel)."""
    folder: Traversable = recipe_file("")
    return Path(str(folder))


def load_recipe(folder: Path, origin: str = "", check_context: bool = True) -> RecipeEntry:
    """One recipe folder (holding ai-lab.yaml) as a catalog entry; problems raise PodlabError."""
    spec = load_recipe_spec(folder / SPEC_FILE_NAME, check_context=check_context)
    entry_path = folder / ENTRY_FILE_NAME
    values = _read_entry_file(entry_path) if entry_path.is_file() else {}
    readme_name = values.get("readme") or README_FILE_NAME
    readme = _read_readme(folder / readme_name)
    recipe_id = values.get("id") or _id_from_folder(folder)
    backend = values.get("backend") or (spec.backends[0] if spec.backends else None)
    return RecipeEntry(
        id=recipe_id,
        name=values.get("name") or spec.name or recipe_id,
        description=values.get("description") or spec.description,
        readme=readme,
        categories=tuple(values.get("categories") or _categories_from_layout(folder)),
        recommended=tuple(values.get("recommended") or ()),
        recommended_embedding=tuple(values.get("recommended-embedding") or ()),
        backend=backend,
        spec=spec,
        origin=origin or str(folder),
    )


def _read_entry_file(path: Path) -> dict[str, Any]:
    root = read_yaml(path)
    shown = str(path)
    if not isinstance(root.value, dict):
        raise ConfigError(shown, root.line, "must be a mapping (id, name, description, ...)")
    values: dict[str, Any] = {}
    for key, child in root.value.items():
        if key not in ENTRY_KEYS:
            raise ConfigError(
                shown, child.line, f"unknown key '{key}' (known: {', '.join(sorted(ENTRY_KEYS))})"
            )
        values[key] = _entry_value(shown, key, child)
    return values


def _entry_value(path: str, key: str, child: Node) -> Any:
    if key in ("categories", "recommended", "recommended-embedding"):
        if not isinstance(child.value, list) or not all(
            isinstance(item.value, str) and item.value for item in child.value
        ):
            raise ConfigError(path, child.line, f"'{key}' must be a list of ids")
        return [item.value for item in child.value]
    if not isinstance(child.value, str) or not child.value.strip():
        raise ConfigError(path, child.line, f"'{key}' must be non-empty text")
    value = child.value.strip()
    if key == "id" and not _ID.match(value):
        raise ConfigError(
            path, child.line, f"id '{value}' uses lower-case letters, digits, '_', '.', '-' only"
        )
    if key == "readme" and ("/" in value or value.startswith(".")):
        raise ConfigError(path, child.line, "'readme' names a file in the recipe folder")
    return value


def _read_readme(path: Path) -> str:
    if not path.is_file():
        return ""
    data = path.read_bytes()[:MAX_README_BYTES]
    return data.decode("utf-8", errors="replace")


def _id_from_folder(folder: Path) -> str:
    text = re.sub(r"[^a-z0-9_.-]+", "-", folder.resolve().name.lower()).strip("-.")
    return text or "recipe"


def _categories_from_layout(folder: Path) -> list[str]:
    """ai-lab-recipes keeps recipes in recipes/<category>/<recipe>/ (with _ for -)."""
    parent = folder.resolve().parent
    if parent.parent.name == "recipes" and parent.name:
        return [parent.name.replace("_", "-")]
    return []


def find_recipe_folders(root: Path) -> list[Path]:
    """Recipe folders under `root`: itself, its children, or an ai-lab-recipes checkout."""
    if (root / SPEC_FILE_NAME).is_file():
        return [root]
    found = sorted(p.parent for p in root.glob(f"*/{SPEC_FILE_NAME}"))
    found += sorted(p.parent for p in root.glob(f"recipes/*/*/{SPEC_FILE_NAME}"))
    return found


def git_commit(folder: Path) -> str | None:
    """The commit checked out where `folder` lives, or None outside a git checkout."""
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else None


def _origin(folder: Path) -> str:
    commit = git_commit(folder)
    return f"{folder} (git {commit[:12]})" if commit else str(folder)


def _sources_file(locations: Locations) -> Path:
    return locations.config_dir / SOURCES_FILE_NAME


def imported_sources(locations: Locations) -> list[Path]:
    path = _sources_file(locations)
    if not path.is_file():
        return []
    root = read_yaml(path)
    folders = root.get("folders")
    if folders is None or not isinstance(folders.value, list):
        raise ConfigError(str(path), root.line, "needs 'folders:', a list of recipe folders")
    return [Path(item.value) for item in folders.value if isinstance(item.value, str)]


def import_recipes(source: Path, locations: Locations) -> list[RecipeEntry]:
    """Validate every recipe under `source` (a folder or a local git checkout) and remember them.

    Nothing is remembered unless every recipe found is valid, so a half-broken checkout is not
    half imported.
    """
    source = source.expanduser().resolve()
    if not source.is_dir():
        raise PodlabError(f"{source} is not a folder", "give a recipe folder or a git checkout")
    folders = find_recipe_folders(source)
    if not folders:
        raise PodlabError(
            f"no {SPEC_FILE_NAME} in {source}",
            "a recipe folder holds ai-lab.yaml; a checkout keeps them in recipes/<category>/<id>/",
        )
    entries = [load_recipe(folder, origin=_origin(folder)) for folder in folders]
    known = imported_sources(locations)
    for folder in folders:
        if folder not in known:
            known.append(folder)
    atomic_write_text(
        _sources_file(locations),
        "# Recipe folders imported into Podlab (podlab recipe import).\n"
        + yaml.safe_dump({"folders": [str(p) for p in known]}, sort_keys=False),
    )
    return entries


def load_recipe_catalog(locations: Locations | None = None) -> RecipeCatalog:
    """Bundled recipes, then imported ones (an imported id replaces a bundled one).

    A broken recipe never hides the others: it is left out and its problem kept in `errors`.
    """
    locations = locations or Locations.default()
    catalog = RecipeCatalog()
    bundled = bundled_recipes_dir()
    folders: list[tuple[Path, str]] = [
        (folder, "bundled") for folder in find_recipe_folders(bundled)
    ]
    try:
        folders += [(folder, "") for folder in imported_sources(locations)]
    except ConfigError as exc:
        catalog.errors.append(exc)
    for folder, origin in folders:
        try:
            entry = load_recipe(folder, origin=origin or _origin(folder))
        except (RecipeSpecError, ConfigError) as exc:
            catalog.errors.append(exc)
            continue
        catalog.entries[entry.id] = entry
    return catalog
