"""`podlab recipe`: list, show, validate and import recipes (ai-lab.yaml applications)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from podlab.cli.output import print_json, print_table
from podlab.core.errors import PodlabError
from podlab.core.paths import Locations
from podlab.core.recipes.catalog import (
    RecipeCatalog,
    RecipeEntry,
    category_label,
    import_recipes,
    load_recipe_catalog,
)
from podlab.core.recipes.spec import RecipeSpecError, load_recipe_spec


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "recipe",
        help="list, show, validate and import recipe applications",
        description="Recipes are applications (chatbot, RAG, summarizer) described by an "
        "ai-lab.yaml: an app container wired to a model server in one Podman pod.",
    )
    parser.set_defaults(func=lambda args: _usage(parser))
    commands = parser.add_subparsers(dest="recipe_command", metavar="SUBCOMMAND")

    list_parser = commands.add_parser("list", help="list the recipes")
    list_parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    list_parser.set_defaults(func=cmd_list)

    show_parser = commands.add_parser("show", help="show one recipe: containers and readme")
    show_parser.add_argument("id", metavar="ID", help="recipe id (see 'podlab recipe list')")
    show_parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    show_parser.set_defaults(func=cmd_show)

    validate_parser = commands.add_parser(
        "validate", help="check an ai-lab.yaml; every problem is printed as file:line: problem"
    )
    validate_parser.add_argument(
        "path", metavar="PATH", type=Path, help="an ai-lab.yaml or the folder holding one"
    )
    validate_parser.add_argument(
        "--no-context-check",
        action="store_true",
        help="do not require the context folders and Containerfiles to exist",
    )
    validate_parser.set_defaults(func=cmd_validate)

    import_parser = commands.add_parser(
        "import", help="add the recipes of a local folder or git checkout (ai-lab-recipes layout)"
    )
    import_parser.add_argument("path", metavar="PATH", type=Path, help="folder or checkout")
    import_parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    import_parser.set_defaults(func=cmd_import)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _load() -> RecipeCatalog:
    """The catalog; a broken imported recipe is a warning on stderr, never a failure."""
    catalog = load_recipe_catalog()
    for error in catalog.errors:
        for line in error.message.splitlines():
            print(f"podlab: warning: {line}", file=sys.stderr)
    return catalog


def _summary(entry: RecipeEntry) -> dict[str, Any]:
    data = entry.to_dict()
    del data["readme"], data["application"]
    return data


def cmd_list(args: argparse.Namespace) -> int:
    catalog = _load()
    if args.json:
        print_json([_summary(entry) for entry in catalog])
        return 0
    if not len(catalog):
        print("No recipe found.")
        return 0
    rows = [
        (
            entry.id,
            entry.name,
            ", ".join(category_label(c) for c in entry.categories),
            entry.backend,
            len(entry.spec.containers),
            "bundled" if entry.origin == "bundled" else "imported",
        )
        for entry in catalog
    ]
    print_table(("id", "name", "category", "backend", "containers", "origin"), rows)
    return 0


def _find(catalog: RecipeCatalog, recipe_id: str) -> RecipeEntry:
    entry = catalog.get(recipe_id)
    if entry is None:
        known = ", ".join(e.id for e in catalog) or "none"
        raise PodlabError(f"no recipe '{recipe_id}'", f"known recipes: {known}")
    return entry


def cmd_show(args: argparse.Namespace) -> int:
    entry = _find(_load(), args.id)
    if args.json:
        print_json(entry.to_dict())
        return 0
    fields = [
        ("id", entry.id),
        ("name", entry.name),
        ("description", entry.description),
        ("categories", ", ".join(category_label(c) for c in entry.categories)),
        ("backend", entry.backend),
        ("recommended", ", ".join(entry.recommended)),
        ("embedding", ", ".join(entry.recommended_embedding)),
        ("folder", entry.folder),
        ("origin", entry.origin),
    ]
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        shown = "-" if value is None or value == "" else value
        print(f"{name + ':':<{width + 1}} {shown}")
    print()
    rows = [
        (c.name, c.role.value, ", ".join(map(str, c.ports)), c.image, c.context_dir)
        for c in entry.spec.containers
    ]
    print_table(("container", "role", "ports", "image", "context"), rows)
    if entry.readme:
        print()
        print(entry.readme.rstrip())
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        spec = load_recipe_spec(args.path, check_context=not args.no_context_check)
    except RecipeSpecError as exc:
        for problem in exc.problems:
            print(problem.message, file=sys.stderr)
        count = len(exc.problems)
        print(f"{count} problem{'s' if count != 1 else ''}", file=sys.stderr)
        return 1
    names = ", ".join(f"{c.name} ({c.role.value})" for c in spec.containers)
    print(f"{spec.path}: valid ({spec.name}: {names})")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    try:
        entries = import_recipes(args.path, Locations.default())
    except RecipeSpecError as exc:
        for problem in exc.problems:
            print(problem.message, file=sys.stderr)
        print("nothing imported", file=sys.stderr)
        return 1
    if args.json:
        print_json([_summary(entry) for entry in entries])
        return 0
    for entry in entries:
        print(f"imported {entry.id} ({entry.name}) from {entry.origin}")
    return 0
