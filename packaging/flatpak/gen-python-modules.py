"""Write python-deps.json: Podlab's Python dependencies as Flatpak modules, from constraints.txt.

    .venv/bin/python packaging/flatpak/gen-python-modules.py [--python 3.12] [--arch x86_64 ...]

pip itself resolves what Podlab needs (`pip install --dry-run --report`, no install), for the
runtime's Python and each architecture, within the versions of constraints.txt; the report gives
every file's URL and sha256, so flatpak-builder downloads exactly those files and builds offline.
Wheels are used wherever PyPI has one; llama-cpp-python (an sdist only) is compiled in its own
module, portable (GGML_NATIVE=OFF) because the Flatpak runs on other machines' CPUs.
PyPI (or pip's cache) must be reachable while this runs; flatpak-builder then needs only the URLs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ENGINE = "llama-cpp-python"
ENGINE_EXTRA = "server"
# Portable llama.cpp builds (see ENVIRONMENT notes: a native build crashes on other CPUs).
ENGINE_CMAKE_ARGS = {
    "x86_64": "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON",
    "aarch64": "-DGGML_NATIVE=OFF",
}
OLDEST_GLIBC_MINOR = 17  # manylinux2014
RUNTIME_GLIBC_MINOR = 40  # org.freedesktop.Platform 24.08


INDEX = "https://pypi.org/simple"


def pip(*args: str) -> None:
    """pip on PyPI alone: a machine's own indexes or wheel folders (pip.conf, PIP_FIND_LINKS)
    would put URLs into the manifest that no other machine can fetch."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_CONSTRAINT"}
    }
    env["PIP_CONFIG_FILE"] = os.devnull
    subprocess.run(
        [sys.executable, "-m", "pip", *args[:1], "--index-url", INDEX, "--quiet",
         "--disable-pip-version-check", *args[1:]],
        check=True, env=env,
    )  # fmt: skip


def pip_report(args: list[str]) -> list[dict[str, Any]]:
    """What `pip install ARGS` would install, resolved by pip and installing nothing."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        pip("install", "--dry-run", "--ignore-installed", "--report", str(report), *args)
        items = list(json.loads(report.read_text())["install"])
    for item in items:
        if not item["download_info"]["url"].startswith("https://"):
            raise SystemExit(f"not a public URL: {item['download_info']['url']}")
    return items


def pinned(constraints: Path, name: str) -> str:
    for line in constraints.read_text().splitlines():
        if "==" in line and canonicalize_name(line.split("==")[0]) == canonicalize_name(name):
            return line.split("==")[1].strip()
    raise SystemExit(f"{name} is not pinned in {constraints}")


def source_of(item: dict[str, Any], arch: str | None = None) -> dict[str, Any]:
    info = item["download_info"]
    source: dict[str, Any] = {
        "type": "file",
        "url": info["url"],
        "sha256": info["archive_info"]["hashes"]["sha256"],
    }
    if arch is not None:
        source["only-arches"] = [arch]
    return source


def engine_sdist(constraints: Path, python: str) -> tuple[dict[str, Any], list[str], list[str]]:
    """llama-cpp-python's sdist, its run-time requirements (with the server extra, for the
    runtime's Python), and its build requirements (from the sdist's own pyproject.toml)."""
    spec = f"{ENGINE}[{ENGINE_EXTRA}]=={pinned(constraints, ENGINE)}"
    [item] = pip_report(["--no-deps", "--no-binary", ENGINE, spec])
    environment = {**default_environment(), "extra": ENGINE_EXTRA, "python_version": python}
    needs = []
    for text in item["metadata"].get("requires_dist", []):
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate(environment):
            requirement.marker = None  # decided here: pip would drop "extra" markers
            needs.append(str(requirement))
    with tempfile.TemporaryDirectory() as folder:
        pip("download", "--no-deps", "--no-binary", ":all:", "-d", folder, spec)
        [archive] = Path(folder).glob("*.tar.gz")
        with tarfile.open(archive) as tar:
            top = tar.getnames()[0].split("/")[0]
            member = tar.extractfile(f"{top}/pyproject.toml")
            assert member is not None
            build = tomllib.loads(member.read().decode())["build-system"]["requires"]
    return item, needs, list(build)


def wheel_args(python: str, arch: str) -> list[str]:
    platforms = [f"manylinux_2_{minor}_{arch}"
                 for minor in range(OLDEST_GLIBC_MINOR, RUNTIME_GLIBC_MINOR + 1)]  # fmt: skip
    args = ["--only-binary", ":all:", "--python-version", python, "--implementation", "cp"]
    for platform in [*platforms, f"manylinux2014_{arch}"]:
        args += ["--platform", platform]
    return args


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default="3.12", help="the runtime's Python (3.12: 24.08)")
    parser.add_argument("--arch", action="append", help="x86_64 and aarch64 by default")
    parser.add_argument("--constraints", type=Path, default=REPO / "constraints.txt")
    parser.add_argument("--output", type=Path, default=HERE / "python-deps.json")
    args = parser.parse_args()
    arches = args.arch or ["x86_64", "aarch64"]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    engine, engine_needs, engine_build = engine_sdist(args.constraints, args.python)
    wanted = [
        *project["build-system"]["requires"],  # Podlab is built in the sandbox too
        *project["project"]["dependencies"],
        *engine_needs,
        *engine_build,
    ]
    by_file: dict[str, dict[str, Any]] = {}
    names: dict[str, str] = {}
    for arch in arches:
        items = pip_report([*wheel_args(args.python, arch), "-c", str(args.constraints), *wanted])
        for item in items:
            meta = item["metadata"]
            names[canonicalize_name(meta["name"])] = f"{meta['name']}=={meta['version']}"
            source = source_of(item)
            known = by_file.setdefault(source["url"], {**source, "only-arches": []})
            known["only-arches"].append(arch)
    sources = []
    for source in by_file.values():
        if sorted(source["only-arches"]) == sorted(arches):
            del source["only-arches"]  # the same file on every architecture (a pure wheel)
        sources.append(source)
    pip_install = (
        'pip3 install --no-index --find-links="file://${PWD}" --prefix="${FLATPAK_DEST}" '
        "--no-build-isolation --no-deps"
    )
    wheels_module = {
        "name": "python-wheels",
        "buildsystem": "simple",
        "build-commands": [f"{pip_install} {' '.join(sorted(names.values()))}"],
        "sources": sorted(sources, key=lambda source: source["url"]),
    }
    engine_file = engine["download_info"]["url"].rsplit("/", 1)[1]
    module = {
        "name": "python-deps",
        "buildsystem": "simple",
        "build-options": {
            "arch": {arch: {"env": {"CMAKE_ARGS": ENGINE_CMAKE_ARGS[arch]}} for arch in arches},
        },
        "build-commands": [f"{pip_install} {engine_file}"],
        "sources": [source_of(engine)],
        "modules": [wheels_module],
    }
    header = {"//": f"Generated by packaging/flatpak/{Path(__file__).name} from constraints.txt."}
    args.output.write_text(json.dumps({**header, **module}, indent=2) + "\n")
    print(f"{args.output}: {len(names)} wheels ({', '.join(arches)}) and {engine_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
