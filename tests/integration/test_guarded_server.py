"""The guarded llama-cpp-python server refuses what a foreign web page sends; Podlab's clients pass.

Real server, real SmolLM2, real HTTP on 127.0.0.1: the same file the local engine and Podlab's
model-server image run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from podlab.core.resources import recipe_file
from tests import harness

pytestmark = pytest.mark.integration

KEY = "test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def guarded(smollm2_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = harness.free_port()
    log_path = tmp_path_factory.mktemp("guarded") / "server.log"
    script = recipe_file("model_servers/llamacpp_python/podlab_guarded_server.py")
    env = dict(os.environ, PODLAB_API_KEY=KEY, PODLAB_ALLOWED_ORIGINS="http://app.local:9000")
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(script), "--model", str(smollm2_model), "--host", "127.0.0.1",
             "--port", str(port), "--n_ctx", "1024", "--n_threads", "2"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log_path.read_text(errors="replace")[-2000:]
            try:
                if httpx.get(f"{base}/v1/models", timeout=2).status_code == 401:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "guarded server did not answer"
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_requests_without_the_key_are_refused(guarded: str) -> None:
    for headers in ({}, auth("wrong"), {"Authorization": f"Basic {KEY}"}):
        response = httpx.get(f"{guarded}/v1/models", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{guarded}/v1/models", headers=auth()).status_code == 200


def test_a_foreign_origin_gets_no_cors_grant(guarded: str) -> None:
    preflight = httpx.options(
        f"{guarded}/v1/chat/completions",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"},
    )  # fmt: skip
    assert preflight.status_code == 403
    assert not any(name.startswith("access-control-") for name in preflight.headers)
    # Even with the key (a page cannot have it, but the origin check stands on its own).
    read = httpx.get(f"{guarded}/v1/models", headers={**auth(), "Origin": "http://evil.example"})
    assert read.status_code == 403
    assert "access-control-allow-origin" not in read.headers


def test_own_and_allowed_origins_pass_without_a_cors_grant(guarded: str) -> None:
    own = guarded.removeprefix("http://")
    for origin in (f"http://{own}", "http://app.local:9000"):
        response = httpx.get(f"{guarded}/v1/models", headers={**auth(), "Origin": origin})
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers


def test_a_foreign_host_header_is_refused(guarded: str) -> None:
    port = guarded.rsplit(":", 1)[1]
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}"):
        response = httpx.get(f"{guarded}/v1/models", headers={**auth(), "Host": host})
        assert response.status_code == 403, host
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        response = httpx.get(f"{guarded}/v1/models", headers={**auth(), "Host": host})
        assert response.status_code == 200, host


def test_a_keyed_client_streams_a_chat(guarded: str) -> None:
    body = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8,
            "stream": True}  # fmt: skip
    with httpx.stream(
        "POST", f"{guarded}/v1/chat/completions", json=body, headers=auth(), timeout=60
    ) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert len(events) >= 2
