"""The Flatpak manifest, read offline by flatpak-builder itself, and its generated Python modules.

No JSON schema of the manifest format is available offline; flatpak-builder's own reader is the
check instead: it names every property it does not know ("Unknown property …") on stderr.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
FLATPAK = ROOT / "packaging" / "flatpak"
MANIFEST = FLATPAK / "io.github.podlab.Podlab.yml"
APP_ID = "io.github.podlab.Podlab"
NEEDED_PERMISSIONS = {
    "--socket=wayland",
    "--socket=fallback-x11",
    "--share=ipc",
    "--device=dri",
    "--share=network",
    "--filesystem=xdg-run/podman:ro",
    "--talk-name=org.freedesktop.Flatpak",
}


def shown_manifest(cwd: Path) -> dict[str, object]:
    """flatpak-builder's own reading (it keeps a .flatpak-builder state folder in `cwd`)."""
    result = subprocess.run(
        ["flatpak-builder", "--show-manifest", str(MANIFEST)],
        capture_output=True, text=True, timeout=60, check=False, cwd=cwd,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Unknown property" not in result.stderr, result.stderr
    assert result.stderr.strip() == "", result.stderr
    return dict(json.loads(result.stdout))


def pins(text: str) -> dict[str, str]:
    found = re.findall(r"([A-Za-z0-9_.\-]+)==([^\s\"]+)", text)
    return {canonicalize_name(name): version for name, version in found}


def test_flatpak_builder_reads_the_manifest_with_its_python_modules(tmp_path: Path) -> None:
    manifest = shown_manifest(tmp_path)
    assert manifest["id"] == APP_ID and manifest["command"] == "podlab"
    modules = manifest["modules"]
    assert isinstance(modules, list)
    [deps, podlab] = modules
    assert deps["name"] == "python-deps"  # python-deps.json, included and parsed
    assert [module["name"] for module in deps["modules"]] == ["python-wheels"]
    assert podlab["name"] == "podlab"
    assert set(manifest["finish-args"]) >= NEEDED_PERMISSIONS  # type: ignore[arg-type]


def test_every_sandbox_permission_says_why() -> None:
    """Each finish-arg (or group of them) comes right after a comment giving the reason."""
    lines = MANIFEST.read_text().splitlines()
    start = lines.index("finish-args:") + 1
    block = []
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        block.append(line.strip())
    args = [index for index, line in enumerate(block) if line.startswith("- --")]
    assert len(args) >= len(NEEDED_PERMISSIONS)
    for index in args:
        above = index - 1
        while above >= 0 and block[above].startswith("- --"):
            above -= 1
        assert above >= 0 and block[above].startswith("#"), f"no reason given for {block[index]}"


def test_python_modules_are_pinned_public_files_matching_the_constraints() -> None:
    deps = json.loads((FLATPAK / "python-deps.json").read_text())
    [wheels] = deps["modules"]
    sources = deps["sources"] + wheels["sources"]
    for source in sources:
        assert source["url"].startswith("https://files.pythonhosted.org/"), source["url"]
        assert re.fullmatch(r"[0-9a-f]{64}", source["sha256"]), source
        assert set(source.get("only-arches", ["x86_64"])) <= {"x86_64", "aarch64"}
    for arch in ("x86_64", "aarch64"):  # Qt, the largest compiled wheel, for both architectures
        for_arch = [s for s in sources if arch in s.get("only-arches", [arch])]
        assert any("/pyside6_essentials-" in s["url"] for s in for_arch), arch
    installed = pins(" ".join(wheels["build-commands"]))
    constrained = pins((ROOT / "constraints.txt").read_text())
    for name, version in installed.items():
        assert constrained.get(name, version) == version, f"{name}: regenerate python-deps.json"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = {canonicalize_name(Requirement(text).name) for text in project["dependencies"]}
    assert needed <= set(installed), needed - set(installed)
    [engine] = deps["sources"]
    assert engine["url"].endswith(f"llama_cpp_python-{constrained['llama-cpp-python']}.tar.gz")


def test_podman_in_the_sandbox_is_the_hosts() -> None:
    wrapper = FLATPAK / "podman"
    assert wrapper.stat().st_mode & 0o111
    assert 'exec flatpak-spawn --host podman "$@"' in wrapper.read_text()


def test_file_dialogs_can_go_through_the_portal() -> None:
    """A Qt dialog forced to be Qt's own never reaches the file chooser portal in a sandbox."""
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "app" / "podlab").rglob("*.py")
        if "DontUseNativeDialog" in path.read_text()
    ]
    assert offenders == []
