"""Recipes (chatbot, RAG, summarizer on Podman) and their export come in a later release."""

from __future__ import annotations

from PySide6.QtWidgets import QWidget

from podlab.core.lab import Lab
from podlab.ui.page_host import PageHost
from podlab.ui.pages.placeholder import NotYetPage


def create_page(lab: Lab, host: PageHost) -> QWidget:
    return NotYetPage(
        "Recipes",
        "Run a chatbot, RAG or summarizer application wired to a model server in a Podman pod, "
        "and export it as a Containerfile, Kubernetes YAML, Quadlet units or Compose file.",
    )
