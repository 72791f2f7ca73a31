"""The downloader against a real, misbehaving HTTP(S) server on 127.0.0.1 (tests/httpfaults.py).

Nothing is mocked: httpx talks to a real socket, files land on a real file system, disk-full is
a real tmpfs (or a real RLIMIT_FSIZE in a subprocess), TLS failure is a real handshake.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podlab.core.errors import PodlabError
from podlab.core.models.download import (
    Download,
    DownloadCancelled,
    DownloadError,
    DownloadManager,
    DownloadProgress,
    DownloadState,
    auth_headers,
    fastread,
    resolve_url,
    server_sha256,
)
from podlab.core.models.modelinfo import ModelInfo, ModelVariant
from podlab.core.models.store import PARTIAL, READY, DiscoveryRoots, ModelStore
from tests.httpfaults import (
    FaultServer,
    cut,
    ignore_range,
    make_self_signed_cert,
    ok,
    server_ssl_context,
    short,
    slow,
    stall,
    status,
    wait_until,
    wrong_content,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

DATA = os.urandom(1_500_000)
SHA = hashlib.sha256(DATA).hexdigest()
FAST: dict[str, Any] = {
    "backoff_base": 0.01,
    "backoff_max": 0.05,
    "stall_seconds": 1.0,
    "progress_interval": 0.05,
    "chunk_size": 64 * 1024,
}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_proxy_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's proxy or token must not leak into tests on 127.0.0.1."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("all_proxy", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as running:
        yield running


def ranges(server: FaultServer, path: str = "/f") -> list[str | None]:
    return [r.range for r in server.requests_for(path)]


async def eventually(predicate: Any, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    for _ in range(100_000):
        if predicate() or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    return bool(predicate())


def record(download: Download) -> list[DownloadProgress]:
    events: list[DownloadProgress] = []
    download.add_listener(events.append)
    return events


# -- the happy path and resumes ------------------------------------------------------------------


async def test_downloads_verifies_and_renames_atomically(server: FaultServer, tmp_path: Path):
    server.serve("/f", DATA)
    dest = tmp_path / "m" / "model.gguf"
    download = Download(server.url("/f"), dest, sha256=SHA, size=len(DATA), **FAST)
    events = record(download)
    result = await download.run()
    assert dest.read_bytes() == DATA
    assert result.sha256 == SHA and result.sha256_source == "expected"
    assert result.size == len(DATA) and result.attempts == 1
    assert not download.partial_path.exists() and not download.state_path.exists()
    states = [e.state for e in events]
    assert states[0] is DownloadState.CONNECTING and states[-1] is DownloadState.DONE
    assert DownloadState.VERIFYING in states
    assert events[-1].done == events[-1].total == len(DATA)
    assert server.requests_for("/f")[0].headers.get("accept-encoding") == "identity"


async def test_resumes_after_the_connection_is_cut(server: FaultServer, tmp_path: Path):
    server.serve("/f", DATA, [cut(300_000), cut(700_000), ok()])
    download = Download(server.url("/f"), tmp_path / "f.bin", sha256=SHA, **FAST)
    events = record(download)
    result = await download.run()
    assert (tmp_path / "f.bin").read_bytes() == DATA
    assert ranges(server) == [None, "bytes=300000-", "bytes=1000000-"]
    assert result.attempts == 3
    assert any(e.state is DownloadState.RETRYING for e in events)


async def test_resumes_in_a_new_download_object_after_a_restart(
    server: FaultServer, tmp_path: Path
):
    server.serve("/f", DATA, [cut(400_000), ok()], etag='"v1"')
    dest = tmp_path / "f.bin"
    first = Download(server.url("/f"), dest, sha256=SHA, max_attempts=1, **FAST)
    with pytest.raises(DownloadError) as failed:
        await first.run()
    assert failed.value.kind == "network"
    assert not dest.exists()
    assert first.partial_path.read_bytes() == DATA[:400_000]
    assert json.loads(first.state_path.read_text())["etag"] == '"v1"'

    second = Download(server.url("/f"), dest, sha256=SHA, **FAST)  # as after a restart
    result = await second.run()
    assert dest.read_bytes() == DATA
    assert result.resumed_from == 400_000
    last = server.requests_for("/f")[-1]
    assert last.range == "bytes=400000-" and last.headers.get("if-range") == '"v1"'


async def test_a_server_ignoring_range_restarts_from_zero(server: FaultServer, tmp_path: Path):
    server.serve("/f", DATA, [cut(500_000), ignore_range()])
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError):
        await Download(server.url("/f"), dest, max_attempts=1, **FAST).run()
    assert dest.with_name("f.bin.partial").stat().st_size == 500_000

    result = await Download(server.url("/f"), dest, sha256=SHA, **FAST).run()
    assert ranges(server) == [None, "bytes=500000-"]  # asked to resume, got a 200
    assert dest.stat().st_size == len(DATA)
    assert dest.read_bytes() == DATA and result.sha256 == SHA


async def test_a_changed_file_upstream_restarts_through_if_range(
    server: FaultServer, tmp_path: Path
):
    dest = tmp_path / "f.bin"
    server.serve("/f", os.urandom(len(DATA)), [cut(300_000)], etag='"old"')
    with pytest.raises(DownloadError):
        await Download(server.url("/f"), dest, max_attempts=1, **FAST).run()
    server.serve("/f", DATA, etag='"new"')
    result = await Download(server.url("/f"), dest, sha256=SHA, **FAST).run()
    assert result.sha256 == SHA and result.resumed_from == 300_000


async def test_a_partial_of_another_url_is_not_mixed_in(server: FaultServer, tmp_path: Path):
    dest = tmp_path / "f.bin"
    server.serve("/old", os.urandom(len(DATA)), [cut(300_000)])
    server.serve("/f", DATA)
    with pytest.raises(DownloadError):
        await Download(server.url("/old"), dest, max_attempts=1, **FAST).run()
    result = await Download(server.url("/f"), dest, sha256=SHA, **FAST).run()
    assert ranges(server) == [None] and result.resumed_from == 0


async def test_a_complete_partial_is_finished_on_416(server: FaultServer, tmp_path: Path):
    server.serve("/f", DATA)
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.partial").write_bytes(DATA)
    result = await Download(server.url("/f"), dest, sha256=SHA, **FAST).run()
    assert ranges(server) == [f"bytes={len(DATA)}-"]
    assert result.resumed_from == len(DATA) and dest.read_bytes() == DATA


async def test_a_truncated_body_is_resumed(server: FaultServer, tmp_path: Path):
    # No Content-Length, a clean close after 600 kB: only the known size reveals the truncation.
    server.serve("/f", DATA, [short(600_000), ok()])
    download = Download(server.url("/f"), tmp_path / "f.bin", size=len(DATA), **FAST)
    result = await download.run()
    assert ranges(server) == [None, "bytes=600000-"]
    assert result.sha256 == SHA and (tmp_path / "f.bin").read_bytes() == DATA


# -- stalls, retries, failures -------------------------------------------------------------------


async def test_a_stall_reconnects_and_shows_zero_rate(server: FaultServer, tmp_path: Path):
    server.serve("/f", DATA, [stall(500_000), ok()])
    download = Download(server.url("/f"), tmp_path / "f.bin", sha256=SHA, **FAST)
    events = record(download)
    started = time.monotonic()
    await download.run()
    assert time.monotonic() - started < 10
    assert ranges(server) == [None, "bytes=500000-"]
    stalled = [e for e in events if e.state is DownloadState.STALLED]
    assert stalled, "the stall was never shown"
    assert all(e.rate == 0 and e.eta is None for e in stalled)
    assert all(e.done == 500_000 for e in stalled)
    moving = [e for e in events if e.state is DownloadState.DOWNLOADING and e.rate > 0]
    assert moving, "the rate was never shown while bytes flowed"


async def test_500_then_success_after_retries(server: FaultServer, tmp_path: Path):
    server.serve("/f", DATA, [status(500), status(503), ok()])
    download = Download(server.url("/f"), tmp_path / "f.bin", sha256=SHA, **FAST)
    events = record(download)
    result = await download.run()
    assert result.attempts == 3 and len(server.requests_for("/f")) == 3
    retrying = [e.message for e in events if e.state is DownloadState.RETRYING]
    assert any("HTTP 500" in m for m in retrying) and any("HTTP 503" in m for m in retrying)


async def test_500_forever_fails_after_max_attempts(server: FaultServer, tmp_path: Path):
    server.serve("/f", DATA, [status(500)])
    download = Download(server.url("/f"), tmp_path / "f.bin", max_attempts=3, **FAST)
    with pytest.raises(DownloadError) as error:
        await download.run()
    assert error.value.kind == "network"
    assert "after 3 attempts" in error.value.message and "HTTP 500" in error.value.message
    assert len(server.requests_for("/f")) == 3
    assert download.state is DownloadState.FAILED
    assert not download.partial_path.exists()  # not one byte: nothing to resume


async def test_connection_refused_is_retried_then_reported(tmp_path: Path):
    with FaultServer() as gone:
        url = gone.url("/f")
    download = Download(url, tmp_path / "f.bin", max_attempts=2, **FAST)
    with pytest.raises(DownloadError) as error:
        await download.run()
    assert error.value.kind == "network" and "cannot connect" in error.value.message
    assert "connection refused" in error.value.message and "Errno" not in error.value.message
    assert "pull again" not in error.value.hint


async def test_a_host_name_that_does_not_resolve_fails_at_once_in_plain_words(tmp_path: Path):
    # `.invalid` never resolves (RFC 2606): what a machine without network sees for any host.
    url = "https://models.example.invalid/m.gguf"
    download = Download(url, tmp_path / "m.gguf", max_attempts=5, backoff_base=1, backoff_max=5)
    with pytest.raises(DownloadError) as error:
        await download.run()
    assert download.progress.attempt == 1  # no retry: the first backoff alone would be ~1 s
    assert error.value.kind == "network"
    assert error.value.message.startswith("No connection to models.example.invalid")
    assert "Errno" not in error.value.message and "pull again" not in error.value.hint


@pytest.mark.parametrize("code", [404, 410])
async def test_not_found_fails_at_once(server: FaultServer, tmp_path: Path, code: int):
    server.serve("/f", DATA, [status(code)])
    folder = tmp_path / "dl"
    with pytest.raises(DownloadError) as error:
        await Download(server.url("/f"), folder / "f.bin", **FAST).run()
    assert error.value.kind == "not_found" and f"HTTP {code}" in error.value.message
    assert len(server.requests_for("/f")) == 1
    assert list(folder.iterdir()) == []  # no partial, no state file
    with pytest.raises(DownloadError):
        await Download(server.url("/nothing-here"), tmp_path / "g.bin", **FAST).run()


@pytest.mark.parametrize("code", [401, 403])
async def test_access_denied_fails_at_once_with_a_token_hint(
    server: FaultServer, tmp_path: Path, code: int
):
    server.serve("/f", DATA, [status(code)])
    with pytest.raises(DownloadError) as error:
        await Download(server.url("/f"), tmp_path / "f.bin", **FAST).run()
    assert error.value.kind == "auth" and f"HTTP {code}" in error.value.message
    assert "HF_TOKEN" in error.value.hint
    assert len(server.requests_for("/f")) == 1


async def test_a_redirect_loop_is_a_clear_error(server: FaultServer, tmp_path: Path):
    server.redirect_loop("/loop")
    with pytest.raises(DownloadError) as error:
        await Download(server.url("/loop"), tmp_path / "f.bin", **FAST).run()
    assert error.value.kind == "redirects" and "redirect" in error.value.message
    assert 10 <= len(server.requests_for("/loop")) <= 12


async def test_wrong_content_leaves_no_usable_file(server: FaultServer, tmp_path: Path):
    server.serve("/f", DATA, [wrong_content()])
    dest = tmp_path / "f.bin"
    download = Download(server.url("/f"), dest, sha256=SHA, **FAST)
    with pytest.raises(DownloadError) as error:
        await download.run()
    got = hashlib.sha256(bytes(b ^ 0x5A for b in DATA)).hexdigest()
    assert error.value.kind == "checksum"
    assert SHA in error.value.message and got in error.value.message
    assert not dest.exists() and not download.partial_path.exists()
    assert download.state is DownloadState.FAILED


# -- digests published by the server, tokens -----------------------------------------------------


async def test_x_linked_etag_on_the_redirect_is_recorded_and_checked(tmp_path: Path):
    with FaultServer() as hub, FaultServer() as cdn:
        cdn.serve("/blob", DATA)
        hub.redirect(
            "/org/repo/resolve/main/m.gguf",
            cdn.url("/blob"),
            headers={"X-Linked-Etag": f'"{SHA}"', "ETag": f'"{SHA}"'},
        )
        download = Download(hub.url("/org/repo/resolve/main/m.gguf"), tmp_path / "m.gguf", **FAST)
        result = await download.run()
        assert result.sha256 == SHA and result.sha256_source == "server"
        assert download.server_sha256 == SHA

        # The same header with other bytes behind it: the published digest catches them.
        cdn.serve("/bad", DATA, [wrong_content()])
        hub.redirect("/bad", cdn.url("/bad"), headers={"X-Linked-Etag": f'"{SHA}"'})
        with pytest.raises(DownloadError) as error:
            await Download(hub.url("/bad"), tmp_path / "bad.gguf", **FAST).run()
        assert error.value.kind == "checksum" and "published by the server" in error.value.message
        assert not (tmp_path / "bad.gguf").exists()


async def test_without_any_digest_the_computed_one_is_reported(server: FaultServer, tmp_path: Path):
    server.serve("/f", DATA, etag=f'"{SHA}"')  # a 64-hex ETag from a non-HF host is not trusted
    result = await Download(server.url("/f"), tmp_path / "f.bin", **FAST).run()
    assert result.sha256 == SHA and result.sha256_source == "computed"


async def test_a_published_digest_contradicting_the_expected_one_stops_early(
    server: FaultServer, tmp_path: Path
):
    server.serve("/f", DATA, linked_etag=True)
    other = "0" * 64
    with pytest.raises(DownloadError) as error:
        await Download(server.url("/f"), tmp_path / "f.bin", sha256=other, **FAST).run()
    assert error.value.kind == "checksum" and other in error.value.message


async def test_hf_token_goes_to_hugging_face_hosts_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    secret = "hf_secret_token_value"
    monkeypatch.setenv("HF_TOKEN", secret)
    with FaultServer() as hub, FaultServer() as cdn:
        monkeypatch.setenv("HF_ENDPOINT", hub.base_url)
        cdn.serve("/blob", DATA)
        hub.redirect(
            "/org/repo/resolve/main/m.gguf",
            cdn.url("/blob"),
            headers={"X-Linked-Etag": f'"{SHA}"'},
        )
        download = Download("hf://org/repo/m.gguf", tmp_path / "m.gguf", **FAST)
        events = record(download)
        await download.run()
        assert hub.requests[0].headers.get("authorization") == f"Bearer {secret}"
        assert "authorization" not in cdn.requests[0].headers  # another origin: stripped
        assert all(secret not in json.dumps(e.to_dict()) for e in events)
        assert secret not in repr(download)

        monkeypatch.delenv("HF_ENDPOINT")
        cdn.serve("/plain", DATA)
        await Download(cdn.url("/plain"), tmp_path / "plain.bin", **FAST).run()
        assert "authorization" not in cdn.requests_for("/plain")[0].headers


def test_hf_urls_and_token_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_url("hf://org/repo/dir/m.gguf") == (
        "https://huggingface.co/org/repo/resolve/main/dir/m.gguf"
    )
    assert resolve_url("hf://org/repo/m.gguf@refs/pr/1") == (
        "https://huggingface.co/org/repo/resolve/refs%2Fpr%2F1/m.gguf"
    )
    for bad in ("hf://org/m.gguf", "hf://org/../m.gguf", "ftp://host/f", "file:///etc/passwd"):
        with pytest.raises(PodlabError):
            resolve_url(bad)
    monkeypatch.setenv("HF_TOKEN", "t")
    assert auth_headers("https://huggingface.co/a/b/resolve/main/c") == {
        "Authorization": "Bearer t"
    }
    assert auth_headers("https://cdn-lfs.huggingface.co/x") == {"Authorization": "Bearer t"}
    assert auth_headers("https://evil-huggingface.co/x") == {}
    assert auth_headers("https://huggingface.co.evil.com/x") == {}
    assert auth_headers("http://127.0.0.1/x") == {}


# -- the local machine: disk, TLS ----------------------------------------------------------------


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB file system (tmpfs); needs root (CI runs as root)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (the suite runs as root): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


async def test_disk_full_keeps_a_correct_partial_and_resumes(server: FaultServer, tiny_tmpfs: Path):
    # A close-delimited body: the size is unknown, so the writes run into ENOSPC for real.
    server.serve("/f", DATA, [short(len(DATA)), ok()])
    dest = tiny_tmpfs / "f.bin"
    with pytest.raises(DownloadError) as error:
        await Download(server.url("/f"), dest, sha256=SHA, **FAST).run()
    assert error.value.kind == "disk_full" and "disk full" in error.value.message
    partial = dest.with_name("f.bin.partial").read_bytes()
    assert 0 < len(partial) < len(DATA)
    assert partial == DATA[: len(partial)]  # nothing corrupted: a prefix of the real file
    assert not dest.exists()

    # Known size and too little space: refused before a byte is sent.
    with pytest.raises(DownloadError) as early:
        await Download(server.url("/f"), tiny_tmpfs / "g.bin", size=len(DATA), **FAST).run()
    assert early.value.kind == "disk_full" and "free" in early.value.message

    remount = ["mount", "-o", "remount,size=8m", str(tiny_tmpfs)]
    await asyncio.to_thread(subprocess.run, remount, check=True)
    result = await Download(server.url("/f"), dest, sha256=SHA, **FAST).run()
    assert result.resumed_from == len(partial) and dest.read_bytes() == DATA


CHILD = textwrap.dedent(
    """
    import asyncio, json, resource, signal, sys
    from podlab.core.models.download import Download, DownloadError
    limit = int(sys.argv[3])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        asyncio.run(Download(sys.argv[1], sys.argv[2], stall_seconds=2, chunk_size=65536).run())
        print(json.dumps({"ok": True}))
    except DownloadError as exc:
        print(json.dumps({"ok": False, "kind": exc.kind, "message": exc.message}))
    """
)


async def test_a_write_limit_keeps_a_correct_partial(server: FaultServer, tmp_path: Path):
    server.serve("/f", DATA)
    dest = tmp_path / "f.bin"
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", CHILD, server.url("/f"), str(dest), "700000"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["ok"] is False and outcome["kind"] == "disk_full", done.stderr
    partial = dest.with_name("f.bin.partial").read_bytes()
    assert len(partial) == 700_000 and partial == DATA[:700_000]
    result = await Download(server.url("/f"), dest, sha256=SHA, **FAST).run()
    assert result.resumed_from == 700_000 and dest.read_bytes() == DATA


async def test_tls_failure_is_clear_and_never_retried_insecurely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    cert, key = make_self_signed_cert(tmp_path / "tls")
    with FaultServer(ssl_context=server_ssl_context(cert, key)) as https:
        https.serve("/f", DATA)
        dest = tmp_path / "f.bin"
        download = Download(https.url("/f"), dest, **FAST)
        with pytest.raises(DownloadError) as error:
            await download.run()
        assert error.value.kind == "tls"
        assert "TLS verification failed" in error.value.message
        assert "SSL_CERT_FILE" in error.value.hint
        assert wait_until(lambda: https.connections == 1)
        await asyncio.sleep(0.2)
        assert https.connections == 1 and https.requests == []  # one handshake, no retry
        assert not dest.exists() and not download.partial_path.exists()

        # Trusting the certificate the documented way (a CA bundle) makes it work.
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        result = await Download(https.url("/f"), dest, sha256=SHA, **FAST).run()
        assert result.sha256 == SHA


# -- the fast read path (core/models/download/fastread.py) --------------------------------------

HTTPCORE_READ = 64 * 1024
"""What httpcore asks of the socket per read on its own."""


def spy_on_fast_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the bytes each read of the fast path returns; the real read still runs. The first
    read pauses a little, so that the server fills the socket buffer meanwhile."""
    sizes: list[int] = []
    for stream in (fastread.LargeReadStream, fastread.TLSRecordsStream):
        original = stream.read

        def read(
            self: Any, max_bytes: int, timeout: float | None = None, original: Any = original
        ) -> bytes:
            data: bytes = original(self, max_bytes, timeout)
            if not sizes:
                time.sleep(0.1)
            sizes.append(len(data))
            return data

        monkeypatch.setattr(stream, "read", read)
    return sizes


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_the_fast_read_path_carries_a_real_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tls: bool
):
    sizes = spy_on_fast_reads(monkeypatch)
    data = os.urandom(8 << 20)
    context = None
    if tls:
        cert, key = make_self_signed_cert(tmp_path / "tls")
        context = server_ssl_context(cert, key)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    with FaultServer(ssl_context=context) as running:
        running.serve("/big", data)
        dest = tmp_path / "big.bin"
        digest = hashlib.sha256(data).hexdigest()
        result = await Download(running.url("/big"), dest, sha256=digest, **FAST).run()
    assert result.sha256 == digest and dest.read_bytes() == data
    assert sum(sizes) > len(data)  # every byte of the body (and the head) came through it
    assert max(sizes) > HTTPCORE_READ  # and it read more at once than httpcore would


