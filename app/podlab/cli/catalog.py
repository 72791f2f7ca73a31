"""`podlab catalog`: list and show the models of the catalog (bundled plus the user's files)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from podlab.cli.output import print_json, print_table
from podlab.core.errors import PodlabError
from podlab.core.models.catalog import CatalogLoad, load_catalog
from podlab.core.models.modelinfo import ModelInfo, ModelVariant
from podlab.core.paths import Locations


def register(subparsers: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--catalog",
        metavar="FILE",
        action="append",
        default=[],
        type=Path,
        help="also read this catalog file (YAML, or Podman AI Lab JSON); repeatable",
    )
    common.add_argument("--json", action="store_true", help="print JSON for scripts")

    parser = subparsers.add_parser(
        "catalog",
        help="list and show the models you can download",
        description="The model catalog: the bundled one merged with your catalog files in "
        f"{Locations.default().user_catalog_dir}.",
    )
    parser.set_defaults(func=lambda args: _usage(parser))
    commands = parser.add_subparsers(dest="catalog_command", metavar="SUBCOMMAND")

    list_parser = commands.add_parser(
        "list", parents=[common], help="list the models of the catalog"
    )
    list_parser.add_argument(
        "--search", metavar="TEXT", help="only models whose id, name, publisher, ... contain TEXT"
    )
    list_parser.set_defaults(func=cmd_list)

    show_parser = commands.add_parser(
        "show", parents=[common], help="show one model with all its variants"
    )
    show_parser.add_argument("id", metavar="ID", help="model id, model-id:QUANT or a variant id")
    show_parser.set_defaults(func=cmd_show)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _load(args: argparse.Namespace) -> CatalogLoad:
    """Load the catalog; each broken entry or file is a warning on stderr, never a failure."""
    loaded = load_catalog(extra_files=args.catalog)
    for error in loaded.errors:
        print(f"podlab: warning: {error}", file=sys.stderr)
    return loaded


def human_size(size: int | None) -> str | None:
    if size is None:
        return None
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def human_count(count: int | None) -> str | None:
    if count is None:
        return None
    for limit, unit in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if count >= limit:
            text = f"{count / limit:.2f}".rstrip("0").rstrip(".")
            return f"{text}{unit}"
    return str(count)


def cmd_list(args: argparse.Namespace) -> int:
    catalog = _load(args).catalog
    models = catalog.search(args.search) if args.search else list(catalog)
    if args.json:
        print_json([model.to_dict() for model in models])
        return 0
    if not models:
        print("No model matches." if args.search else "The catalog is empty.")
        return 0
    rows = []
    for model in models:
        default = model.default_variant
        rows.append(
            (
                model.id,
                model.name,
                human_count(model.parameters),
                default.quantization if default else None,
                human_size(default.size) if default else None,
                model.license,
                ",".join(model.capabilities),
            )
        )
    print_table(("id", "name", "params", "quant", "size", "license", "capabilities"), rows)
    return 0


def _resolve(catalog_load: CatalogLoad, ref: str) -> tuple[ModelInfo, ModelVariant | None]:
    catalog = catalog_load.catalog
    model = catalog.model(ref)
    if model is not None:
        return model, None
    found = catalog.find_variant(ref)
    if found is not None:
        return found
    close = catalog.suggest(ref.partition(":")[0] if ":" in ref else ref)
    hint = "run 'podlab catalog list' to see the ids"
    if close:
        hint = f"did you mean {', '.join(close)}? ({hint})"
    raise PodlabError(f"no model or variant '{ref}' in the catalog", hint)


def cmd_show(args: argparse.Namespace) -> int:
    model, chosen = _resolve(_load(args), args.id)
    if args.json:
        data = model.to_dict()
        if chosen is not None:
            data["selected_variant"] = chosen.id
        print_json(data)
        return 0
    fields: list[tuple[str, Any]] = [
        ("id", model.id),
        ("name", model.name),
        ("publisher", model.publisher),
        ("license", model.license),
        ("parameters", human_count(model.parameters)),
        ("context length", model.context_length),
        ("architecture", model.architecture),
        ("backend", model.backend),
        ("capabilities", ", ".join(model.capabilities)),
        ("properties", ", ".join(f"{k}={v}" for k, v in model.properties.items())),
        ("catalog file", model.source),
        ("facts from", model.provenance),
    ]
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        shown = "-" if value is None or value == "" else value
        print(f"{name + ':':<{width + 1}} {shown}")
    print()
    print("Variants (the first is the default):")
    rows = []
    for variant in model.variants:
        mark = "*" if chosen is not None and variant.id == chosen.id else ""
        rows.append(
            (
                mark + variant.id,
                variant.quantization,
                human_size(variant.size),
                human_size(variant.memory),
                variant.sha256[:12] + "…" if variant.sha256 else None,
                variant.file_name,
            )
        )
    print_table(("variant", "quant", "size", "memory", "sha256", "file"), rows)
    for variant in model.variants:
        print(f"  {variant.id}: {variant.url}")
    if model.description:
        print()
        print(model.description.rstrip())
    return 0
