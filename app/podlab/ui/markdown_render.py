"""Markdown of a streamed answer into one QTextDocument, finished block by finished block.

The hot path of the playground (see DESIGN.md, "Streaming rendering"):

* The network task only appends text (`IncrementalRenderer.append`); a throttled caller runs
  `render()` at most ~25 times a second.
* `render()` parses only the *tail*: the source after the last finished top-level block.
  markdown-it-py's top-level tokens carry `map` line ranges; every block before the last one is
  finished once the first line of the block after it is complete (a partial line can still
  change how the previous block ends, e.g. a lazy blockquote continuation). An open code fence
  runs to the end of the text, so it is always the last block and never finished early.
* Finished blocks are written into the document once, after the previous finished ones, and the
  source they came from leaves the tail. Only the live (last, unfinished) block is deleted and
  written again on the next render. Work per render is proportional to the tail, so the total
  stays linear in the length of the answer (for a normal mix of blocks).

Model output is untrusted, so no HTML parser ever sees it: markdown-it-py runs with raw HTML
disabled (`<script>` stays text) and its tokens are written with QTextCursor calls and explicit
formats. Images are never loaded: they become a link text ``[image: alt]``. Links are anchors
that do nothing until the view decides to open them on a click. Code blocks are highlighted with
pygments (colours of a pygments style applied as inline character formats, the same colours
`HtmlFormatter(noclasses=True)` would inline) and get a "Copy" anchor `podlab-copy:N`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from markdown_it import MarkdownIt
from markdown_it.token import Token
from pygments.lexer import Lexer
from pygments.lexers import TextLexer, get_lexer_by_name
from pygments.style import StyleMeta
from pygments.styles import get_style_by_name
from pygments.token import _TokenType
from pygments.util import ClassNotFound
from PySide6.QtCore import Qt
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QFontDatabase,
    QPalette,
    QTextBlockFormat,
    QTextCharFormat,
    QTextCursor,
    QTextDocument,
    QTextFormat,
    QTextFrameFormat,
    QTextLength,
    QTextList,
    QTextListFormat,
    QTextTable,
    QTextTableFormat,
)

WINDOW_CHARS = 600
"""Source parsed at once when a backlog is written in slices (markdown-it: ~1 ms per kB)."""
COPY_SCHEME = "podlab-copy"
"""Anchors `podlab-copy:N` copy code block N of the message; the view handles them."""
SAFE_LINK_SCHEMES = ("http", "https", "mailto")
"""The only schemes a click may hand to the desktop; anything else is shown, never opened."""

_BLOCK_OPENERS = frozenset(
    {
        "paragraph_open",
        "heading_open",
        "bullet_list_open",
        "ordered_list_open",
        "blockquote_open",
        "table_open",
        "fence",
        "code_block",
        "hr",
        "html_block",
    }
)


_PLAIN_PARAGRAPH = ["paragraph_open", "inline", "paragraph_close"]
_INLINE_SPECIAL = frozenset("\\`*_[]()<>!&~|;:")
"""Characters that can change how the text around them is read inline (or start a
reference definition); the fast path of a growing paragraph avoids them."""
_PLAIN_TEXT = re.compile(r"[^\\`*_\[\]()<>!&~|;:\r\n\u200b]*")


def make_markdown() -> MarkdownIt:
    """CommonMark with raw HTML off, plus GFM tables and strikethrough. A single newline is a
    line break (`breaks`), as in chat apps: a model's poem or address keeps its lines."""
    options = {"html": False, "breaks": True}
    return MarkdownIt("commonmark", options).enable(["table", "strikethrough"])


# ---------------------------------------------------------------------------------------------
# Splitting the tail into finished blocks and the live block


@dataclass(frozen=True, slots=True)
class Split:
    """Where the finished part of a parsed tail ends."""

    token_index: int
    """Tokens before this index are finished top-level blocks."""
    line: int
    """The live block starts on this line of the tail (0 when nothing is finished)."""


