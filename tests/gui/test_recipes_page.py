"""The Recipes page on the real bundled recipes and a real imported ai-lab-recipes checkout."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from podlab.core.lab import Lab
from podlab.ui.main_window import MainWindow
from podlab.ui.pages.recipes import RecipesPage

pytestmark = pytest.mark.gui

UPSTREAM = Path(__file__).parents[1] / "data" / "recipes" / "ai-lab-recipes"


@pytest.fixture
def page(qtbot, qloop) -> RecipesPage:  # type: ignore[no-untyped-def]
    window = MainWindow(Lab.open())
    qtbot.addWidget(window)
    window.resize(1280, 800)
    window.show_page("recipes")
    window.show()
    recipes = window.page("recipes")
    assert isinstance(recipes, RecipesPage)
    settle = asyncio.ensure_future(recipes.settle())
    qtbot.waitUntil(settle.done, timeout=30000)
    settle.result()
    return recipes


def test_cards_details_and_the_run_button(page: RecipesPage) -> None:
    assert page.visible_recipe_ids() == ["chatbot", "rag", "summarizer"]
    assert page.banner.isHidden()
    assert page.select_recipe("rag")
    assert page.name_label.text() == "RAG chatbot"
    # Recommended models by their catalog names, embedding models too.
    assert "SmolLM2 135M Instruct" in page.models_label.text()
    assert "Embedding models: " in page.models_label.text()
    assert "chromadb-server (vectordb, port 8000)" in page.containers_label.text()
    assert page.readme.markdown().startswith("# RAG chatbot")
    assert "Chroma" in page.readme.toPlainText()
    # No model is downloaded in this test's data folder: nothing can run yet, and it says so.
    assert page.run_button.text() == "Run"
    assert not page.run_button.isEnabled()
    assert page.model_combo.count() == 0
    assert not page.no_model_box.isHidden()


def test_filters(page: RecipesPage) -> None:
    category = page.category_filter
    assert [category.itemText(i) for i in range(category.count())] == [
        "All categories",
        "Natural language processing",
    ]
    category.setCurrentIndex(1)
    assert page.visible_recipe_ids() == ["chatbot", "rag", "summarizer"]
    backend = page.backend_filter
    assert [backend.itemData(i) for i in range(1, backend.count())] == ["llama-cpp"]
    backend.setCurrentIndex(1)
    assert len(page.visible_recipe_ids()) == 3


def test_import_a_checkout_adds_its_recipes_and_filters_by_them(
    page: RecipesPage,
    qtbot,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    checkout = tmp_path / "checkout"
    shutil.copytree(UPSTREAM, checkout)
    # A recipe in a category of its own, with a backend of its own.
    audio = checkout / "recipes" / "audio" / "transcribe"
    shutil.copytree(checkout / "recipes" / "natural_language_processing" / "chatbot", audio)
    spec = audio / "ai-lab.yaml"
    spec.write_text(spec.read_text().replace("llama-cpp", "whisper-cpp"))
    (audio / "README.md").write_text(
        "# Transcribe\n\n<script>alert(1)</script> ![x](http://e/x.png)"
    )

    done = asyncio.ensure_future(page.import_folder(str(checkout)))
    qtbot.waitUntil(done.done, timeout=30000)
    done.result()

    assert page.banner.isHidden()
    assert page.visible_recipe_ids() == ["chatbot", "rag", "summarizer", "transcribe"]
    page.category_filter.setCurrentIndex(page.category_filter.findData("audio"))
    assert page.visible_recipe_ids() == ["transcribe"]
    current = page.current_recipe()
    assert current is not None and current.id == "transcribe"
    # The readme is inert: the script is text, the image is never fetched.
    shown = page.readme.toPlainText()
    assert "<script>alert(1)</script>" in shown
    assert "[image: x]" in shown
    page.category_filter.setCurrentIndex(0)
    page.backend_filter.setCurrentIndex(page.backend_filter.findData("whisper-cpp"))
    assert page.visible_recipe_ids() == ["transcribe"]


def test_a_broken_import_shows_file_and_line(
    page: RecipesPage,
    qtbot,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "ai-lab.yaml").write_text("application:\n  name: x\n")
    done = asyncio.ensure_future(page.import_folder(str(folder)))
    qtbot.waitUntil(done.done, timeout=30000)
    done.result()
    assert page.banner.isVisible()
    text = page.banner_label.text()
    assert f"{folder / 'ai-lab.yaml'}:1: no 'version'" in text
    assert page.visible_recipe_ids() == ["chatbot", "rag", "summarizer"]