@pytest.mark.parametrize("internal", ["TRANSPORT_HOOK", "POOL_ATTRIBUTE"])
async def test_without_the_httpx_internals_downloads_work_the_plain_way(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, internal: str
):
    """A later httpx without the method or attribute the fast path replaces: plain httpx."""
    monkeypatch.setattr(fastread, internal, "_not_in_this_httpx")
    sizes = spy_on_fast_reads(monkeypatch)
    server.serve("/f", DATA, [cut(300_000), ok()])
    dest = tmp_path / "f.bin"
    result = await Download(server.url("/f"), dest, sha256=SHA, **FAST).run()
    assert dest.read_bytes() == DATA and result.attempts == 2 and result.resumed_from == 0
    assert ranges(server)[1] is not None  # the second attempt resumed with a Range request
    assert sizes == []  # httpx's own reads carried it all


# -- cancel and the manager ----------------------------------------------------------------------


async def test_cancel_closes_at_once_and_keeps_the_partial(server: FaultServer, tmp_path: Path):
    server.serve("/f", DATA, [slow(400_000)])
    dest = tmp_path / "f.bin"
    download = Download(server.url("/f"), dest, sha256=SHA, **FAST)
    events = record(download)
    enough = asyncio.Event()
    download.add_listener(lambda event: event.done >= 200_000 and enough.set())
    task = asyncio.create_task(download.run())
    await asyncio.wait_for(enough.wait(), 10)
    download.cancel()
    with pytest.raises(DownloadCancelled) as cancelled:
        await task
    assert "resume" in cancelled.value.hint
    assert download.state is DownloadState.CANCELLED and events[-1].state is DownloadState.CANCELLED
    kept = download.partial_path.read_bytes()
    assert len(kept) >= 200_000 and kept == DATA[: len(kept)]
    assert not dest.exists()
    assert await asyncio.to_thread(wait_until, lambda: server.active == 0, 3.0)

    server.serve("/f", DATA)
    result = await Download(server.url("/f"), dest, sha256=SHA, **FAST).run()
    assert result.resumed_from == len(kept) and dest.read_bytes() == DATA