def top_level_blocks(tokens: Sequence[Token]) -> list[tuple[int, int]]:
    """(token index, first line) of every top-level block, in order."""
    starts: list[tuple[int, int]] = []
    for index, token in enumerate(tokens):
        if (
            token.level == 0
            and token.map is not None
            and (token.nesting == 1 or (token.nesting == 0 and token.type in _BLOCK_OPENERS))
        ):
            starts.append((index, token.map[0]))
    return starts


def split_finished(tokens: Sequence[Token], complete_lines: int) -> Split:
    """The finished prefix: every block whose successor starts on a complete line."""
    blocks = top_level_blocks(tokens)
    for token_index, line in reversed(blocks[1:]):
        if line < complete_lines:
            return Split(token_index, line)
    return Split(0, 0)


ZERO_WIDTH_SPACE = "\u200b"
_UNBROKEN = re.compile(r"[^\s\u200b]{160,}")


def breakable(text: str) -> str:
    """Give very long runs without spaces a break opportunity every 64 characters.

    Qt lays out a line it cannot break in quadratic time (100,000 letters: about a second);
    with zero-width spaces it takes milliseconds. The view removes them again from what is
    copied, and the source (Copy buttons, the store) never has them.
    """
    if len(text) < 160 or _UNBROKEN.search(text) is None:
        return text
    return _UNBROKEN.sub(
        lambda m: ZERO_WIDTH_SPACE.join(m[0][i : i + 64] for i in range(0, len(m[0]), 64)), text
    )


def line_offset(text: str, line: int) -> int:
    """Character offset of the start of `line` (0-based) in `text`."""
    offset = 0
    for _ in range(line):
        found = text.find("\n", offset)
        if found < 0:
            return len(text)
        offset = found + 1
    return offset


# ---------------------------------------------------------------------------------------------
# Colours and formats


def _mix(a: QColor, b: QColor, amount: float) -> QColor:
    """`a` moved `amount` (0..1) of the way towards `b`."""
    return QColor.fromRgbF(
        a.redF() + (b.redF() - a.redF()) * amount,
        a.greenF() + (b.greenF() - a.greenF()) * amount,
        a.blueF() + (b.blueF() - a.blueF()) * amount,
    )


@lru_cache(maxsize=8)
def _pygments_colors(style_name: str) -> dict[_TokenType, tuple[str, bool, bool]]:
    style: StyleMeta = get_style_by_name(style_name)
    colors: dict[_TokenType, tuple[str, bool, bool]] = {}
    for ttype, spec in style:
        colors[ttype] = (spec["color"] or "", bool(spec["bold"]), bool(spec["italic"]))
    return colors


