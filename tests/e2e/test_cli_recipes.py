"""`podlab recipe list|show|validate|import` as a user runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

UPSTREAM = Path(__file__).parents[1] / "data" / "recipes" / "ai-lab-recipes"
UPSTREAM_RAG = UPSTREAM / "recipes" / "natural_language_processing" / "rag"


def podlab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "podlab", "recipe", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_list() -> None:
    result = podlab("list")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[:3] == ["ID", "NAME", "CATEGORY"]
    assert [row.split()[0] for row in rows] == ["chatbot", "rag", "summarizer"]
    assert "RAG chatbot" in rows[1] and "llama-cpp" in rows[1]


def test_list_json() -> None:
    result = podlab("list", "--json")
    assert result.returncode == 0, result.stderr
    recipes = json.loads(result.stdout)
    assert [r["id"] for r in recipes] == ["chatbot", "rag", "summarizer"]
    rag = recipes[1]
    assert rag["categories"] == ["natural-language-processing"]
    assert rag["backend"] == "llama-cpp"
    assert "smollm2-135m-instruct" in rag["recommended"]
    assert Path(rag["folder"], "ai-lab.yaml").is_file()


def test_show() -> None:
    result = podlab("show", "rag")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "name:" in out and "RAG chatbot" in out
    for container in ("llamacpp-server", "embedding-server", "chromadb-server", "rag-app"):
        assert container in out
    assert "embedding-service" in out
    assert "# RAG chatbot" in out  # the readme follows
    as_json = json.loads(podlab("show", "summarizer", "--json").stdout)
    assert [c["role"] for c in as_json["application"]["containers"]] == ["model-service", "app"]


def test_show_unknown_recipe() -> None:
    result = podlab("show", "nope")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "podlab: error: no recipe 'nope'",
        "hint: known recipes: chatbot, rag, summarizer",
    ]


def test_validate_a_good_recipe() -> None:
    result = podlab("validate", str(UPSTREAM_RAG))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"{UPSTREAM_RAG / 'ai-lab.yaml'}: valid (rag-demo: llamacpp-server (model-service), "
        "chromadb-server (vectordb), rag-inference-app (app))"
    )


def test_validate_prints_every_problem_as_file_line(tmp_path: Path) -> None:
    copy = tmp_path / "ai-lab.yaml"
    shutil.copy(UPSTREAM_RAG / "ai-lab.yaml", copy)
    text = copy.read_text().replace("version: v1.0\n", "").replace("- 8501", "- 8000")
    copy.write_text(text)
    result = podlab("validate", str(copy))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{copy}:1: no 'version' (this format is 'version: v1.0')",
        f"{copy}:7: container 'llamacpp-server': context folder "
        f"'../../../model_servers/llamacpp_python' does not exist "
        f"({(tmp_path / '../../../model_servers/llamacpp_python').resolve()})",
        f"{copy}:19: container 'chromadb-server': context folder '../../../vector_dbs/chromadb' "
        f"does not exist ({(tmp_path / '../../../vector_dbs/chromadb').resolve()})",
        f"{copy}:29: container 'rag-inference-app': context folder 'app' does not exist "
        f"({tmp_path / 'app'})",
        f"{copy}:35: containers 'chromadb-server' and 'rag-inference-app' both use port 8000; "
        "containers of one pod share its ports",
        "5 problems",
    ]
    # Without the context check only the file's own problems remain.
    result = podlab("validate", "--no-context-check", str(copy))
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 3


def test_import_then_list(tmp_path: Path) -> None:
    checkout = tmp_path / "ai-lab-recipes"
    shutil.copytree(UPSTREAM, checkout)
    result = podlab("import", str(checkout))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        f"imported chatbot (ChatBot_Streamlit) from "
        f"{checkout / 'recipes' / 'natural_language_processing' / 'chatbot'}"
    )
    listed = json.loads(podlab("list", "--json").stdout)
    chatbot = next(r for r in listed if r["id"] == "chatbot")
    assert chatbot["name"] == "ChatBot_Streamlit"
    assert chatbot["origin"].startswith(str(checkout))