async def test_events_iterator_ends_with_the_final_state(server: FaultServer, tmp_path: Path):
    server.serve("/f", DATA)
    download = Download(server.url("/f"), tmp_path / "f.bin", **FAST)
    seen: list[DownloadState] = []

    async def watch() -> None:
        async for event in download.events():
            seen.append(event.state)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)
    await download.run()
    await asyncio.wait_for(watcher, 5)
    assert seen[0] is DownloadState.QUEUED and seen[-1] is DownloadState.DONE


async def test_the_manager_respects_its_concurrency_cap(server: FaultServer, tmp_path: Path):
    body = DATA[:300_000]
    server.serve("/f", body, [slow(1_000_000)])
    manager = DownloadManager(max_parallel=2)
    downloads = [Download(server.url("/f"), tmp_path / f"{i}.bin", **FAST) for i in range(5)]
    first_states: list[DownloadState] = []
    most_active = 0

    def on_event(event: DownloadProgress) -> None:
        nonlocal most_active
        active = [d for d in downloads if d.state is not DownloadState.QUEUED]
        most_active = max(most_active, sum(not d.state.finished for d in active))

    for download in downloads:
        first_states.append(download.state)
        download.add_listener(on_event)
        manager.submit(download)
    assert await eventually(lambda: len(manager.running) == 2)
    assert sum(d.state is DownloadState.QUEUED for d in downloads) == 3
    results = await manager.wait()
    await manager.aclose()
    assert all(not isinstance(r, BaseException) for r in results)
    assert most_active == 2  # never more than the cap, and the cap was used
    assert 2 <= server.max_active <= 3  # server side (a finishing handler may overlap)
    assert len(server.requests_for("/f")) == 5
    assert all((tmp_path / f"{i}.bin").read_bytes() == body for i in range(5))
    assert all(state is DownloadState.QUEUED for state in first_states)