@lru_cache(maxsize=64)
def _lexer(language: str) -> Lexer:
    try:
        return get_lexer_by_name(language, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return TextLexer(stripnl=False, ensurenl=False)


@dataclass
class RenderTheme:
    """Colours and fonts for one palette; build a new one when the palette changes."""

    text: QColor
    base: QColor
    link: QColor
    muted: QColor
    code_bg: QColor
    border: QColor
    header_bg: QColor
    font: QFont
    mono_family: str
    dark: bool
    pygments_style: str
    line_breaks: bool = True
    """A single newline is a line break (chat answers); False for prose written with wrapped
    lines (model cards), where it is a space as CommonMark says."""
    _formats: dict[tuple[object, ...], QTextCharFormat] = field(default_factory=dict, repr=False)
    _code_formats: dict[_TokenType, QTextCharFormat] = field(default_factory=dict, repr=False)

    @classmethod
    def from_palette(cls, palette: QPalette, font: QFont) -> RenderTheme:
        text = palette.color(QPalette.ColorRole.Text)
        base = palette.color(QPalette.ColorRole.Base)
        dark = base.lightnessF() < 0.5
        return cls(
            text=text,
            base=base,
            link=palette.color(QPalette.ColorRole.Link),
            muted=_mix(text, base, 0.4),
            code_bg=_mix(base, text, 0.07 if dark else 0.045),
            border=_mix(base, text, 0.22),
            header_bg=_mix(base, text, 0.1 if dark else 0.07),
            font=QFont(font),
            mono_family=QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont).family(),
            dark=dark,
            pygments_style="github-dark" if dark else "default",
        )

    @property
    def point_size(self) -> float:
        size = self.font.pointSizeF()
        return size if size > 0 else 10.0

    def char_format(
        self,
        heading: int = 0,
        muted: bool = False,
        bold: bool = False,
        italic: bool = False,
        strike: bool = False,
        code: bool = False,
        href: str | None = None,
        small: bool = False,
    ) -> QTextCharFormat:
        key = (heading, muted, bold, italic, strike, code, href, small)
        cached = self._formats.get(key)
        if cached is not None:
            return cached
        fmt = QTextCharFormat()
        fmt.setForeground(QBrush(self.muted if muted else self.text))
        if heading:
            scale = {1: 1.6, 2: 1.35, 3: 1.17}.get(heading, 1.0)
            fmt.setFontPointSize(self.point_size * scale)
            fmt.setFontWeight(QFont.Weight.Bold)
        elif small:
            fmt.setFontPointSize(max(6.0, self.point_size * 0.85))
        if bold:
            fmt.setFontWeight(QFont.Weight.Bold)
        if italic:
            fmt.setFontItalic(True)
        if strike:
            fmt.setFontStrikeOut(True)
        if code:
            fmt.setFontFamilies([self.mono_family])
            fmt.setBackground(QBrush(self.code_bg))
        if href is not None:
            fmt.setAnchor(True)
            fmt.setAnchorHref(href)
            fmt.setForeground(QBrush(self.link))
            fmt.setFontUnderline(True)
            fmt.setToolTip(href)
        if len(self._formats) < 512:  # links vary without bound; keep the cache small
            self._formats[key] = fmt
        return fmt

    def code_format(self, ttype: _TokenType) -> QTextCharFormat:
        cached = self._code_formats.get(ttype)
        if cached is not None:
            return cached
        colors = _pygments_colors(self.pygments_style)
        probe: _TokenType | None = ttype
        color, bold, italic = "", False, False
        while probe is not None:
            if probe in colors and colors[probe][0]:
                color, bold, italic = colors[probe]
                break
            probe = probe.parent
        fmt = QTextCharFormat()
        fmt.setFontFamilies([self.mono_family])
        fmt.setForeground(QBrush(QColor(f"#{color}") if color else self.text))
        if bold:
            fmt.setFontWeight(QFont.Weight.Bold)
        if italic:
            fmt.setFontItalic(True)
        self._code_formats[ttype] = fmt
        return fmt


# ---------------------------------------------------------------------------------------------
# Writing tokens into a document


def _spacer_format() -> QTextBlockFormat:
    spacer = QTextBlockFormat()
    spacer.setLineHeight(1.0, QTextBlockFormat.LineHeightTypes.FixedHeight.value)
    return spacer


@dataclass
class _ListContext:
    fmt: QTextListFormat
    tight: bool
    qlist: QTextList | None = None
    item_pending: bool = False


