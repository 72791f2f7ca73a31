"""CDI specs: reading and checking the ones Podman will use, and writing Podlab's own.

`read_cdi_specs` parses and merges every spec of the CDI folders (a broken file is reported and
skipped). `generate_cdi_spec` / `write_cdi_spec` derive a spec from the NVIDIA driver's own files
for hosts without `nvidia-ctk`; writing to /etc/cdi needs root and the user's consent (the UI
asks).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import yaml

from podlab.core.errors import PodlabError
from podlab.core.serving.gpu.host import (
    Diagnosis,
    HostProbe,
    nvidia_device_numbers,
    nvidia_driver_gpus,
)

NVIDIA_CDI_KIND = "nvidia.com/gpu"
NVIDIA_CTK_SPEC_PATH = "/etc/cdi/nvidia.yaml"
PODLAB_CDI_SPEC_PATH = "/etc/cdi/podlab-nvidia.yaml"
ACTION_GENERATE_CDI = "generate-cdi-spec"
"""`Diagnosis.action` for "let Podlab write its own CDI spec" (generate_cdi_spec + write)."""
NVIDIA_LIB_PATTERNS: tuple[str, ...] = (
    "libcuda.so*",
    "libcudadebugger.so*",
    "libnvidia-ml.so*",
    "libnvidia-ptxjitcompiler.so*",
    "libnvidia-nvvm.so*",
    "libnvidia-gpucomp.so*",
    "libnvidia-opencl.so*",
    "libnvidia-cfg.so*",
    "libnvidia-allocator.so*",
)
"""The driver's user-space libraries a CUDA program (llama.cpp, PyTorch) loads."""
NVIDIA_BINARIES: tuple[str, ...] = ("nvidia-smi", "nvidia-debugdump", "nvidia-cuda-mps-control")
NVIDIA_BIN_DIRS: tuple[str, ...] = ("/usr/bin", "/usr/local/bin", "/usr/local/nvidia/bin")
NVIDIA_CONTROL_NODES: tuple[str, ...] = (
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
)
CONTAINER_LIB_DIR = "/usr/local/nvidia/lib64"
"""Where a generated spec mounts the driver libraries: the folder CUDA base images already
list in LD_LIBRARY_PATH."""
DEFAULT_LD_LIBRARY_PATH = "/usr/local/nvidia/lib64:/usr/local/nvidia/lib"


@dataclass(frozen=True)
class CdiDevice:
    kind: str
    name: str
    source: str
    """Host path of the spec file that defines it."""

    @property
    def qualified_name(self) -> str:
        """What `podman run --device` takes, e.g. "nvidia.com/gpu=all"."""
        return f"{self.kind}={self.name}"


@dataclass(frozen=True)
class CdiSpecFile:
    path: str
    kind: str
    cdi_version: str
    devices: tuple[str, ...]
    missing_paths: tuple[str, ...] = ()
    """Host files the spec names (device nodes, mounts, hooks) that do not exist any more."""


# --------------------------------------------------------------------------- reading

_CDI_KIND_RE = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?/[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$"
)
_CDI_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.:-]*[A-Za-z0-9])?$")
_CDI_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")


def _edit_problems(edits: object, where: str) -> list[str]:
    if not isinstance(edits, dict):
        return [f"{where}: containerEdits must be a mapping"]
    problems: list[str] = []
    env = edits.get("env", [])
    if not isinstance(env, list) or not all(isinstance(e, str) and "=" in e for e in env):
        problems.append(f"{where}: env must be a list of KEY=VALUE strings")
    nodes = edits.get("deviceNodes", [])
    if not isinstance(nodes, list) or not all(
        isinstance(n, dict) and isinstance(n.get("path"), str) and n["path"].startswith("/")
        for n in nodes
    ):
        problems.append(f"{where}: every deviceNodes entry needs an absolute path")
    mounts = edits.get("mounts", [])
    if not isinstance(mounts, list) or not all(
        isinstance(m, dict)
        and isinstance(m.get("hostPath"), str)
        and isinstance(m.get("containerPath"), str)
        for m in mounts
    ):
        problems.append(f"{where}: every mounts entry needs hostPath and containerPath")
    hooks = edits.get("hooks", [])
    if not isinstance(hooks, list) or not all(
        isinstance(h, dict)
        and isinstance(h.get("hookName"), str)
        and isinstance(h.get("path"), str)
        for h in hooks
    ):
        problems.append(f"{where}: every hooks entry needs hookName and path")
    return problems