async def test_the_manager_cancels_a_queued_download(server: FaultServer, tmp_path: Path):
    server.serve("/f", DATA[:200_000], [slow(1_000_000)])
    manager = DownloadManager(max_parallel=1)
    first = Download(server.url("/f"), tmp_path / "1.bin", **FAST)
    second = Download(server.url("/f"), tmp_path / "2.bin", **FAST)
    manager.submit(first)
    queued = manager.submit(second)
    manager.cancel(second)
    with pytest.raises(DownloadCancelled):
        await queued
    assert (await manager.wait())[0] is not None
    await manager.aclose()
    assert len(server.requests_for("/f")) == 1 and first.state is DownloadState.DONE


# -- the store pulling -----------------------------------------------------------------------------


async def test_store_pull_records_the_manifest_and_reuses_the_file(
    server: FaultServer, tmp_path: Path
):
    server.serve("/files/Tiny-Q4_K_M.gguf", DATA, linked_etag=True)
    store = ModelStore(tmp_path / "models", discover=DiscoveryRoots.none())
    url = server.url("/files/Tiny-Q4_K_M.gguf")
    entry = await store.pull(url, **FAST)
    assert entry.id == "Tiny-Q4_K_M" and entry.state == READY and entry.usable
    assert entry.sha256 == SHA and entry.sha256_source == "server" and entry.url == url
    manifest = json.loads((tmp_path / "models" / "Tiny-Q4_K_M" / "manifest.json").read_text())
    assert manifest["sha256"] == SHA and manifest["size"] == len(DATA)
    again = await store.pull(url, **FAST)
    assert again.id == entry.id and len(server.requests) == 1  # already there: no request


