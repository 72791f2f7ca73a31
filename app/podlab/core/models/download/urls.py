"""Download URLs: hf:// references, which hosts get HF_TOKEN, and the digests servers publish."""

from __future__ import annotations

import os
import re
from urllib.parse import quote, urlsplit

import httpx

from podlab.core.errors import PodlabError

HF_DEFAULT_ENDPOINT = "https://huggingface.co"

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_ETAG_SHA256_RE = re.compile(r'^(W/)?"?([0-9a-fA-F]{64})"?$')


def hf_endpoint() -> str:
    """The Hugging Face endpoint: HF_ENDPOINT (a mirror) or https://huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")


def resolve_url(url: str) -> str:
    """Turn `hf://org/repo/path/file[@revision]` into an https URL; check other URLs."""
    for prefix in ("hf://", "huggingface://"):
        if url.startswith(prefix):
            rest, revision = url[len(prefix) :], "main"
            if "@" in rest:
                rest, revision = rest.rsplit("@", 1)
            parts = rest.split("/")
            if len(parts) < 3 or any(p in ("", ".", "..") for p in parts) or not revision:
                raise PodlabError(
                    f"not a valid Hugging Face file reference: {url}",
                    hint="write it as hf://org/repo/file.gguf or hf://org/repo/file.gguf@revision",
                )
            org, repo, path = parts[0], parts[1], "/".join(parts[2:])
            return (
                f"{hf_endpoint()}/{quote(org)}/{quote(repo)}/resolve/"
                f"{quote(revision, safe='')}/{quote(path)}"
            )
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise PodlabError(
            f"cannot download {url!r}: only http(s):// and hf:// URLs are supported",
            hint="use https://host/path/file.gguf or hf://org/repo/file.gguf",
        )
    return url


def is_hf_host(host: str | None) -> bool:
    """Hosts that may receive HF_TOKEN: huggingface.co, its subdomains and HF_ENDPOINT."""
    if not host:
        return False
    host = host.lower()
    if host == "huggingface.co" or host.endswith(".huggingface.co"):
        return True
    endpoint_host = urlsplit(hf_endpoint()).hostname
    return bool(endpoint_host) and host == endpoint_host


def hf_token() -> str | None:
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None


def auth_headers(url: str) -> dict[str, str]:
    """Authorization for Hugging Face hosts when HF_TOKEN is set; nothing for anyone else."""
    token = hf_token()
    if token and is_hf_host(urlsplit(url).hostname):
        return {"Authorization": f"Bearer {token}"}
    return {}


def normalize_sha256(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    digest = value.strip().lower()
    digest = digest.removeprefix("sha256:")
    if not _SHA256_RE.fullmatch(digest):
        raise PodlabError(
            f"not a sha256 digest: {value!r}", hint="a sha256 is 64 hexadecimal characters"
        )
    return digest


def server_sha256(response: httpx.Response) -> str | None:
    """The sha256 a server publishes for a file: X-Linked-Etag on any response of the redirect
    chain (Hugging Face), else a strong 64-hex ETag from a Hugging Face host."""
    chain = [*response.history, response]
    for item in chain:
        value = item.headers.get("x-linked-etag")
        match = _ETAG_SHA256_RE.match(value.strip()) if value else None
        if match and not match.group(1):
            return match.group(2).lower()
    for item in chain:
        value = item.headers.get("etag")
        match = _ETAG_SHA256_RE.match(value.strip()) if value else None
        if match and not match.group(1) and is_hf_host(item.url.host):
            return match.group(2).lower()
    return None
