"""The recipe catalog: bundled recipes, import from a folder or a git checkout, entry files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from podlab.core.errors import ConfigError, PodlabError
from podlab.core.models.catalog import load_catalog
from podlab.core.paths import Locations
from podlab.core.recipes.catalog import (
    bundled_recipes_dir,
    category_label,
    import_recipes,
    load_recipe,
    load_recipe_catalog,
)
from podlab.core.recipes.spec import ContainerRole, RecipeSpecError

pytestmark = pytest.mark.unit

UPSTREAM = Path(__file__).parents[1] / "data" / "recipes" / "ai-lab-recipes"


def test_bundled_recipes() -> None:
    catalog = load_recipe_catalog(Locations.default())
    assert catalog.errors == []
    assert [entry.id for entry in catalog] == ["chatbot", "rag", "summarizer"]
    for entry in catalog:
        assert entry.origin == "bundled"
        assert entry.backend == "llama-cpp"
        assert entry.categories == ("natural-language-processing",)
        assert entry.readme.startswith("# ")
        assert entry.spec.model_service is not None
        apps = entry.spec.with_role(ContainerRole.APP)
        assert len(apps) == 1 and apps[0].containerfile.is_file()
        text = apps[0].containerfile.read_text()
        assert "FROM docker.io/library/debian:bookworm-slim" in text
    rag = catalog.get("rag")
    assert rag is not None
    assert [c.role for c in rag.spec.containers] == [
        ContainerRole.MODEL_SERVICE,
        ContainerRole.EMBEDDING_SERVICE,
        ContainerRole.VECTORDB,
        ContainerRole.APP,
    ]


def test_recommended_models_are_real_catalog_ids() -> None:
    models = load_catalog().catalog
    for entry in load_recipe_catalog(Locations.default()):
        assert entry.recommended
        for model_id in (*entry.recommended, *entry.recommended_embedding):
            model = models.model(model_id)
            assert model is not None, f"{entry.id}: {model_id}"
            assert model.backend == entry.backend
        for model_id in entry.recommended_embedding:
            assert "embedding" in models.model(model_id).capabilities  # type: ignore[union-attr]


def test_filters() -> None:
    catalog = load_recipe_catalog(Locations.default())
    assert catalog.categories() == ["natural-language-processing"]
    assert catalog.backends() == ["llama-cpp"]
    assert len(catalog.filtered(category="natural-language-processing")) == 3
    assert catalog.filtered(category="audio") == []
    assert catalog.filtered(backend="whisper-cpp") == []
    assert category_label("natural-language-processing") == "Natural language processing"


def git(folder: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_import_a_git_checkout_in_ai_lab_recipes_layout(tmp_path: Path) -> None:
    checkout = tmp_path / "ai-lab-recipes"
    shutil.copytree(UPSTREAM, checkout)
    git(checkout, "init", "-q")
    git(checkout, "add", ".")
    git(checkout, "commit", "-q", "-m", "recipes")
    commit = git(checkout, "rev-parse", "HEAD")
    locations = Locations.default()

    entries = import_recipes(checkout, locations)

    assert [e.id for e in entries] == ["chatbot", "rag", "summarizer"]
    chatbot = entries[0]
    assert chatbot.name == "ChatBot_Streamlit"
    assert chatbot.description == "Chat with a model service in a web frontend."
    assert chatbot.categories == ("natural-language-processing",)
    assert chatbot.backend == "llama-cpp"
    assert chatbot.readme.startswith("# Chat Application")
    assert commit[:12] in chatbot.origin
    # Remembered: a new catalog load finds them, and an imported id replaces the bundled one.
    catalog = load_recipe_catalog(locations)
    assert catalog.errors == []
    assert catalog.get("chatbot").name == "ChatBot_Streamlit"  # type: ignore[union-attr]
    assert catalog.get("rag").spec.name == "rag-demo"  # type: ignore[union-attr]
    # Importing again adds nothing twice.
    import_recipes(checkout, locations)
    assert (locations.config_dir / "recipe-sources.yaml").read_text().count("chatbot") == 1


def test_import_refuses_a_broken_recipe_and_remembers_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    shutil.copytree(UPSTREAM / "recipes" / "natural_language_processing" / "chatbot", folder)
    locations = Locations.default()
    with pytest.raises(RecipeSpecError) as caught:
        import_recipes(folder, locations)
    assert caught.value.problems[0].message.startswith(f"{folder / 'ai-lab.yaml'}:8: ")
    assert not (locations.config_dir / "recipe-sources.yaml").exists()
    with pytest.raises(PodlabError, match=r"no ai-lab\.yaml"):
        import_recipes(tmp_path / "mine" / "app", locations)


def test_a_vanished_import_is_an_error_not_a_crash(tmp_path: Path) -> None:
    checkout = tmp_path / "copy"
    shutil.copytree(UPSTREAM, checkout)
    locations = Locations.default()
    import_recipes(checkout / "recipes" / "natural_language_processing" / "rag", locations)
    shutil.rmtree(checkout)
    catalog = load_recipe_catalog(locations)
    assert [e.id for e in catalog] == ["chatbot", "rag", "summarizer"]  # the bundled ones
    assert len(catalog.errors) == 1
    assert "does not exist" in catalog.errors[0].message


def test_entry_file_problems_name_file_and_line(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    shutil.copytree(bundled_recipes_dir() / "chatbot", folder / "chatbot")
    shutil.copytree(bundled_recipes_dir() / "model_servers", folder / "model_servers")
    recipe = folder / "chatbot"
    entry_file = recipe / "podlab-recipe.yaml"
    entry_file.write_text("id: chatbot\nname: x\ncolour: blue\n")
    with pytest.raises(ConfigError) as caught:
        load_recipe(recipe)
    assert caught.value.message.startswith(f"{entry_file}:3: unknown key 'colour'")
    entry_file.write_text("id: Not Safe\n")
    with pytest.raises(ConfigError, match=r":1: id 'Not Safe' uses lower-case"):
        load_recipe(recipe)
    entry_file.write_text("readme: ../../etc/passwd\n")
    with pytest.raises(ConfigError, match=r":1: 'readme' names a file in the recipe folder"):
        load_recipe(recipe)