async def test_store_pull_of_a_catalog_variant(server: FaultServer, tmp_path: Path):
    server.serve("/q4.gguf", DATA)
    variant = ModelVariant(
        id="tiny:Q4_K_M",
        url=server.url("/q4.gguf"),
        file_name="tiny-q4.gguf",
        quantization="Q4_K_M",
        sha256=SHA,
        size=len(DATA),
    )
    model = ModelInfo(id="tiny", name="Tiny", variants=(variant,))
    store = ModelStore(tmp_path / "models", discover=DiscoveryRoots.none())
    entry = await store.pull(variant, model=model, **FAST)
    assert entry.id == "tiny:Q4_K_M" and entry.catalog_id == "tiny"
    assert entry.variant_id == "tiny:Q4_K_M" and entry.quantization == "Q4_K_M"
    assert entry.sha256_source == "expected"
    # No ':' in the path: Podman's -v SRC:DST and Quadlet's Volume= split on it.
    assert entry.path == tmp_path / "models" / "tiny@Q4_K_M" / "tiny-q4.gguf"
    assert store.path_of("tiny:Q4_K_M") == entry.path
    with pytest.raises(PodlabError, match="no model"):
        store.remove("tiny@Q4_K_M")
    assert store.remove("tiny:Q4_K_M").deleted_bytes == len(DATA)
    assert store.list_models() == []


