"""`podlab recipe export` and `podlab services export`: a recipe or a served model as
Containerfiles, Kubernetes YAML, KServe, Quadlet units or Compose, written into one folder."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from podlab.core.errors import PodlabError
from podlab.core.export import FORMATS, GPU_TARGETS, export_recipe, export_service, write_export
from podlab.core.export.digests import image_digests
from podlab.core.export.plan import recipe_images
from podlab.core.recipes.catalog import RecipeEntry
from podlab.core.serving.engine import Engine
from podlab.core.serving.planning import ResolvedModel, resolve_model
from podlab.core.serving.services import ServiceManager
from podlab.core.settings import Settings, load_settings

FORMAT_CHOICES = (*FORMATS, "all")


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        dest="formats",
        action="append",
        choices=FORMAT_CHOICES,
        required=True,
        help="what to write (repeat it for several; 'all' for every format)",
    )
    parser.add_argument(
        "-o", "--output", type=Path, required=True, metavar="DIR", help="an empty folder"
    )
    parser.add_argument(
        "--force", action="store_true", help="replace the folder's content if it has any"
    )


def register_recipe_export(commands: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        "export",
        help="write a recipe as Containerfiles, Kubernetes YAML, KServe, Quadlet or Compose",
        description="Writes what 'podlab recipe run' would start (same images, model, "
        "parameters and environment) as files that run elsewhere. The model travels as a "
        "model image; the API key is never written (each folder's README says how to give it).",
    )
    parser.add_argument("id", metavar="RECIPE", help="recipe id (see 'podlab recipe list')")
    parser.add_argument(
        "--model", help="the model (default: the first recommended one that is downloaded)"
    )
    parser.add_argument(
        "--embedding-model", help="the embedding model, for recipes that embed (RAG)"
    )
    parser.add_argument(
        "--gpu", default="none", choices=GPU_TARGETS, help="the GPU where it will run"
    )
    add_output_arguments(parser)
    return parser


def register_services_export(actions: Any) -> None:
    parser = actions.add_parser(
        "export",
        help="write a service as a model image, Kubernetes YAML, KServe, Quadlet or Compose",
    )
    parser.add_argument("service", metavar="ID", help="id, name or unique id prefix")
    parser.add_argument(
        "--gpu", choices=GPU_TARGETS, help="the GPU where it will run (default: its own)"
    )
    add_output_arguments(parser)
    parser.set_defaults(func=cmd_services_export)


def chosen_formats(values: list[str]) -> tuple[str, ...]:
    return FORMATS if "all" in values else tuple(dict.fromkeys(values))


def _first_downloaded(refs: tuple[str, ...], settings: Settings) -> ResolvedModel | None:
    for ref in refs:
        try:
            return resolve_model(ref, settings)
        except PodlabError:
            continue
    return None


def _recipe_model(
    given: str | None, recommended: tuple[str, ...], what: str, settings: Settings
) -> ResolvedModel:
    if given:
        return resolve_model(given, settings)
    found = _first_downloaded(recommended, settings)
    if found is None:
        listed = ", ".join(recommended) or "none"
        raise PodlabError(
            f"none of the recipe's recommended {what}s is downloaded ({listed})",
            hint=f"download one (podlab models pull {recommended[0]}) or give one with "
            f"--{what.replace(' ', '-')}"
            if recommended
            else f"give one with --{what.replace(' ', '-')}",
        )
    return found


async def _digests(settings: Settings, images: list[str]) -> dict[str, str]:
    """Digests of registry images where a Podman answers; none (tags stay) without Podman."""
    engine = Engine(settings)
    try:
        if not (await engine.connect()).available:
            return {}
        return await image_digests(engine, images)
    finally:
        await engine.aclose()


def cmd_recipe_export(args: argparse.Namespace, entry: RecipeEntry) -> int:
    settings = load_settings().settings
    model = _recipe_model(args.model, entry.recommended, "model", settings)
    embedding = None
    if any(c.role.value == "embedding-service" for c in entry.spec.containers):
        embedding = _recipe_model(
            args.embedding_model, entry.recommended_embedding, "embedding model", settings
        )
    digests = asyncio.run(_digests(settings, list(recipe_images(entry).values())))
    files = export_recipe(
        entry,
        model,
        settings=settings,
        embedding=embedding,
        gpu=args.gpu,
        formats=chosen_formats(args.formats),
        image_digests=digests,
    )
    write_export(files, args.output, force=args.force)
    _report(args.output, files)
    return 0


async def _service_export(args: argparse.Namespace) -> int:
    settings = load_settings().settings
    engine = Engine(settings)
    try:
        manager = ServiceManager(engine, settings=settings)
        service = await manager.get(args.service)
        images = [service.image] if service.image else []
        digests = await image_digests(engine, images) if engine.status.available else {}
    finally:
        await engine.aclose()
    files = export_service(
        service,
        settings=settings,
        formats=chosen_formats(args.formats),
        gpu=args.gpu,
        image_digests=digests,
    )
    write_export(files, args.output, force=args.force)
    _report(args.output, files)
    return 0


def cmd_services_export(args: argparse.Namespace) -> int:
    return asyncio.run(_service_export(args))


def _report(folder: Path, files: list[Any]) -> None:
    folders = sorted({f.path.split("/", 1)[0] for f in files})
    print(f"wrote {len(files)} files into {folder}: {', '.join(folders)}")
    print("each folder's README.md says how to run it and give it the API key", file=sys.stderr)