def validate_cdi_spec(spec: object) -> list[str]:
    """The problems of a CDI spec (empty when Podman can use it); checks what Podman checks."""
    if not isinstance(spec, dict):
        return ["the spec is not a mapping"]
    problems: list[str] = []
    version = spec.get("cdiVersion")
    if not isinstance(version, str) or not _CDI_VERSION_RE.match(version):
        problems.append("cdiVersion is missing or not a version like 0.5.0")
    kind = spec.get("kind")
    if not isinstance(kind, str) or not _CDI_KIND_RE.match(kind):
        problems.append("kind is missing or not vendor/class like nvidia.com/gpu")
    devices = spec.get("devices")
    if not isinstance(devices, list) or not devices:
        problems.append("devices is missing or empty")
        devices = []
    seen: set[str] = set()
    for number, device in enumerate(devices):
        if not isinstance(device, dict):
            problems.append(f"devices[{number}] is not a mapping")
            continue
        name = device.get("name")
        if not isinstance(name, str) or not _CDI_NAME_RE.match(name):
            problems.append(f"devices[{number}] has no valid name")
            continue
        if name in seen:
            problems.append(f"device {name!r} is defined twice")
        seen.add(name)
        edits = device.get("containerEdits")
        if not edits:
            problems.append(f"device {name!r} has no containerEdits")
        else:
            problems += _edit_problems(edits, f"device {name!r}")
    if "containerEdits" in spec:
        problems += _edit_problems(spec["containerEdits"], "containerEdits")
    return problems


def _spec_paths(spec: dict[str, Any]) -> list[str]:
    """Every host path a (valid) spec refers to."""
    edit_sets = [spec.get("containerEdits") or {}]
    edit_sets += [d.get("containerEdits") or {} for d in spec.get("devices", [])]
    paths: list[str] = []
    for edits in edit_sets:
        paths += [n.get("hostPath") or n["path"] for n in edits.get("deviceNodes", [])]
        paths += [m["hostPath"] for m in edits.get("mounts", [])]
        paths += [h["path"] for h in edits.get("hooks", [])]
    return list(dict.fromkeys(paths))


def _parse_error(exc: Exception) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        return f"{exc.problem} (line {exc.problem_mark.line + 1})"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_cdi_specs(probe: HostProbe) -> tuple[list[CdiSpecFile], list[CdiDevice], list[Diagnosis]]:
    """Parse and merge every *.yaml and *.json spec in the CDI folders.

    A broken file is reported and skipped, the others are used. A device defined in two files
    of the same folder is a conflict Podman refuses; the later folder overrides the earlier.
    """
    files: list[CdiSpecFile] = []
    diagnoses: list[Diagnosis] = []
    merged: dict[str, CdiDevice] = {}
    for cdi_dir in probe.cdi_dirs:
        in_dir: dict[str, CdiDevice] = {}
        for path in probe.glob(cdi_dir, "*"):
            host = probe.host_path(path)
            if path.suffix == ".yml":
                diagnoses.append(
                    Diagnosis(
                        "warning",
                        f"CDI spec {host} is ignored by Podman: only .yaml and .json files count",
                        fix=f"Rename it to {host[:-4]}.yaml",
                    )
                )
                continue
            if path.suffix not in (".yaml", ".json") or not path.is_file():
                continue
            try:
                text = path.read_text(encoding="utf-8")
                data: object = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
            except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
                problems = [f"cannot be parsed: {_parse_error(exc)}"]
            else:
                problems = validate_cdi_spec(data)
            if problems:
                diagnoses.append(
                    Diagnosis(
                        "warning",
                        f"CDI spec {host} is broken and was skipped: {'; '.join(problems)}",
                        fix=f"Fix or remove {host} (the other CDI specs are still used)",
                    )
                )
                continue
            spec = cast(dict[str, Any], data)
            kind = str(spec["kind"])
            names = tuple(str(d["name"]) for d in spec["devices"])
            missing = tuple(p for p in _spec_paths(spec) if not probe.exists(p))
            files.append(CdiSpecFile(host, kind, str(spec["cdiVersion"]), names, missing))
            for name in names:
                device = CdiDevice(kind, name, host)
                earlier = in_dir.get(device.qualified_name)
                if earlier is not None:
                    diagnoses.append(
                        Diagnosis(
                            "error",
                            f"CDI device {device.qualified_name} is defined in both "
                            f"{earlier.source} and {host}; Podman refuses conflicting devices",
                            fix=f"Remove one of the two files (keep {earlier.source})",
                        )
                    )
                    continue
                in_dir[device.qualified_name] = device
        merged.update(in_dir)
    return files, list(merged.values()), diagnoses


def ctk_command(output: str = NVIDIA_CTK_SPEC_PATH) -> list[str]:
    """The NVIDIA Container Toolkit's own way to write a spec (run as root)."""
    return ["nvidia-ctk", "cdi", "generate", f"--output={output}"]


# --------------------------------------------------------------------------- generation