async def test_store_pull_failures_leave_nothing_usable(server: FaultServer, tmp_path: Path):
    store = ModelStore(tmp_path / "models", discover=DiscoveryRoots.none())
    server.serve("/bad.gguf", DATA, [wrong_content()])
    with pytest.raises(DownloadError):
        await store.pull(server.url("/bad.gguf"), sha256=SHA, **FAST)
    assert store.list_models() == []

    server.serve("/cut.gguf", DATA, [cut(500_000)])
    with pytest.raises(DownloadError):
        await store.pull(server.url("/cut.gguf"), max_attempts=1, **FAST)
    [entry] = store.list_models()
    assert entry.state == PARTIAL and not entry.usable and entry.done == 500_000
    with pytest.raises(PodlabError, match="not ready"):
        store.path_of(entry.id)
    assert store.disk_usage().partial == 500_000

    server.serve("/cut.gguf", DATA)
    finished = await store.pull(server.url("/cut.gguf"), **FAST)
    assert finished.usable and finished.path.read_bytes() == DATA


async def test_store_pull_refuses_unsafe_file_names(tmp_path: Path):
    store = ModelStore(tmp_path / "models", discover=DiscoveryRoots.none())
    for file_name, variant_id in (("../evil.gguf", "ok"), ("a/b.gguf", "ok"), ("m.gguf", "../x")):
        variant = ModelVariant(id=variant_id, url="https://example.invalid/m", file_name=file_name)
        with pytest.raises(PodlabError, match="not allowed"):
            await store.pull(variant)
    assert not (tmp_path / "evil.gguf").exists() and not (tmp_path / "x").exists()


