"""Image references by digest, from what Podman knows locally (no registry is contacted)."""

from __future__ import annotations

from collections.abc import Iterable

from podlab.core.errors import PodlabError
from podlab.core.export.plan import repo_digest
from podlab.core.serving.engine import Engine


async def image_digests(engine: Engine, images: Iterable[str]) -> dict[str, str]:
    """Tag -> `repository@sha256:…` for each image pulled from a registry that Podman holds;
    local builds (`localhost/…`) and images it does not hold are left out."""
    found: dict[str, str] = {}
    client = engine.client()
    for image in dict.fromkeys(images):
        if "@" in image or image.startswith("localhost/"):
            continue
        try:
            if not await engine.image_exists(image):
                continue
            held = await engine.call(client.images.get, image)
        except PodlabError:
            continue
        digest = repo_digest(image, held.attrs.get("RepoDigests") or [])
        if digest is not None:
            found[image] = digest
    return found