def _nvidia_libraries(probe: HostProbe) -> list[str]:
    found: dict[str, str] = {}
    seen_dirs: set[Path] = set()
    for lib_dir in probe.lib_dirs:
        folder = probe.path(lib_dir)
        try:
            real = folder.resolve()
        except OSError:
            continue
        if real in seen_dirs or not folder.is_dir():
            continue
        seen_dirs.add(real)
        for pattern in NVIDIA_LIB_PATTERNS:
            for path in sorted(folder.glob(pattern)):
                if path.name not in found and (path.is_file() or path.is_symlink()):
                    found[path.name] = f"{lib_dir.rstrip('/')}/{path.name}"
    return list(found.values())


def _nvidia_binaries(probe: HostProbe) -> list[str]:
    binaries: list[str] = []
    for name in NVIDIA_BINARIES:
        path = probe.which(name) or next(
            (f"{d}/{name}" for d in NVIDIA_BIN_DIRS if probe.path(f"{d}/{name}").is_file()), None
        )
        if path is not None:
            binaries.append(path)
    return binaries


def generate_cdi_spec(
    probe: HostProbe | None = None, ld_library_path: str | None = DEFAULT_LD_LIBRARY_PATH
) -> dict[str, Any]:
    """A CDI spec (kind nvidia.com/gpu, devices "all" and one per /dev/nvidiaN) made from the
    driver's own files, for hosts without nvidia-ctk. Same shape as `nvidia-ctk cdi generate`,
    minus its hooks: the driver libraries are bind-mounted read-only into
    /usr/local/nvidia/lib64 (the folder CUDA images already search) and LD_LIBRARY_PATH is set
    to it (pass ld_library_path=None to leave the image's own value alone). Devices are named
    by their /dev/nvidiaN number, and also by UUID where /proc/driver/nvidia tells it.

    Raises PodlabError when the host has no NVIDIA device node or no libcuda.
    """
    probe = probe or HostProbe()
    numbers = nvidia_device_numbers(probe)
    if not numbers:
        raise PodlabError(
            "No NVIDIA device node (/dev/nvidia0, ...) found; cannot write a CDI spec",
            hint="Is the NVIDIA kernel driver loaded? nvidia-smi should list the GPU",
        )
    libraries = _nvidia_libraries(probe)
    if not any(Path(lib).name.startswith("libcuda.so") for lib in libraries):
        raise PodlabError(
            "The NVIDIA driver library libcuda.so was not found; cannot write a CDI spec",
            hint=f"Looked in {', '.join(probe.lib_dirs)}",
        )
    options = ["ro", "nosuid", "nodev", "bind"]
    uuids = {gpu.index: gpu.uuid for gpu in nvidia_driver_gpus(probe) if gpu.uuid}
    devices: list[dict[str, Any]] = []
    for number in numbers:
        edits = {"deviceNodes": [{"path": f"/dev/nvidia{number}"}]}
        devices.append({"name": str(number), "containerEdits": edits})
        if number in uuids:
            devices.append({"name": uuids[number], "containerEdits": edits})
    devices.append(
        {
            "name": "all",
            "containerEdits": {"deviceNodes": [{"path": f"/dev/nvidia{n}"} for n in numbers]},
        }
    )
    env = ["NVIDIA_VISIBLE_DEVICES=void"]
    if ld_library_path:
        env.append(f"LD_LIBRARY_PATH={ld_library_path}")
    mounts = [
        {
            "hostPath": lib,
            "containerPath": f"{CONTAINER_LIB_DIR}/{Path(lib).name}",
            "options": list(options),
        }
        for lib in libraries
    ]
    mounts += [
        {
            "hostPath": binary,
            "containerPath": f"/usr/bin/{Path(binary).name}",
            "options": list(options),
        }
        for binary in _nvidia_binaries(probe)
    ]
    return {
        "cdiVersion": "0.5.0",
        "kind": NVIDIA_CDI_KIND,
        "devices": devices,
        "containerEdits": {
            "env": env,
            "deviceNodes": [{"path": p} for p in NVIDIA_CONTROL_NODES if probe.exists(p)],
            "mounts": mounts,
        },
    }


def write_cdi_spec(spec: Mapping[str, Any], path: str | Path = PODLAB_CDI_SPEC_PATH) -> Path:
    """Write a CDI spec atomically (YAML, or JSON for a .json path), readable by every user.

    Only call it after the user agreed: /etc/cdi belongs to root. Raises PodlabError when the
    spec is invalid or the folder is not writable.
    """
    problems = validate_cdi_spec(dict(spec))
    if problems:
        raise PodlabError(f"Refusing to write an invalid CDI spec: {'; '.join(problems)}")
    target = Path(path)
    if target.suffix == ".json":
        text = json.dumps(dict(spec), indent=2) + "\n"
    else:
        text = "# Written by Podlab from the NVIDIA driver's files.\n" + yaml.safe_dump(
            dict(spec), sort_keys=False
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except PermissionError as exc:
        raise PodlabError(
            f"Cannot write {target}: permission denied",
            hint="CDI specs live in a folder of root: run the fix as administrator",
        ) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), 0o644)  # rootless Podman must read it
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target
