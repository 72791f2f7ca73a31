"""Export a recipe or a served model as files that run elsewhere: Containerfiles and a model
image, Kubernetes YAML, KServe, Quadlet units and Compose.

Every format is written from one `ExportPlan`, itself made from the container specs Podlab runs
(`plan_pod` for recipes, the service's spec for services), so what was tested is what is
exported. `write_export` writes a whole export or nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePosixPath

from podlab.core.errors import PodlabError
from podlab.core.export.compose import compose_files
from podlab.core.export.containerfile import containerfile_files
from podlab.core.export.kube import kserve_files, kube_files
from podlab.core.export.plan import (
    FORMATS,
    GPU_TARGETS,
    ExportedFile,
    ExportPlan,
    dns_label,
    recipe_plan,
    service_plan,
)
from podlab.core.export.quadlet import quadlet_files
from podlab.core.recipes.catalog import RecipeEntry
from podlab.core.serving.inference import InferenceService
from podlab.core.serving.planning import ResolvedModel
from podlab.core.settings import Settings

WRITERS: dict[str, Callable[[ExportPlan], list[ExportedFile]]] = {
    "containerfile": containerfile_files,
    "kube": kube_files,
    "kserve": kserve_files,
    "quadlet": quadlet_files,
    "compose": compose_files,
}


def _formats(formats: Iterable[str]) -> list[str]:
    chosen = list(dict.fromkeys(formats))
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise PodlabError(
            f"unknown export format {', '.join(unknown) or '(none)'}",
            hint=f"use {', '.join(FORMATS)} or all",
        )
    return chosen


def render(plan: ExportPlan, formats: Iterable[str] = FORMATS) -> list[ExportedFile]:
    """Every file of the chosen formats, in FORMATS order."""
    chosen = _formats(formats)
    files: list[ExportedFile] = []
    for name in FORMATS:
        if name in chosen:
            files += WRITERS[name](plan)
    return files


def export_recipe(
    entry: RecipeEntry,
    model: ResolvedModel,
    *,
    settings: Settings,
    embedding: ResolvedModel | None = None,
    gpu: str = "none",
    formats: Iterable[str] = FORMATS,
    image_digests: Mapping[str, str] | None = None,
    host_ports: Mapping[int, int] | None = None,
) -> list[ExportedFile]:
    """A recipe as the runner would start it. image_digests: image tag -> reference by digest
    (where Podman knows one); host_ports: container port -> host port on 127.0.0.1 (default:
    the container port)."""
    plan = recipe_plan(
        entry,
        model,
        embedding=embedding,
        gpu=gpu,
        settings=settings,
        image_digests=image_digests,
        host_ports=host_ports,
    )
    return render(plan, formats)


def export_service(
    service: InferenceService,
    *,
    settings: Settings,
    formats: Iterable[str] = FORMATS,
    gpu: str | None = None,
    image_digests: Mapping[str, str] | None = None,
    host_port: int | None = None,
    sampling: Mapping[str, object] | None = None,
) -> list[ExportedFile]:
    """One served model, from the service's own container spec. gpu None: the GPU it runs
    on; host_port None: its own port; sampling: the request parameters it was tried with."""
    plan = service_plan(
        service,
        settings=settings,
        gpu=gpu,
        image_digests=image_digests,
        host_port=host_port,
        sampling=sampling,
    )
    return render(plan, formats)


def _check_path(path: str) -> PurePosixPath:
    relative = PurePosixPath(path)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise PodlabError(f"export file {path!r} would leave the output folder")
    return relative


def write_export(files: Iterable[ExportedFile], out_dir: Path, *, force: bool = False) -> None:
    """Write an export into out_dir, all or nothing.

    A folder that exists and is not empty is refused unless `force` (then it is replaced).
    Files are written into a temporary folder beside out_dir, which is renamed into place
    only when every file is written, so a failure leaves no half-written export.
    """
    out_dir = out_dir.expanduser().absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise PodlabError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise PodlabError(
            f"{out_dir} is not empty", hint="choose an empty folder, or use --force to replace it"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for exported in files:
            target = staging / _check_path(exported.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(exported.text, encoding="utf-8")
            os.chmod(target, exported.mode)
        os.chmod(staging, 0o755)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            out_dir.rename(old)
            try:
                staging.rename(out_dir)
            except BaseException:
                old.rename(out_dir)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(out_dir)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
        raise


__all__ = [
    "FORMATS",
    "GPU_TARGETS",
    "ExportPlan",
    "ExportedFile",
    "dns_label",
    "export_recipe",
    "export_service",
    "recipe_plan",
    "render",
    "service_plan",
    "write_export",
]
