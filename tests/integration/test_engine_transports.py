"""Every Engine call over a unix socket and over ssh:// (a real sshd forwarding the real
Podman socket): doctor, build, labels, pull errors, containers, logs, stats, inspect, removal."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from podlab.core.errors import PodlabError
from podlab.core.serving.engine import Engine
from tests import harness

pytestmark = pytest.mark.integration

TICKER = (
    "trap 'exit 0' TERM; echo podlab-hello; i=0; "
    "while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"
)


def ssh_children() -> list[int]:
    """Process ids of the ssh clients this test process started (the tunnels)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        if name == "ssh" and parent == os.getpid():
            found.append(int(entry.name))
    return found


@pytest.fixture(params=["unix", "ssh"])
def podman_url(
    request: pytest.FixtureRequest,
    podman_env: harness.PodmanService,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """The test Podman service's URL, straight or through the test sshd, as CONTAINER_HOST."""
    if request.param == "unix":
        url = podman_env.url
    else:
        sshd: harness.SshServer = request.getfixturevalue("ssh_server")
        url = sshd.url_for(podman_env.socket_path)
        monkeypatch.setenv("CONTAINER_SSHKEY", str(sshd.identity))
    monkeypatch.setenv("CONTAINER_HOST", url)
    return url


def test_every_engine_call_over_the_transport(
    podman_url: str,
    base_image: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    podman_client: Any,
) -> None:
    import podlab.cli as cli

    kind = podman_url.split(":", 1)[0]
    with_serve = tuple(dict.fromkeys((*cli.COMMAND_MODULES, "serve")))
    monkeypatch.setattr(cli, "COMMAND_MODULES", with_serve)
    assert cli.main(["doctor", "--json"]) in (0, 1)
    doctor = json.loads(capsys.readouterr().out)["podman"]
    assert doctor["available"], doctor
    assert (doctor["url"], doctor["transport"], doctor["limits"]) == (podman_url, kind, "")
    assert ssh_children() == [], "doctor left an SSH tunnel running"

    tag = f"localhost/podlab-test/transport-{kind}:{os.getpid()}"
    name = f"podlab-test-transport-{kind}-{os.getpid()}"
    (tmp_path / "Containerfile").write_text(f"FROM {base_image}\nRUN echo built-over-{kind}\n")
    try:
        asyncio.run(_engine_calls(podman_url, kind, tag, name, tmp_path))
    finally:
        for container in podman_client.containers.list(all=True, filters={"name": name}):
            container.remove(force=True)
        if podman_client.images.exists(tag):
            podman_client.images.remove(tag, force=True)
    assert ssh_children() == [], "aclose() left an SSH tunnel running"


async def _engine_calls(url: str, kind: str, tag: str, name: str, context: Path) -> None:
    engine = Engine()
    status = await engine.connect()
    assert status.available, status.problem
    assert (status.url, status.transport) == (url, kind)
    assert len(ssh_children()) == (1 if kind == "ssh" else 0)
    try:
        lines = [
            line
            async for line in engine.build(
                context, tag, pull="never", labels={"podlab.transport": kind}
            )
        ]
        assert f"built-over-{kind}" in lines, lines
        assert await engine.image_exists(tag)
        assert (await engine.image_labels(tag))["podlab.transport"] == kind

        absent = "127.0.0.1:1/podlab/absent:1"  # nothing listens on port 1
        with pytest.raises(PodlabError, match=re.escape(f"cannot pull {absent}: ")):
            async for _ in engine.pull(absent):
                pass

        client = engine.client()
        container = await engine.call(
            client.containers.create,
            image=tag,
            name=name,
            command=["/bin/sh", "-c", TICKER],
            labels={"podlab.transport": kind},
        )
        await engine.call(container.start)
        state = await engine.container_state(name)
        assert state is not None and state["Running"] is True

        seen: list[str] = []
        async with asyncio.timeout(30):
            async for line in engine.container_logs(name, follow=True):
                seen.append(line)
                if line == "tick 3":
                    break  # a follower stops whenever it likes
        assert seen[:2] == ["podlab-hello", "tick 0"], seen
        tail = await engine.container_log_text(name, tail=2)
        assert len(tail.splitlines()) == 2 and tail.startswith("tick "), tail

        stats = await engine.container_stats(name)
        assert isinstance(stats["memory_bytes"], int) and stats["memory_bytes"] > 0, stats
        assert isinstance(stats["cpu_percent"], float), stats

        started = time.monotonic()
        await engine.call(container.stop, timeout=5)
        assert time.monotonic() - started < 5, "the ticker exits on SIGTERM"
        state = await engine.container_state(name)
        assert state is not None and state["Running"] is False
        await engine.call(container.remove, force=True)
        assert await engine.container_state(name) is None
        with pytest.raises(PodlabError, match=f"no container {name}"):
            await engine.container_log_text(name)
    finally:
        await engine.aclose()


async def test_ssh_key_not_accepted_is_said_at_once(
    podman_env: harness.PodmanService, ssh_server: harness.SshServer, tmp_path: Path
) -> None:
    stranger = tmp_path / "stranger"
    harness.make_ssh_key(stranger)
    url = ssh_server.url_for(podman_env.socket_path)
    engine = Engine(url=url, ssh_identity=str(stranger))
    started = time.monotonic()
    status = await engine.connect()
    assert time.monotonic() - started < 15
    assert not status.available
    assert status.problem.startswith(f"cannot open an SSH connection for {url}: ")
    assert "Permission denied" in status.problem
    assert "ssh-agent" in status.hint
    assert ssh_children() == []


async def test_ssh_to_a_missing_socket_does_not_answer(
    ssh_server: harness.SshServer, tmp_path: Path
) -> None:
    url = ssh_server.url_for(tmp_path / "none.sock")
    status = await Engine(url=url, ssh_identity=str(ssh_server.identity)).connect()
    assert not status.available
    assert status.problem == f"Podman does not answer at {url} (from Engine(url=...))"
    assert ssh_children() == []
