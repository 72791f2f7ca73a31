"""The one downloader: resumable, retrying, stall-aware, sha256-checked while streaming.

A `Download` fetches one URL into `dest`. Bytes go to `<dest>.partial` (partial.py); a later
`Download` of the same URL (in this process or after a restart) resumes from the partial's size
with an HTTP Range request. Connection errors, 5xx, timeouts and stalls reconnect with
exponential backoff (attempt.py). The sha256 is computed while streaming; on success the partial
is fsynced and renamed atomically, so `dest` exists only when complete and verified. When no
sha256 is given, the digest the server publishes (Hugging Face) is checked instead.

TLS is always verified (proxies and CA bundles come from the environment: HTTPS_PROXY, NO_PROXY,
SSL_CERT_FILE, else the system's certificates); there is no insecure fallback. `HF_TOKEN` is
sent to Hugging Face hosts only (urls.py).

Progress: `add_listener(callback)` or `async for event in download.events()`; each event is a
`DownloadProgress` with state, bytes, total, rate (sliding window, 0 B/s while stalled; meter.py)
and ETA. `DownloadManager` runs several downloads with a concurrency cap. The bytes move in worker
threads through httpx's synchronous client, with larger reads than httpx's own (fastread.py).
"""

from podlab.core.models.download.attempt import MAX_REDIRECTS, USER_AGENT, make_client
from podlab.core.models.download.job import DEFAULT_STALL_SECONDS, Download, Listener
from podlab.core.models.download.manager import DEFAULT_MAX_PARALLEL, DownloadManager
from podlab.core.models.download.partial import CHUNK_SIZE
from podlab.core.models.download.progress import (
    DownloadCancelled,
    DownloadError,
    DownloadProgress,
    DownloadResult,
    DownloadState,
    format_bytes,
)
from podlab.core.models.download.urls import (
    HF_DEFAULT_ENDPOINT,
    auth_headers,
    hf_endpoint,
    hf_token,
    is_hf_host,
    normalize_sha256,
    resolve_url,
    server_sha256,
)

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_MAX_PARALLEL",
    "DEFAULT_STALL_SECONDS",
    "HF_DEFAULT_ENDPOINT",
    "MAX_REDIRECTS",
    "USER_AGENT",
    "Download",
    "DownloadCancelled",
    "DownloadError",
    "DownloadManager",
    "DownloadProgress",
    "DownloadResult",
    "DownloadState",
    "Listener",
    "auth_headers",
    "format_bytes",
    "hf_endpoint",
    "hf_token",
    "is_hf_host",
    "make_client",
    "normalize_sha256",
    "resolve_url",
    "server_sha256",
]