class DocumentWriter:
    """Writes markdown-it block tokens at a cursor, each top-level block as new blocks.

    Every top-level block starts in a *fresh* block: an empty block that the block takes over
    (the start of the document, the empty block Qt keeps after a table, or a new empty block).
    The renderer relies on this: the live block always starts at the start of a fresh block,
    so deleting it never changes the format of the finished block before it.
    """

    def __init__(
        self,
        cursor: QTextCursor,
        theme: RenderTheme,
        codes: list[str],
        *,
        fresh: bool = True,
        after_table: bool = False,
    ) -> None:
        self.cursor = cursor
        self.theme = theme
        self.fresh = fresh
        self.after_table = after_table
        """The fresh block is the one that follows a table."""
        self.codes = codes
        self._lists: list[_ListContext] = []
        self._quote = 0
        self._heading = 0

    # -- blocks ------------------------------------------------------------------------------

    def write(self, tokens: Sequence[Token]) -> None:
        index = 0
        count = len(tokens)
        while index < count:
            token = tokens[index]
            kind = token.type
            if token.level == 0 and token.nesting >= 0 and kind in _BLOCK_OPENERS:
                self.begin_top_level()
            if kind == "paragraph_open":
                self._text_block()
            elif kind == "heading_open":
                self._heading = int(token.tag[1:]) if token.tag[1:].isdigit() else 1
                self._text_block()
            elif kind == "heading_close":
                self._heading = 0
            elif kind == "inline":
                self._inline(token.children or [])
            elif kind in ("bullet_list_open", "ordered_list_open"):
                self._open_list(token, tokens, index)
            elif kind in ("bullet_list_close", "ordered_list_close"):
                self._lists.pop()
            elif kind == "list_item_open":
                self._lists[-1].item_pending = True
            elif kind == "list_item_close":
                if self._lists[-1].item_pending:  # an empty item still shows its bullet
                    self._text_block()
            elif kind == "blockquote_open":
                self._quote += 1
            elif kind == "blockquote_close":
                self._quote -= 1
            elif kind in ("fence", "code_block"):
                self._code(token.content, token.info.strip().split(" ")[0] if token.info else "")
            elif kind == "hr":
                self._rule()
            elif kind == "table_open":
                end = index + 1
                while end < count and tokens[end].type != "table_close":
                    end += 1
                self._table(tokens[index + 1 : end])
                index = end
            elif kind == "html_block":  # never produced with html disabled; shown as text
                self._text_block()
                self._insert(token.content.rstrip("\n"), self.theme.char_format())
            index += 1

    def begin_top_level(self) -> None:
        """Make sure the next top-level block starts in a fresh block."""
        if not self.fresh:
            self.cursor.insertBlock(QTextBlockFormat(), QTextCharFormat())
            self.fresh = True
            self.after_table = False

    def _indent_px(self) -> float:
        return 18.0 * self._quote

    def _start_block(self, block: QTextBlockFormat, chars: QTextCharFormat) -> None:
        cursor = self.cursor
        if self.fresh:
            # Replacing the block format also takes the block out of a list it was in.
            # (QTextBlock.textList() is avoided: PySide6 6.12 miscounts the None it returns.)
            cursor.setBlockFormat(block)
            cursor.setBlockCharFormat(chars)
            cursor.setCharFormat(chars)
            self.fresh = False
            self.after_table = False
        else:
            cursor.insertBlock(block, chars)

    def _text_block(self) -> None:
        theme = self.theme
        block = QTextBlockFormat()
        list_ctx = self._lists[-1] if self._lists else None
        if self._heading:
            block.setHeadingLevel(self._heading)
            block.setTopMargin(10.0 if self._heading <= 2 else 6.0)
            block.setBottomMargin(4.0)
        else:
            tight = list_ctx is not None and list_ctx.tight
            block.setBottomMargin(2.0 if tight else 8.0)
        block.setLeftMargin(self._indent_px())
        if list_ctx is not None and not list_ctx.item_pending:
            block.setIndent(len(self._lists))  # a later paragraph of the same item
        chars = theme.char_format(heading=self._heading, muted=self._quote > 0)
        self._start_block(block, chars)
        if list_ctx is not None and list_ctx.item_pending:
            list_ctx.item_pending = False
            if list_ctx.qlist is None:
                list_ctx.qlist = self.cursor.createList(list_ctx.fmt)
            else:
                list_ctx.qlist.add(self.cursor.block())

    def _open_list(self, token: Token, tokens: Sequence[Token], index: int) -> None:
        fmt = QTextListFormat()
        depth = len(self._lists) + 1
        if token.type == "ordered_list_open":
            fmt.setStyle(QTextListFormat.Style.ListDecimal)
            start = token.attrs.get("start")
            if start is not None:
                fmt.setStart(int(start))
        else:
            styles = (
                QTextListFormat.Style.ListDisc,
                QTextListFormat.Style.ListCircle,
                QTextListFormat.Style.ListSquare,
            )
            fmt.setStyle(styles[(depth - 1) % 3])
        fmt.setIndent(depth)
        # markdown-it marks the paragraphs of a tight list hidden.
        tight = index + 2 < len(tokens) and tokens[index + 2].hidden
        self._lists.append(_ListContext(fmt, tight))

    def _rule(self) -> None:
        block = QTextBlockFormat()
        block.setProperty(
            QTextFormat.Property.BlockTrailingHorizontalRulerWidth,
            QTextLength(QTextLength.Type.PercentageLength, 100),
        )
        block.setBottomMargin(6.0)
        if self.fresh and self.after_table:
            # Qt draws no ruler in the block that follows a table: keep that one as a thin
            # spacer and put the ruler in a block of its own.
            self.cursor.setBlockFormat(_spacer_format())
            self.fresh = False
        self._start_block(block, self.theme.char_format(muted=True))

    def _frame_table(self, rows: int, columns: int, fmt: QTextTableFormat) -> QTextTable:
        cursor = self.cursor
        if self.fresh:
            # The fresh block stays above the table: make it a hairline.
            cursor.setBlockFormat(_spacer_format())
            cursor.setBlockCharFormat(QTextCharFormat())
            self.fresh = False
            self.after_table = False
        fmt.setLeftMargin(self._indent_px() + 24.0 * len(self._lists))
        table = cursor.insertTable(rows, columns, fmt)
        return table

    def _after_table(self) -> None:
        self.cursor.movePosition(QTextCursor.MoveOperation.End)
        self.fresh = True
        self.after_table = True

    def _code(self, content: str, language: str) -> None:
        theme = self.theme
        number = len(self.codes)
        self.codes.append(content)
        fmt = QTextTableFormat()
        fmt.setBorder(1.0)
        fmt.setBorderStyle(QTextFrameFormat.BorderStyle.BorderStyle_Solid)
        fmt.setBorderBrush(QBrush(theme.border))
        fmt.setBorderCollapse(True)
        fmt.setCellPadding(6.0)
        fmt.setCellSpacing(0.0)
        fmt.setBackground(QBrush(theme.code_bg))
        fmt.setWidth(QTextLength(QTextLength.Type.PercentageLength, 100))
        fmt.setTopMargin(2.0)
        fmt.setBottomMargin(8.0)
        self._frame_table(1, 1, fmt)
        cursor = self.cursor
        header = QTextBlockFormat()
        header.setBottomMargin(4.0)
        cursor.setBlockFormat(header)
        small = theme.char_format(muted=True, small=True)
        cursor.insertText(f"{language or 'code'}   ", small)
        link = QTextCharFormat(theme.char_format(href=f"{COPY_SCHEME}:{number}", small=True))
        link.setToolTip("Copy this code block")
        cursor.insertText("Copy", link)
        body = QTextBlockFormat()
        cursor.insertBlock(body, theme.code_format(_TokenType()))
        text = content[:-1] if content.endswith("\n") else content
        lexer = _lexer(language.lower()) if language else _lexer("text")
        if len(text) > 200_000:  # highlighting a huge block is not worth a frozen window
            lexer = _lexer("text")
        run: list[str] = []
        run_type: _TokenType | None = None
        for ttype, value in lexer.get_tokens(text):
            if ttype is not run_type and run:
                assert run_type is not None
                cursor.insertText(breakable("".join(run)), theme.code_format(run_type))
                run.clear()
            run_type = ttype
            run.append(value)
        if run and run_type is not None:
            cursor.insertText(breakable("".join(run)), theme.code_format(run_type))
        self._after_table()

    def _table(self, tokens: Sequence[Token]) -> None:
        theme = self.theme
        rows: list[list[tuple[Token, Token | None]]] = []
        current: list[tuple[Token, Token | None]] | None = None
        cell_open: Token | None = None
        for token in tokens:
            if token.type == "tr_open":
                current = []
                rows.append(current)
            elif token.type in ("th_open", "td_open"):
                cell_open = token
            elif token.type == "inline" and cell_open is not None and current is not None:
                current.append((cell_open, token))
                cell_open = None
            elif token.type in ("th_close", "td_close") and cell_open is not None:
                if current is not None:
                    current.append((cell_open, None))
                cell_open = None
        if not rows or not rows[0]:
            return
        columns = max(len(row) for row in rows)
        fmt = QTextTableFormat()
        fmt.setBorder(1.0)
        fmt.setBorderStyle(QTextFrameFormat.BorderStyle.BorderStyle_Solid)
        fmt.setBorderBrush(QBrush(theme.border))
        fmt.setBorderCollapse(True)
        fmt.setCellPadding(4.0)
        fmt.setCellSpacing(0.0)
        fmt.setHeaderRowCount(1)
        fmt.setBottomMargin(8.0)
        table = self._frame_table(len(rows), columns, fmt)
        for r, row in enumerate(rows):
            for c, (opener, inline) in enumerate(row):
                cell = table.cellAt(r, c)
                if opener.type == "th_open":
                    cell_format = cell.format()
                    cell_format.setBackground(QBrush(theme.header_bg))
                    cell.setFormat(cell_format)
                cursor = cell.firstCursorPosition()
                style = str(opener.attrs.get("style", ""))
                if "right" in style or "center" in style:
                    block = QTextBlockFormat()
                    block.setAlignment(
                        Qt.AlignmentFlag.AlignRight
                        if "right" in style
                        else Qt.AlignmentFlag.AlignHCenter
                    )
                    cursor.setBlockFormat(block)
                if inline is not None:
                    saved = self.cursor
                    self.cursor = cursor
                    try:
                        self._inline(inline.children or [], bold=opener.type == "th_open")
                    finally:
                        self.cursor = saved
        self._after_table()

    # -- inline ------------------------------------------------------------------------------

    def _insert(self, text: str, fmt: QTextCharFormat) -> None:
        if text:
            self.cursor.insertText(breakable(text), fmt)

    def _inline(self, children: Sequence[Token], bold: bool = False) -> None:
        theme = self.theme
        heading = self._heading
        muted = self._quote > 0
        strong = 1 if bold else 0
        emphasis = 0
        strike = 0
        links: list[str] = []

        def fmt(code: bool = False, href: str | None = None) -> QTextCharFormat:
            return theme.char_format(
                heading=heading,
                muted=muted,
                bold=strong > 0,
                italic=emphasis > 0,
                strike=strike > 0,
                code=code,
                href=href if href is not None else (links[-1] if links else None),
            )

        for child in children:
            kind = child.type
            if kind == "text":
                self._insert(child.content, fmt())
            elif kind == "hardbreak" or (kind == "softbreak" and self.theme.line_breaks):
                self._insert("\u2028", fmt())  # one newline is a line break in chat answers
            elif kind == "softbreak":
                self._insert(" ", fmt())
            elif kind == "code_inline":
                self._insert(child.content, fmt(code=True))
            elif kind == "strong_open":
                strong += 1
            elif kind == "strong_close":
                strong -= 1
            elif kind == "em_open":
                emphasis += 1
            elif kind == "em_close":
                emphasis -= 1
            elif kind == "s_open":
                strike += 1
            elif kind == "s_close":
                strike -= 1
            elif kind == "link_open":
                links.append(str(child.attrs.get("href", "")))
            elif kind == "link_close":
                if links:
                    links.pop()
            elif kind == "image":
                # Never loaded: an image is shown as a link to where it lives.
                alt = child.content or str(child.attrs.get("alt", "")) or "image"
                src = str(child.attrs.get("src", ""))
                self._insert(f"[image: {alt}]", fmt(href=src or None))
            elif child.content:
                self._insert(child.content, fmt())


