"""The model store on real files under tmp_path: import, remove, discovery, safety."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from podlab.core.errors import PodlabError
from podlab.core.models.store import (
    MISSING,
    PARTIAL,
    READY,
    DiscoveryRoots,
    ModelStore,
    check_name,
    default_hf_hub,
    default_ollama_root,
    parse_size_label,
    read_gguf_metadata,
    safe_id,
)

pytestmark = pytest.mark.unit

TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"


def write_gguf(path: Path, *, name: str = "Tiny Llama", tensors: int = 2) -> Path:
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_size_label("1.1B")
    writer.add_context_length(8192)
    writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q4_K_M))
    writer.add_chat_template(TEMPLATE)
    for index in range(tensors):
        writer.add_tensor(f"blk.{index}.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models", discover=DiscoveryRoots.none())


# -- GGUF metadata -------------------------------------------------------------------------------


def test_reads_gguf_metadata(tmp_path: Path) -> None:
    meta = read_gguf_metadata(write_gguf(tmp_path / "tiny.gguf"))
    assert meta.architecture == "llama" and meta.name == "Tiny Llama"
    assert meta.context_length == 8192 and meta.file_type == "Q4_K_M"
    assert meta.chat_template == TEMPLATE and meta.size_label == "1.1B"
    assert meta.parameters == 2 * 32 and meta.tensor_count == 2  # counted from the tensors


def test_parameters_fall_back_to_the_size_label() -> None:
    assert parse_size_label("8B") == 8_000_000_000
    assert parse_size_label("270M") == 270_000_000
    assert parse_size_label("8x7B") == 56_000_000_000
    assert parse_size_label("1.5B") == 1_500_000_000
    assert parse_size_label("big") is None and parse_size_label(None) is None


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path, store: ModelStore) -> None:
    other = tmp_path / "weights.safetensors"
    other.write_bytes(b"not a gguf file at all")
    with pytest.raises(PodlabError, match="not a GGUF file"):
        store.import_gguf(other)
    with pytest.raises(PodlabError, match="no such file"):
        store.import_gguf(tmp_path / "absent.gguf")
    assert store.list_models() == []


# -- import and remove ---------------------------------------------------------------------------


def test_import_registers_in_place_and_rm_never_deletes_the_users_file(
    tmp_path: Path, store: ModelStore
) -> None:
    user_file = write_gguf(tmp_path / "mine" / "Tiny-Q4_K_M.gguf")
    before = user_file.read_bytes()
    entry = store.import_gguf(user_file)
    assert entry.id == "Tiny-Q4_K_M" and entry.source == "imported"
    assert entry.state == READY and entry.path == user_file.resolve() and not entry.managed
    assert entry.metadata is not None and entry.metadata.architecture == "llama"
    assert entry.quantization == "Q4_K_M"
    # Not copied: the store folder holds only the manifest.
    assert [p.name for p in (tmp_path / "models" / entry.id).iterdir()] == ["manifest.json"]
    manifest = json.loads((tmp_path / "models" / entry.id / "manifest.json").read_text())
    assert manifest["imported_path"] == str(user_file.resolve()) and manifest["copied"] is False
    assert store.import_gguf(user_file).id == entry.id  # importing twice: same entry

    result = store.remove(entry.id)
    assert result.kept_path == user_file.resolve() and result.deleted_bytes == 0
    assert user_file.read_bytes() == before  # the user's file is untouched
    assert store.list_models() == [] and not (tmp_path / "models" / entry.id).exists()


def test_import_with_copy_owns_the_copy_only(tmp_path: Path, store: ModelStore) -> None:
    user_file = write_gguf(tmp_path / "mine" / "tiny.gguf")
    entry = store.import_gguf(user_file, copy=True, model_id="tiny-copy")
    assert entry.managed and entry.path == tmp_path / "models" / "tiny-copy" / "tiny.gguf"
    assert entry.path.read_bytes() == user_file.read_bytes()
    assert entry.sha256 == hashlib.sha256(user_file.read_bytes()).hexdigest()
    assert not list((tmp_path / "models" / "tiny-copy").glob("*.partial"))
    result = store.remove("tiny-copy")
    assert result.deleted_bytes == user_file.stat().st_size and result.kept_path is None
    assert not entry.path.exists() and user_file.exists()


def test_an_imported_file_that_disappears_is_missing_not_usable(
    tmp_path: Path, store: ModelStore
) -> None:
    user_file = write_gguf(tmp_path / "gone.gguf")
    store.import_gguf(user_file)
    user_file.unlink()
    [entry] = store.list_models()
    assert entry.state == MISSING and not entry.usable
    with pytest.raises(PodlabError, match="not ready"):
        store.path_of(entry.id)


def test_a_partial_download_is_listed_but_never_usable(tmp_path: Path, store: ModelStore) -> None:
    folder = tmp_path / "models" / "half"
    folder.mkdir(parents=True)
    manifest = {"id": "half", "source": "url", "file_name": "half.gguf", "size": 1000}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "half.gguf.partial").write_bytes(b"x" * 400)
    [entry] = store.list_models()
    assert entry.state == PARTIAL and not entry.usable
    assert entry.done == 400 and entry.size == 1000
    with pytest.raises(PodlabError, match="not ready: partial"):
        store.path_of("half")
    usage = store.disk_usage()
    assert usage.used == 400 and usage.partial == 400 and usage.models == 1
    assert usage.free is not None and usage.free > 0
    assert store.remove("half").deleted_bytes == 400 and not folder.exists()


def test_disk_usage_counts_own_files_and_external_ones_apart(
    tmp_path: Path, store: ModelStore
) -> None:
    user_file = write_gguf(tmp_path / "a.gguf")
    store.import_gguf(user_file)
    copied = store.import_gguf(write_gguf(tmp_path / "b.gguf"), copy=True)
    usage = store.disk_usage()
    assert usage.used == copied.size and usage.external == user_file.stat().st_size
    assert usage.partial == 0 and usage.models == 2


# -- path traversal --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["../victim", "a/b", "..", ".hidden", "x\\y", "", "a..b"])
def test_unsafe_ids_and_file_names_are_refused(bad: str) -> None:
    with pytest.raises(PodlabError, match="not allowed"):
        check_name(bad)


def test_remove_refuses_traversal_and_touches_nothing(tmp_path: Path, store: ModelStore) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "manifest.json").write_text(json.dumps({"id": "victim"}))
    (victim / "precious.gguf").write_bytes(b"GGUF")
    for bad in ("../victim", "/etc", "..", "models/../../victim"):
        with pytest.raises(PodlabError):
            store.remove(bad)
    assert (victim / "precious.gguf").exists()
    with pytest.raises(PodlabError, match="not allowed"):
        store.import_gguf(write_gguf(tmp_path / "t.gguf"), model_id="../victim")


def test_a_manifest_naming_a_file_outside_its_folder_is_ignored(
    tmp_path: Path, store: ModelStore
) -> None:
    folder = tmp_path / "models" / "sneaky"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(
        json.dumps({"id": "sneaky", "source": "url", "file_name": "../../etc/passwd"})
    )
    assert store.list_models() == []


def test_safe_id_makes_file_names_usable() -> None:
    assert safe_id("Qwen3-4B-Q4_K_M") == "Qwen3-4B-Q4_K_M"
    assert safe_id("../../etc/passwd") == "etc-passwd"
    assert safe_id("my model (v2)") == "my-model-v2"
    check_name(safe_id("..weird..name.."))


# -- discovery of other tools' stores (read-only) --------------------------------------------------


def make_ollama(root: Path) -> tuple[Path, str]:
    blob_bytes = b"GGUF" + os.urandom(64)
    digest = hashlib.sha256(blob_bytes).hexdigest()
    blob = root / "blobs" / f"sha256-{digest}"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(blob_bytes)
    config = root / "blobs" / ("sha256-" + "c" * 64)
    config.write_text("{}")
    manifest = {
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json"},
        "layers": [
            {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "c" * 64},
            {
                "mediaType": "application/vnd.ollama.image.model",
                "digest": f"sha256:{digest}",
                "size": len(blob_bytes),
            },
        ],
    }
    for path in (
        root / "manifests" / "registry.ollama.ai" / "library" / "llama3.2" / "latest",
        root / "manifests" / "registry.ollama.ai" / "someone" / "tuned" / "q4",
    ):
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(manifest))
    broken = root / "manifests" / "registry.ollama.ai" / "library" / "broken" / "latest"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    return blob, digest


def test_discovers_ollama_models_read_only(tmp_path: Path) -> None:
    root = tmp_path / "ollama"
    blob, digest = make_ollama(root)
    store = ModelStore(tmp_path / "models", discover=DiscoveryRoots(ollama=root))
    entries = store.discover()
    assert [e.id for e in entries] == ["ollama:llama3.2:latest"]  # same blob listed once
    [entry] = entries
    assert entry.path == blob and entry.sha256 == digest and entry.read_only
    assert entry.state == READY and entry.source == "ollama"
    assert store.path_of("ollama:llama3.2:latest") == blob
    with pytest.raises(PodlabError, match="Podlab only reads it"):
        store.remove("ollama:llama3.2:latest")
    assert blob.exists()


def make_hf_cache(hub: Path) -> Path:
    repo = hub / "models--TheOrg--Tiny-GGUF"
    data = b"GGUF" + os.urandom(32)
    digest = hashlib.sha256(data).hexdigest()
    blob = repo / "blobs" / digest
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    snapshot = repo / "snapshots" / ("a" * 40)
    (snapshot / "sub").mkdir(parents=True)
    (snapshot / "tiny.Q4_K_M.gguf").symlink_to(Path("../../blobs") / digest)
    (snapshot / "sub" / "dangling.gguf").symlink_to(Path("../../../blobs/absent"))
    (snapshot / "README.md").write_text("hi")
    for index in (1, 2):
        shard = repo / "blobs" / f"shard{index}"
        shard.write_bytes(b"GGUF" + bytes(10 * index))
        (snapshot / f"big-0000{index}-of-00002.gguf").symlink_to(Path("../../blobs") / shard.name)
    return blob


def test_discovers_the_hugging_face_cache(tmp_path: Path) -> None:
    hub = tmp_path / "hf" / "hub"
    blob = make_hf_cache(hub)
    store = ModelStore(tmp_path / "models", discover=DiscoveryRoots(hf_hub=hub))
    entries = {e.id: e for e in store.discover()}
    assert set(entries) == {
        "hf:TheOrg/Tiny-GGUF/tiny.Q4_K_M.gguf",
        "hf:TheOrg/Tiny-GGUF/big-00001-of-00002.gguf",
    }
    tiny = entries["hf:TheOrg/Tiny-GGUF/tiny.Q4_K_M.gguf"]
    assert tiny.path.resolve() == blob and tiny.sha256 == blob.name and tiny.read_only
    assert tiny.url == "hf://TheOrg/Tiny-GGUF/tiny.Q4_K_M.gguf@" + "a" * 40
    assert entries["hf:TheOrg/Tiny-GGUF/big-00001-of-00002.gguf"].size == (4 + 10) + (4 + 20)


def test_hf_and_ollama_locations_follow_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "OLLAMA_MODELS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_hf_hub() == tmp_path / "cache" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hfhome"))
    assert default_hf_hub() == tmp_path / "hfhome" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hubcache"))
    assert default_hf_hub() == tmp_path / "hubcache"
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "om"))
    assert default_ollama_root() == tmp_path / "om"

    make_hf_cache(tmp_path / "hubcache")
    store = ModelStore(tmp_path / "models")  # default roots, from the environment
    assert any(e.source == "huggingface" for e in store.list_models())


def test_discovers_ramalama_stores(tmp_path: Path) -> None:
    root = tmp_path / "ramalama"
    model_dir = root / "store" / "huggingface" / "org" / "tiny"
    data = b"GGUF" + os.urandom(16)
    digest = hashlib.sha256(data).hexdigest()
    blob = model_dir / "blobs" / f"sha256-{digest}"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    (model_dir / "blobs" / "sha256-template").write_text("{{ .Prompt }}")
    snapshot = model_dir / "snapshots" / f"sha256-{digest}"
    snapshot.mkdir(parents=True)
    (snapshot / "tiny.gguf").symlink_to(blob)
    (snapshot / "chat_template").symlink_to(model_dir / "blobs" / "sha256-template")
    (model_dir / "refs").mkdir()
    legacy = root / "models" / "ollama" / "old:latest"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(b"GGUF" + b"\0" * 8)

    store = ModelStore(tmp_path / "models", discover=DiscoveryRoots(ramalama=[root]))
    entries = {e.id: e for e in store.discover()}
    assert set(entries) == {
        "ramalama:huggingface/org/tiny/tiny.gguf",
        "ramalama:ollama/old:latest",
    }
    assert entries["ramalama:huggingface/org/tiny/tiny.gguf"].sha256 == digest
    assert all(e.read_only and e.state == READY for e in entries.values())


def test_discovery_never_writes(tmp_path: Path) -> None:
    root = tmp_path / "ollama"
    make_ollama(root)
    hub = tmp_path / "hub"
    make_hf_cache(hub)

    def snapshot() -> dict[str, float]:
        return {str(p): p.lstat().st_mtime for base in (root, hub) for p in sorted(base.rglob("*"))}

    before = snapshot()
    store = ModelStore(tmp_path / "models", discover=DiscoveryRoots(ollama=root, hf_hub=hub))
    store.list_models()
    store.disk_usage()
    assert snapshot() == before
    assert not (tmp_path / "models").exists()


def test_an_imported_catalog_file_is_hashed_linked_and_named_from_the_catalog(
    tmp_path: Path, store: ModelStore
) -> None:
    """The real SmolLM2 file, imported in place, matches a catalog entry whose sha256 is its
    hash: linked to that variant and named from the catalog, never from the GGUF's own name."""
    from podlab.core.models.catalog import load_catalog
    from tests import harness

    smollm2 = harness.smollm2_path()
    digest = hashlib.sha256(smollm2.read_bytes()).hexdigest()
    catalog_file = tmp_path / "mine.yaml"
    catalog_file.write_text(
        "version: 1\nmodels:\n"
        "  - id: tiny-chat\n"
        "    name: Tiny Chat 135M\n"
        "    variants:\n"
        "      - id: tiny-chat:Q4_1\n"
        "        quantization: Q4_1\n"
        "        file_name: tiny.gguf\n"
        "        url: https://example.invalid/tiny.gguf\n"
        f"        sha256: {digest}\n"
        f"        size: {smollm2.stat().st_size}\n"
    )
    catalog = load_catalog([catalog_file], include_user_dir=False, include_bundled=False).catalog

    entry = store.import_gguf(smollm2)
    assert entry.metadata is not None and entry.metadata.name  # the GGUF has its own name...
    assert entry.name == smollm2.name.removesuffix(".gguf")  # ...the file's name is used
    assert entry.variant_id is None and entry.sha256 is None

    linked = store.recognise(entry.id, catalog)
    assert linked is not None and linked.sha256 == digest and linked.sha256_source == "computed"
    assert (linked.catalog_id, linked.variant_id) == ("tiny-chat", "tiny-chat:Q4_1")
    assert linked.name == "Tiny Chat 135M" and linked.quantization == "Q4_1"
    assert linked.state == READY and linked.path == smollm2.resolve() and not linked.managed
    assert store.get(entry.id) == linked  # recorded in the manifest

    # A file that is no catalog's: hashed, not linked, still named from its file.
    other = tmp_path / "other" / "Other-Q4_K_M.gguf"
    write_gguf(other)
    alone = store.recognise(store.import_gguf(other).id, catalog)
    assert alone is not None and alone.variant_id is None and alone.name == "Other-Q4_K_M"
    assert alone.sha256 == hashlib.sha256(other.read_bytes()).hexdigest()
