"""A model card: the catalog's Markdown description, rendered like every other Markdown.

Catalog files can come from anyone, so a card is as untrusted as model output and goes through
the same renderer (`MarkdownView` over `markdown_render`): markdown-it-py with raw HTML off (a
`<script>` or `<img>` shows as text), tokens written with QTextCursor calls (no HTML parser sees
the text), images shown as "[image: alt]" links and never fetched, every resource load refused,
and links opened only on a click, only for http, https and mailto.
"""

from __future__ import annotations

from dataclasses import replace

from PySide6.QtWidgets import QWidget

from podlab.ui.markdown_render import RenderTheme
from podlab.ui.widgets.markdown_view import MarkdownView


class ModelCardView(MarkdownView):
    """Read-only, scrollable view of one model's Markdown card."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setPlaceholderText("This model has no description.")
        self.card_markdown = ""

    def _make_theme(self) -> RenderTheme:
        """Catalog descriptions are wrapped prose: a single newline is a space there."""
        return replace(super()._make_theme(), line_breaks=False)

    def show_card(self, markdown: str) -> None:
        """Replace the card; shown from the top."""
        self.card_markdown = markdown
        if markdown.strip():
            self.set_markdown(markdown)
        else:
            self.set_markdown("")
            self.clear()
