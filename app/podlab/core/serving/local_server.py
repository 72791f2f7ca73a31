"""The local engine: llama-cpp-python's server as a subprocess, for machines without Podman.

`LocalEngine` starts `python -m llama_cpp.server` on 127.0.0.1 and a free port, detached in its
own session so that it outlives the process that started it (the CLI returns once the server
is ready; the GUI may quit and come back). Each server has a small JSON record under the state
folder (pid, port, model, log path, options, command line); after a restart a record whose pid
is alive *and* still runs that same command line is found again, and a dead one is reported as
exited (or stopped, when Podlab stopped it).
Readiness, logs and states are handled by `serving.services.ServiceManager`, the same way
for both engines; this module only owns processes, records and log files.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from podlab.core.errors import PodlabError
from podlab.core.paths import Locations, atomic_write_text, open_private_log
from podlab.core.resources import recipe_file

SERVER_MODULE = "llama_cpp.server"
"""What Podlab versions before the guard ran (their records are still recognised)."""
SERVER_SCRIPT = "podlab_guarded_server.py"
"""llama-cpp-python's server behind Podlab's guard (key, Host and Origin checks): the same file
Podlab's model-server image runs."""
PYTHON_ENV = "PODLAB_LOCAL_PYTHON"
"""Environment variable naming the Python that runs the local engine (default: Podlab's own),
e.g. a virtual environment with a llama-cpp-python built for this machine."""
REQUIRED_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "pydantic_settings")


@dataclass
class LocalRecord:
    """What Podlab remembers about one local server (the JSON file's content)."""

    id: str
    name: str
    model_ref: str
    model_file: str
    host: str
    port: int
    log_path: str
    options: dict[str, Any] = field(default_factory=dict)
    pid: int | None = None
    command: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    started: float | None = None
    stopped: bool = True
    """True after Podlab stopped it (or before the first start): a dead pid is then "stopped",
    not "exited"."""
    gpu_vendor: str = "none"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LocalRecord:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def _proc_cmdline(pid: int) -> list[str] | None:
    """The command line of a live process, None when there is none (zombies have none)."""
    proc = Path(f"/proc/{pid}/cmdline")
    if proc.parent.parent.is_dir() and Path("/proc/self").exists():
        try:
            raw = proc.read_bytes()
        except OSError:
            return None
        if not raw:
            return None
        return [part.decode(errors="replace") for part in raw.rstrip(b"\0").split(b"\0")]
    try:  # macOS and other systems without /proc
        done = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    text = done.stdout.strip()
    return text.split() if done.returncode == 0 and text else None


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return (int(fields[11]) + int(fields[12])) / ticks