# -- the command line ------------------------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    from podlab.cli import models

    parser = argparse.ArgumentParser(prog="podlab")
    models.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_pull_json_list_and_rm(server: FaultServer, capsys: pytest.CaptureFixture[str]):
    server.serve("/m.gguf", DATA, [cut(400_000), ok()])
    assert run_cli(["models", "pull", server.url("/m.gguf"), "--sha256", SHA, "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(line["event"] == "progress" for line in lines[:-1])
    assert {"connecting", "downloading", "retrying", "verifying"} <= {
        line["state"] for line in lines[:-1]
    }
    assert lines[-1]["event"] == "result" and lines[-1]["ok"] is True
    assert lines[-1]["model"]["sha256"] == SHA

    assert run_cli(["models", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["id"] for m in listed["models"] if not m["read_only"]] == ["m"]
    assert listed["disk"]["used"] == len(DATA)

    assert run_cli(["models", "list"]) == 0
    assert "ready" in capsys.readouterr().out
    assert run_cli(["models", "rm", "m"]) == 0
    assert "removed m" in capsys.readouterr().out


def test_cli_pull_plain_output_and_errors(server: FaultServer, capsys: pytest.CaptureFixture[str]):
    server.serve("/m.gguf", DATA)
    assert run_cli(["models", "pull", server.url("/m.gguf")]) == 0
    captured = capsys.readouterr()
    assert "is ready" in captured.out and "\r" not in captured.err
    server.serve("/gone.gguf", DATA, [status(404)])
    with pytest.raises(DownloadError, match="not found"):
        run_cli(["models", "pull", server.url("/gone.gguf"), "--json"])
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result == {
        "event": "result",
        "ok": False,
        "error": result["error"],
        "kind": "not_found",
    }


def test_cli_ctrl_c_keeps_the_partial_and_says_it_resumes(server: FaultServer, tmp_path: Path):
    server.serve("/big.gguf", DATA, [slow(300_000)])
    script = (
        "import argparse, sys\n"
        "from podlab.cli import models\n"
        "parser = argparse.ArgumentParser(prog='podlab')\n"
        "models.register(parser.add_subparsers(dest='command'))\n"
        "args = parser.parse_args(sys.argv[1:])\n"
        "sys.exit(args.func(args))\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, "models", "pull", server.url("/big.gguf")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    data_home = Path(os.environ["XDG_DATA_HOME"])
    partial = data_home / "podlab" / "models" / "big" / "big.gguf.partial"
    assert wait_until(lambda: partial.exists() and partial.stat().st_size > 100_000, 15)
    child.send_signal(signal.SIGINT)
    _out, err = child.communicate(timeout=15)
    assert child.returncode == 130, err
    assert "resume" in err and "Traceback" not in err
    kept = partial.read_bytes()
    assert len(kept) > 100_000 and kept == DATA[: len(kept)]


def test_bench_runs_small(tmp_path: Path) -> None:
    """The bench's figures are real measurements of this run and its summary says them."""
    assert shutil.which("curl") is not None, "curl is missing: scripts/setup.sh installs it"
    results = tmp_path / "download.json"
    bench = [sys.executable, str(REPO / "bench" / "download.py"), "--size-mib", "8"]
    done = subprocess.run(
        [*bench, "--json", str(results)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert "ratio" in done.stdout and "peak memory" in done.stdout, done.stderr
    # A small file on a busy machine may well miss the targets: the bench says so with status 1.
    record = json.loads(results.read_text())
    assert done.returncode == (0 if record["passed"] else 1), done.stderr
    assert record["figures"]["size_bytes"] == 8 * 1024 * 1024
    assert record["figures"]["podlab_peak_rss_bytes"] > 0
    seconds = record["figures"]["best_seconds"]
    for key in ("podlab", "podlab_durable", "curl", "curl_durable"):
        assert seconds[key] > 0, key
    assert seconds["podlab_durable"] >= seconds["podlab"]  # fsync and rename come after
    ratio = seconds["curl"] / seconds["podlab"]
    assert f"ratio transfer: {ratio:.2f} of curl" in done.stdout, done.stdout


def test_server_sha256_ignores_weak_and_short_etags() -> None:
    import httpx

    def response(headers: dict[str, str], host: str = "huggingface.co") -> httpx.Response:
        return httpx.Response(
            200, headers=headers, request=httpx.Request("GET", f"https://{host}/")
        )

    assert server_sha256(response({"X-Linked-Etag": f'"{SHA}"'}, "cdn.example")) == SHA
    assert server_sha256(response({"ETag": f'"{SHA}"'})) == SHA
    assert server_sha256(response({"ETag": f'W/"{SHA}"'})) is None
    assert server_sha256(response({"ETag": f'"{SHA}"'}, "example.com")) is None
    assert server_sha256(response({"ETag": '"abc123"'})) is None
