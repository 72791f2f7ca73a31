"""`podlab recipe`: list, show, validate, import and run recipes (ai-lab.yaml applications)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from podlab.cli.export import cmd_recipe_export, register_recipe_export
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
from podlab.core.recipes.runner import RecipeRun, RecipeRunner, RunEvent, RunRequest
from podlab.core.recipes.spec import RecipeSpecError, load_recipe_spec
from podlab.core.serving.engine import Engine
from podlab.core.serving.gpu.passthrough import WANTS
from podlab.core.settings import load_settings

T = TypeVar("T")


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

    run_parser = commands.add_parser(
        "run",
        help="build (only what changed) and start a recipe in a Podman pod; "
        "returns when the app answers and prints its URL",
    )
    run_parser.add_argument("id", metavar="ID", help="recipe id (see 'podlab recipe list')")
    run_parser.add_argument(
        "--model", required=True, help="a GGUF file, a downloaded model id or a catalog model id"
    )
    run_parser.add_argument(
        "--embedding-model", help="the embedding model (GGUF) for recipes that embed (RAG)"
    )
    run_parser.add_argument(
        "--gpu", default="auto", choices=WANTS, help="GPU for the model service (default auto)"
    )
    run_parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    run_parser.set_defaults(func=cmd_run)

    ps_parser = commands.add_parser("ps", help="list recipe runs (found by their pod labels)")
    ps_parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    ps_parser.set_defaults(func=cmd_ps)

    stop_parser = commands.add_parser("stop", help="stop a recipe run (its pod)")
    stop_parser.add_argument("run", metavar="RUN", help="run id (see 'podlab recipe ps')")
    stop_parser.set_defaults(func=cmd_stop)

    rm_parser = commands.add_parser("rm", help="remove a recipe run: its pod and containers")
    rm_parser.add_argument("run", metavar="RUN", help="run id (see 'podlab recipe ps')")
    rm_parser.set_defaults(func=cmd_rm)

    register_recipe_export(commands).set_defaults(func=cmd_export)


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


def _with_runner(
    action: Callable[[RecipeRunner], Awaitable[T]],
    on_event: Callable[[RunEvent], None] | None = None,
) -> T:
    async def main() -> T:
        settings = load_settings().settings
        engine = Engine(settings)
        runner = RecipeRunner(engine, settings)
        if on_event is not None:
            runner.subscribe(on_event)
        try:
            return await action(runner)
        finally:
            await engine.aclose()

    return asyncio.run(main())


def _print_event(event: RunEvent) -> None:
    """Build logs and progress go to stderr, so stdout holds only the result."""
    where = f"[{event.container}] " if event.container else ""
    if event.kind == "log":
        print(f"{where}{event.text}", file=sys.stderr)
    elif event.kind == "build":
        print(f"{where}building {event.text}", file=sys.stderr)
    elif event.kind == "reuse":
        print(f"{where}reusing {event.text} (inputs unchanged)", file=sys.stderr)
    elif event.kind == "ready":
        print(f"{where}answers at {event.text}", file=sys.stderr)
    else:
        print(f"podlab: {event.text}", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    entry = _find(_load(), args.id)
    request = RunRequest(entry, args.model, args.embedding_model, gpu=args.gpu)

    async def start(runner: RecipeRunner) -> RecipeRun:
        return await runner.run(request)

    run = _with_runner(start, _print_event)
    if args.json:
        print_json(run.to_dict())
    else:
        print(f"{entry.name} runs as {run.id}: {run.app_url}")
    return 0


def cmd_ps(args: argparse.Namespace) -> int:
    async def runs(runner: RecipeRunner) -> list[RecipeRun]:
        return await runner.runs()

    found = _with_runner(runs)
    if args.json:
        print_json([run.to_dict() for run in found])
        return 0
    if not found:
        print("No recipe run.")
        return 0
    rows = [(r.id, r.recipe_id, r.state.value, r.model, r.app_url, r.pod) for r in found]
    print_table(("run", "recipe", "state", "model", "url", "pod"), rows)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    async def stop(runner: RecipeRunner) -> RecipeRun:
        return await runner.stop(args.run)

    run = _with_runner(stop)
    print(f"stopped {run.id} ({run.recipe_id})")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    async def remove(runner: RecipeRunner) -> None:
        await runner.get(args.run)
        await runner.remove(args.run)

    _with_runner(remove)
    print(f"removed {args.run}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    return cmd_recipe_export(args, _find(_load(), args.id))
