"""The harness's real parts work: a container answers on loopback, a llama server answers."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from tests import harness

pytestmark = pytest.mark.integration

# perl-base is in every Debian image, so a one-line HTTP server needs no build and no pull.
PERL_HTTP_SERVER = (
    "use IO::Socket::INET; "
    "my $s = IO::Socket::INET->new(LocalPort => 8080, Listen => 5, ReuseAddr => 1) or die $!; "
    "while (my $c = $s->accept) { <$c>; "
    'print $c "HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\nhello from podlab\\n"; '
    "close $c }"
)


def test_container_from_local_base_image_answers_on_loopback(
    podman_client: Any, base_image: str
) -> None:
    port = harness.free_port()
    container = podman_client.containers.run(
        base_image,
        ["perl", "-e", PERL_HTTP_SERVER],
        name=f"podlab-test-{uuid.uuid4().hex[:8]}",
        ports={"8080/tcp": ("127.0.0.1", port)},
        labels={"podlab.test": "harness"},
        detach=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert response.status_code == 200
        assert response.text == "hello from podlab\n"
        container.reload()
        bindings = container.attrs["HostConfig"]["PortBindings"]["8080/tcp"]
        assert bindings == [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
    finally:
        container.remove(force=True)


def test_llama_server_with_smollm2_answers_a_chat_completion(
    smollm2_server: harness.LlamaServer,
) -> None:
    response = httpx.post(
        f"{smollm2_server.base_url}/v1/chat/completions",
        json={
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "What is the capital of France? Answer in one word."},
            ],
            "temperature": 0,
            "max_tokens": 32,
            "seed": 1,
        },
        timeout=60,
    )
    assert response.status_code == 200
    answer = response.json()["choices"][0]["message"]["content"]
    assert "Paris" in answer


def test_gemma3_completion_streams_text(gemma3_server: harness.LlamaServer) -> None:
    response = httpx.post(
        f"{gemma3_server.base_url}/v1/completions",
        json={"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0},
        timeout=60,
    )
    assert response.status_code == 200
    assert response.json()["choices"][0]["text"].strip() != ""