def _rss_bytes(pid: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


class LocalEngine:
    """llama-cpp-python servers as detached subprocesses, remembered in JSON records."""

    def __init__(self, locations: Locations | None = None, python: str | None = None) -> None:
        self.locations = locations or Locations.default()
        self.python = python or os.environ.get(PYTHON_ENV) or sys.executable
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # ----------------------------------------------------------------- availability

    def available(self) -> tuple[bool, str]:
        """(usable, one line for people)."""
        missing = [name for name in REQUIRED_MODULES if importlib.util.find_spec(name) is None]
        if missing:
            return (
                False,
                "llama-cpp-python's server is not installed ("
                + ", ".join(missing)
                + " missing): pip install 'llama-cpp-python[server]'",
            )
        version = "unknown"
        with contextlib.suppress(Exception):
            from importlib.metadata import version as dist_version

            version = dist_version("llama_cpp_python")
        return True, f"llama-cpp-python {version} ({self.python})"

    # ----------------------------------------------------------------- records

    @property
    def records_dir(self) -> Path:
        return self.locations.state_dir / "services"

    def _record_path(self, service_id: str) -> Path:
        return self.records_dir / f"{service_id}.json"

    def save(self, record: LocalRecord) -> None:
        text = json.dumps(record.to_dict(), indent=2)
        atomic_write_text(self._record_path(record.id), text, private=True)

    def records(self) -> list[LocalRecord]:
        found: list[LocalRecord] = []
        if not self.records_dir.is_dir():
            return found
        for path in sorted(self.records_dir.glob("*.json")):
            with contextlib.suppress(OSError, ValueError, TypeError):
                found.append(LocalRecord.from_dict(json.loads(path.read_text(encoding="utf-8"))))
        return found

    def forget(self, record: LocalRecord) -> None:
        self._record_path(record.id).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            Path(record.log_path).unlink(missing_ok=True)

    def new_log_path(self, service_id: str) -> Path:
        return self.locations.log_dir / f"local-{service_id}.log"

    # ----------------------------------------------------------------- processes

    def command(
        self,
        model_file: str,
        host: str,
        port: int,
        *,
        ctx_size: int,
        gpu_layers: int,
        model_ref: str,
        threads: int | None = None,
        chat_format: str | None = None,
        extra_args: list[str] | None = None,
    ) -> list[str]:
        argv = [
            self.python, str(recipe_file(f"model_servers/llamacpp_python/{SERVER_SCRIPT}")),
            "--model", model_file,
            "--host", host,
            "--port", str(port),
            "--n_ctx", str(ctx_size),
            "--n_gpu_layers", str(gpu_layers),
            "--model_alias", model_ref,
            # By default a new request cuts the answer streaming now; queue it instead, so two
            # panes or a model-list refresh never truncate someone's answer.
            "--interrupt_requests", "false",
        ]  # fmt: skip
        if threads is not None:
            argv += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
        if chat_format:
            argv += ["--chat_format", chat_format]
        argv += extra_args or []
        return argv

    def spawn(self, record: LocalRecord, api_key: str | None = None) -> int:
        """Start the record's command detached (own session), logging to its log file; the
        server requires `api_key` (passed in its environment, never on its command line)."""
        env = dict(os.environ)
        env.pop("PODLAB_API_KEY", None)
        if api_key:
            env["PODLAB_API_KEY"] = api_key
        env["PYTHONUNBUFFERED"] = "1"
        # A crash in llama.cpp then leaves "Fatal Python error: Segmentation fault" in the log:
        # the reason stays known after the process that started the server is gone.
        env["PYTHONFAULTHANDLER"] = "1"
        with open_private_log(Path(record.log_path)) as log:
            log.write(f"podlab: {' '.join(record.command)}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    record.command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                    env=env,
                )
            except OSError as exc:
                raise PodlabError(
                    f"cannot start the local server: {exc}",
                    hint="check that llama-cpp-python's server is installed",
                ) from exc
        self._children[proc.pid] = proc
        record.pid = proc.pid
        record.started = time.time()
        record.stopped = False
        self.save(record)
        return proc.pid

    def is_alive(self, record: LocalRecord) -> bool:
        """The pid lives and still runs this server (a reused pid is not ours)."""
        if record.pid is None:
            return False
        child = self._children.get(record.pid)
        if child is not None and child.poll() is not None:
            return False
        cmdline = _proc_cmdline(record.pid)
        if not cmdline:
            return False
        joined = " ".join(cmdline)
        ours = SERVER_SCRIPT in joined or SERVER_MODULE in joined
        return ours and str(record.port) in cmdline

    def exit_code(self, record: LocalRecord) -> int | None:
        """The exit status when this process started the server and it ended."""
        child = self._children.get(record.pid or -1)
        return None if child is None else child.poll()

    async def terminate(self, record: LocalRecord, grace: float = 10.0) -> None:
        """SIGTERM the server's process group, SIGKILL after `grace` seconds."""
        record.stopped = True
        self.save(record)
        if record.pid is None or not self.is_alive(record):
            self._reap(record)
            return
        pid = record.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        killed = False
        while True:
            if not self.is_alive(record):
                break
            if not killed and time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                killed = True
            await asyncio.sleep(0.05)
        self._reap(record)

    def _reap(self, record: LocalRecord) -> None:
        child = self._children.pop(record.pid or -1, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1)

    # ----------------------------------------------------------------- logs and stats

    def log_text(self, record: LocalRecord, tail: int | None = None) -> str:
        try:
            text = Path(record.log_path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        if tail is None:
            return text
        return "\n".join(text.splitlines()[-tail:])

    async def follow_log(
        self, record: LocalRecord, *, follow: bool = False, tail: int | None = None
    ) -> AsyncIterator[str]:
        """Lines of the log; with follow, new lines as they come until the server ends."""
        path = Path(record.log_path)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except OSError:
            return
        with handle:
            data = await asyncio.to_thread(handle.read)
            pending = data.decode(errors="replace")
            *lines, pending = pending.split("\n")
            if tail is not None:
                lines = lines[-tail:]
            for line in lines:
                yield line
            while follow:
                chunk = await asyncio.to_thread(handle.read)
                if chunk:
                    pending += chunk.decode(errors="replace")
                    *lines, pending = pending.split("\n")
                    for line in lines:
                        yield line
                    continue
                if not self.is_alive(record):
                    break
                await asyncio.sleep(0.2)
            rest = (await asyncio.to_thread(handle.read)).decode(errors="replace")
            pending += rest
            for line in pending.split("\n"):
                if line:
                    yield line

    async def stats(self, record: LocalRecord) -> dict[str, Any]:
        if record.pid is None or not self.is_alive(record):
            return {"memory_bytes": None, "cpu_percent": None}
        first = _cpu_seconds(record.pid)
        await asyncio.sleep(0.25)
        second = _cpu_seconds(record.pid)
        cpu = None
        if first is not None and second is not None:
            cpu = round((second - first) / 0.25 * 100, 1)
        return {"memory_bytes": _rss_bytes(record.pid), "cpu_percent": cpu}
