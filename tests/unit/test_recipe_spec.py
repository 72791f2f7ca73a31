"""ai-lab.yaml parsing: the real upstream files, Podlab's own recipes, and broken files refused
with `file:line: problem`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from podlab.core.recipes.spec import (
    ContainerRole,
    RecipeSpecError,
    load_recipe_spec,
)

pytestmark = pytest.mark.unit

UPSTREAM = Path(__file__).parents[1] / "data" / "recipes" / "ai-lab-recipes"
UPSTREAM_NLP = UPSTREAM / "recipes" / "natural_language_processing"


def test_upstream_rag_file_reads_every_field() -> None:
    spec = load_recipe_spec(UPSTREAM_NLP / "rag" / "ai-lab.yaml")
    assert (spec.version, spec.type, spec.name) == ("v1.0", "language", "rag-demo")
    assert spec.description == "A RAG chat bot using local documents."
    server, chroma, app = spec.containers
    assert server.role is ContainerRole.MODEL_SERVICE
    assert server.backends == ("llama-cpp",)
    assert server.context_dir == (UPSTREAM / "model_servers" / "llamacpp_python").resolve()
    assert server.containerfile == server.context_dir / "base" / "Containerfile"
    assert server.ports == (8001,)
    assert server.arch == ("arm64", "amd64")
    assert server.image == "quay.io/ai-lab/llamacpp_python:latest"
    assert chroma.role is ContainerRole.VECTORDB and chroma.ports == (8000,)
    assert app.role is ContainerRole.APP and app.name == "rag-inference-app"
    assert app.containerfile == (UPSTREAM_NLP / "rag" / "app" / "Containerfile").resolve()
    assert spec.model_service is server
    assert spec.backends == ("llama-cpp",)
    assert server.line < chroma.line < app.line


@pytest.mark.parametrize("name", ["chatbot", "summarizer"])
def test_upstream_two_container_files(name: str) -> None:
    spec = load_recipe_spec(UPSTREAM_NLP / name)  # the folder works as well as the file
    assert [c.role for c in spec.containers] == [ContainerRole.MODEL_SERVICE, ContainerRole.APP]
    assert [c.ports for c in spec.containers] == [(8001,), (8501,)]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ai-lab.yaml"
    path.write_text(textwrap.dedent(text))
    (tmp_path / "app").mkdir(exist_ok=True)
    (tmp_path / "app" / "Containerfile").write_text("FROM scratch\n")
    return path


def problems(path: Path, check_context: bool = True) -> list[str]:
    with pytest.raises(RecipeSpecError) as caught:
        load_recipe_spec(path, check_context=check_context)
    return [p.message for p in caught.value.problems]


GOOD = """\
version: v1.0
application:
  type: language
  name: demo
  description: d
  containers:
    - name: server
      contextdir: app
      containerfile: Containerfile
      model-service: true
      backend: [llama-cpp]
      ports: [8001]
    - name: web
      contextdir: app
      containerfile: Containerfile
      ports: [8501]
"""


def test_a_good_file_loads(tmp_path: Path) -> None:
    spec = load_recipe_spec(write(tmp_path, GOOD))
    assert [c.name for c in spec.containers] == ["server", "web"]


def test_no_version(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("version: v1.0\n", ""))
    assert problems(path) == [f"{path}:1: no 'version' (this format is 'version: v1.0')"]


def test_wrong_version(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("v1.0", "v2.0"))
    assert problems(path) == [f"{path}:1: unsupported version 'v2.0' (supported: v1.0)"]


def test_unknown_key_names_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path, GOOD.replace("      ports: [8501]\n", "      ports: [8501]\n      env: x\n")
    )
    assert problems(path) == [f"{path}:17: unknown key 'env' in a container"]


def test_missing_context_folder_and_containerfile(tmp_path: Path) -> None:
    text = GOOD.replace(
        "contextdir: app\n      containerfile: Containerfile\n      ports",
        "contextdir: nowhere\n      containerfile: Containerfile\n      ports",
    )
    text = text.replace(
        "containerfile: Containerfile\n      model-service",
        "containerfile: Other\n      model-service",
    )
    path = write(tmp_path, text)
    assert problems(path) == [
        f"{path}:9: container 'server': containerfile 'Other' does not exist in 'app'",
        f"{path}:14: container 'web': context folder 'nowhere' does not exist "
        f"({tmp_path / 'nowhere'})",
    ]
    # Without the context check, only the file itself is judged.
    assert load_recipe_spec(path, check_context=False).containers[1].name == "web"


def test_two_containers_on_one_port(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("[8501]", "[8001]"))
    assert problems(path) == [
        f"{path}:16: containers 'server' and 'web' both use port 8001; "
        "containers of one pod share its ports"
    ]


def test_many_problems_are_reported_together(tmp_path: Path) -> None:
    text = GOOD.replace("name: web", "name: server").replace("[8501]", "[0, 8502]")
    text = text.replace("type: language", "type: poetry")
    path = write(tmp_path, text)
    assert problems(path) == [
        f"{path}:3: unknown application type 'poetry' (known: language, audio, vision, multimodal)",
        f"{path}:16: port 0 must be a number from 1 to 65535",
        f"{path}:13: two containers named 'server' (first on line 7)",
    ]


def test_context_and_containerfile_must_stay_where_they_belong(tmp_path: Path) -> None:
    text = GOOD.replace(
        "contextdir: app\n      containerfile: Containerfile\n      ports",
        "contextdir: /etc\n      containerfile: ../../passwd\n      ports",
    )
    path = write(tmp_path, text)
    found = problems(path, check_context=False)
    assert found == [
        f"{path}:14: container 'web': contextdir must be relative to the recipe folder",
        f"{path}:15: container 'web': containerfile '../../passwd' must be inside its contextdir",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "1: is empty"),
        ("version: v1.0\napplication: [\n", "3: is not valid YAML"),
        ("- a list\n", "1: the file must be a mapping with 'version' and 'application'"),
        ("version: v1.0\nversion: v1.0\n", "2: duplicate key 'version'"),
        ("a: &x [1]\nb: *x\n", "anchors and aliases are not supported"),
        (
            "version: v1.0\napplication:\n  name: x\n  containers: []\n",
            "4: 'containers' must be a non-empty list",
        ),
    ],
)
def test_broken_files(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "ai-lab.yaml"
    path.write_text(text)
    found = problems(path)
    assert any(p.startswith(f"{path}:") and expected in p for p in found), found


def test_roles(tmp_path: Path) -> None:
    text = GOOD + (
        "    - name: embed\n      contextdir: app\n      embedding-service: true\n"
        "      ports: [8002]\n"
        "    - name: db\n      contextdir: app\n      vectordb: true\n      model-service: true\n"
    )
    path = write(tmp_path, text)
    assert problems(path) == [
        f"{path}:21: container 'db' has more than one role: model-service, vectordb",
        f"{path}:21: more than one container is a model-service",
    ]


def test_a_recipe_needs_an_app_container(tmp_path: Path) -> None:
    text = GOOD.replace("      ports: [8501]\n", "      ports: [8501]\n      vectordb: true\n")
    path = write(tmp_path, text)
    assert problems(path) == [f"{path}:7: no application container (one without a service role)"]


def test_missing_file(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope.yaml") == [f"{tmp_path / 'nope.yaml'}: does not exist"]