# ---------------------------------------------------------------------------------------------
# The incremental renderer


@dataclass
class RenderStats:
    renders: int = 0
    parsed_chars: int = 0
    """Characters parsed over all renders: stays a small multiple of the source length."""
    finished_blocks_written: int = 0
    last_render_ms: float = 0.0
    max_render_ms: float = 0.0
    plain_appends: int = 0
    """Renders that only appended plain text to a growing paragraph (the fast path)."""


class IncrementalRenderer:
    """Keeps one document in step with a growing Markdown source."""

    def __init__(self, document: QTextDocument, theme: RenderTheme) -> None:
        self._doc = document
        self.theme = theme
        self._md = make_markdown()
        self._committed: list[str] = []
        self._pending: list[str] = []
        self._tail = ""  # source not finished yet, from `_pos` on
        self._pos = 0
        self._end = 0  # the live block starts here, at the start of a fresh block
        self._end_after_table = False
        self._codes: list[str] = []
        self._finished_codes = 0
        self._dirty = False
        self._live_paragraph = False  # the live block shown is a plain top-level paragraph
        self.finished = False
        self.stats = RenderStats()
        document.setUndoRedoEnabled(False)

    def append(self, text: str) -> None:
        if self.finished:
            raise RuntimeError("the message is finished; it is never changed again")
        if text:
            self._pending.append(text)
            self._dirty = True

    def source(self) -> str:
        return "".join(self._committed) + self._tail[self._pos :] + "".join(self._pending)

    def code_text(self, number: int) -> str | None:
        if 0 <= number < len(self._codes):
            return self._codes[number]
        return None

    @property
    def code_count(self) -> int:
        return len(self._codes)

    @property
    def committed_chars(self) -> int:
        """Source characters of the finished blocks (written once, never again)."""
        return sum(len(part) for part in self._committed)

    @property
    def finished_position(self) -> int:
        """Document position where the finished blocks end and the live block starts."""
        return self._end

    def render(self, final: bool = False, budget_s: float | None = None) -> bool:
        """Bring the document up to date; with `final`, every block counts as finished.

        With `budget_s`, stop after about that much time once some finished blocks were
        written, and return True: call again (on the next event-loop turn) to go on. A long
        backlog (a fast stream, a long stored answer) is then written in slices, in windows of
        `WINDOW_CHARS` of source, and the window never freezes. Returns False when done.
        """
        if self.finished or (not self._dirty and not final):
            return False
        started = time.perf_counter()
        deadline = None if budget_s is None else started + budget_s
        if not final and self._live_paragraph and self._pending and self._append_plain():
            self._count(started)
            return False
        if self._pending:
            self._tail = self._tail[self._pos :] + "".join(self._pending)
            self._pos = 0
            self._pending.clear()
        self._live_paragraph = False
        more = False
        cursor = QTextCursor(self._doc)
        cursor.beginEditBlock()
        try:
            cursor.setPosition(self._end)
            cursor.movePosition(QTextCursor.MoveOperation.End, QTextCursor.MoveMode.KeepAnchor)
            if cursor.hasSelection():
                cursor.removeSelectedText()
            del self._codes[self._finished_codes :]
            window_cost = 0.0
            while True:
                window_started = time.perf_counter()
                tail, pos = self._tail, self._pos
                size = WINDOW_CHARS
                while True:
                    whole = len(tail) - pos <= size
                    if not whole:
                        # A window of complete lines: what is finished inside it is finished.
                        cut = tail.rfind("\n", pos, pos + size)
                        whole = cut < 0 and tail.find("\n", pos + size) < 0
                    if whole:
                        window = tail[pos:] if pos else tail
                    else:
                        if cut < 0:  # one very long line: take it whole
                            cut = tail.find("\n", pos + size)
                        window = tail[pos : cut + 1]
                    tokens = self._md.parse(window)
                    if whole and final:
                        split = Split(len(tokens), 0)
                    else:
                        split = split_finished(tokens, window.count("\n"))
                    if whole or split.token_index > 0:
                        break
                    self.stats.parsed_chars += len(window)
                    size *= 2  # one block longer than the window: look further
                self.stats.parsed_chars += len(window)
                writer = DocumentWriter(
                    cursor, self.theme, self._codes, after_table=self._end_after_table
                )
                if split.token_index > 0:
                    writer.write(tokens[: split.token_index])
                    self.stats.finished_blocks_written += 1
                    last = final and whole
                    if not last:
                        writer.begin_top_level()
                    self._end = cursor.position()
                    self._end_after_table = writer.after_table
                    self._finished_codes = len(self._codes)
                    offset = len(window) if last else line_offset(window, split.line)
                    self._committed.append(window[:offset])
                    self._pos = pos + offset
                if whole:
                    if final:
                        self.finished = True
                        self._tail, self._pos = "", 0
                    else:
                        live = tokens[split.token_index :]
                        writer.write(live)
                        # The last block is a top-level paragraph (blocks before it may be
                        # live too: they end only once its first line is complete).
                        self._live_paragraph = (
                            len(live) >= 3
                            and live[-3].level == 0
                            and [t.type for t in live[-3:]] == _PLAIN_PARAGRAPH
                        )
                    break
                now = time.perf_counter()
                window_cost = now - window_started
                if deadline is not None and now + window_cost >= deadline:
                    # The next window would overrun the budget: go on at the next turn. (The
                    # live block shows again when the backlog is written.)
                    more = True
                    break
        finally:
            cursor.endEditBlock()
        self._dirty = more
        self._count(started)
        return more

    def _count(self, started: float) -> None:
        elapsed = (time.perf_counter() - started) * 1000.0
        self.stats.renders += 1
        self.stats.last_render_ms = elapsed
        self.stats.max_render_ms = max(self.stats.max_render_ms, elapsed)

    def _append_plain(self) -> bool:
        """The fast path of a growing paragraph: append plain text instead of rewriting it.

        Taken only when the result is provably what a full render gives: the last live block
        is a top-level paragraph; the new text has no line break and no character that Markdown
        gives a meaning inline; the text before it does not end with such a character (a
        delimiter's meaning depends on what follows it); the current line starts with a
        letter (so it cannot turn into a list item, heading, quote or table row); and no long
        unbroken run needs zero-width breaks. Otherwise the live block is rendered again.
        """
        new = "".join(self._pending)
        if not _PLAIN_TEXT.fullmatch(new):
            return False
        tail, pos = self._tail, self._pos
        if len(tail) <= pos:
            return False
        before = tail[-1]
        if before in _INLINE_SPECIAL or before in "\r\n":
            return False
        line_start = tail.rfind("\n", pos) + 1
        first = tail[max(line_start, pos) :].lstrip(" \t")[:1]
        if not first.isalpha():
            return False
        run = len(tail) - max(tail.rfind(" ", pos), tail.rfind("\t", pos)) - 1
        if run + len(new) >= 150:  # `breakable()` territory: leave it to a full render
            return False
        # markdown-it strips a paragraph's trailing whitespace (str.strip): spaces kept back
        # until now are shown once text follows them.
        stripped = tail.rstrip()
        visible = (tail[len(stripped) :] + new).rstrip()
        self._tail = tail[pos:] + new
        self._pos = 0
        self._pending.clear()
        self._dirty = False
        if visible:
            cursor = QTextCursor(self._doc)
            cursor.movePosition(QTextCursor.MoveOperation.End)
            cursor.insertText(visible, cursor.charFormat())
        self.stats.plain_appends += 1
        return True

    def finish(self) -> None:
        """The answer is complete: write everything, the last block as finished, and stop."""
        while not self.finished:
            self.render(final=True)

    def rebuild(self, theme: RenderTheme) -> None:
        """New colours (the palette changed): write the whole message again, once."""
        source = self.source()
        finished = self.finished
        self._doc.clear()
        self.theme = theme
        self._committed = []
        self._pending = [source] if source else []
        self._tail, self._pos = "", 0
        self._end = 0
        self._end_after_table = False
        self._codes = []
        self._finished_codes = 0
        self._dirty = bool(source)
        self._live_paragraph = False
        self.finished = False
        if finished:
            self.finish()
        else:
            while self.render():
                pass


def render_once(document: QTextDocument, markdown: str, theme: RenderTheme) -> IncrementalRenderer:
    """The whole text at once (what a reloaded conversation shows)."""
    renderer = IncrementalRenderer(document, theme)
    renderer.append(markdown)
    renderer.finish()
    return renderer
