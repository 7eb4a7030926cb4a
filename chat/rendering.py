"""Message bodies as HTML: Markdown rendered on the server (markdown-it-py) and sanitized (nh3).

The body stays what its author wrote, and API clients get it so; ``html`` is
derived from it by :func:`body_html`, a pure function of the text, so a
message's cache entry (chat.selectors.history) and its live event carry it
and nothing else stores it.

What renders: emphasis, strong, strikethrough, code spans, fenced and
indented code blocks, quotes, lists, horizontal rules, links (written as
Markdown or found in plain text; http, https and mailto only, opening apart
with ``rel="noopener noreferrer nofollow ugc"``), ``@username`` as a mention
and ``#room-slug`` as a reference to a room of the same project, which the
page turns into a link. Raw HTML in a body shows as text; headings and
images do not render (a chat line is not a document, and a message must not
make every reader's browser fetch an address). Whatever the renderer made,
nh3 keeps only the tags and attributes listed here.
"""

from __future__ import annotations

import re
from functools import lru_cache

import nh3
from markdown_it import MarkdownIt
from markdown_it.rules_inline import StateInline

# A username (Django's default validator's characters) and a room slug.
_MENTION = re.compile(r"@([\w.@+-]{1,150})")
_ROOM = re.compile(r"#([a-z0-9][a-z0-9_-]{0,63})")
_WORD = re.compile(r"\w")

TAGS = {"p", "br", "em", "strong", "s", "code", "pre", "blockquote", "ul", "ol", "li", "a", "span", "hr"}
ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}, "span": {"data-username", "data-room"}}
CLASSES = {"span": {"mention", "room-ref"}, "a": {"file"}}
# A link to a file shared in a room (chat.services.uploads): the page shows images from it.
_FILE_HREF = re.compile(r"^/files/\d+/")

# Text in which Markdown and link finding have nothing to do: only letters,
# digits, emoji, spaces, line breaks and punctuation they never act on, and
# nothing shaped like a link, a list item, a rule or an indented line. Most
# chat lines are such text; they skip the parser, which costs about thirty
# times as much (docs/PERFORMANCE.md, "Rich text").
_PLAIN = re.compile(r"(?:[^\W_]|[ ,.?;:!|'\"()$%/=+\-\n\u2600-\u27bf\u200d\ufe0f\U0001f300-\U0001faff])*")
_SHAPED = re.compile(r"\.[^\W_]|^ *(?:[-+=]|\d+[.)])|^ {4}|//|(?i:https?|ftp|mailto):", re.MULTILINE)


def _reference(pattern: re.Pattern[str], token_type: str):  # type: ignore[no-untyped-def]
    """An inline rule: ``pattern`` at a word's start (so not inside an e-mail address) becomes ``token_type``."""

    def rule(state: StateInline, silent: bool) -> bool:
        start = state.pos
        if start > 0 and _WORD.match(state.src[start - 1]):
            return False
        found = pattern.match(state.src, start)
        if found is None:
            return False
        name = found.group(1).rstrip(".")  # "see @bob." names bob
        if not silent:
            token = state.push(token_type, "", 0)
            token.content = name
        state.pos = start + 1 + len(name)
        return True

    return rule


def _render_mention(self, tokens, idx, options, env) -> str:  # type: ignore[no-untyped-def]
    name = self.escapeHtml(tokens[idx].content) if hasattr(self, "escapeHtml") else _escape(tokens[idx].content)
    return f'<span class="mention" data-username="{name}">@{name}</span>'


def _render_link_open(self, tokens, idx, options, env) -> str:  # type: ignore[no-untyped-def]
    token = tokens[idx]
    if _FILE_HREF.match(token.attrGet("href") or ""):
        token.attrSet("class", "file")
    return self.renderToken(tokens, idx, options, env)


def _render_room(self, tokens, idx, options, env) -> str:  # type: ignore[no-untyped-def]
    slug = _escape(tokens[idx].content)
    return f'<span class="room-ref" data-room="{slug}">#{slug}</span>'


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    md = (
        MarkdownIt("commonmark", {"html": False, "linkify": True, "breaks": True, "typographer": False})
        .enable(["linkify", "strikethrough"])
        .disable(["heading", "lheading", "image", "html_block", "html_inline"])
    )
    md.inline.ruler.before("emphasis", "mention", _reference(_MENTION, "mention"))
    md.inline.ruler.before("emphasis", "room_ref", _reference(_ROOM, "room_ref"))
    md.add_render_rule("link_open", _render_link_open)
    md.add_render_rule("mention", _render_mention)
    md.add_render_rule("room_ref", _render_room)
    return md


def body_html(body: str) -> str:
    """``body`` as sanitized HTML ("" for an empty body)."""
    if not body:
        return ""
    if _PLAIN.fullmatch(body) and _SHAPED.search(body) is None:
        return plain_html(body)
    return markdown_html(body)


def plain_html(body: str) -> str:
    """What :func:`markdown_html` makes of text with no markup: paragraphs and line breaks.

    Such text holds no ``&``, ``<`` or ``>``, so it needs no escaping; a line's
    spaces around it do not show, and blank lines part paragraphs.
    """
    lines = [line.strip(" ") for line in body.split("\n")]
    paragraphs: list[list[str]] = [[]]
    for line in lines:
        if line:
            paragraphs[-1].append(line)
        elif paragraphs[-1]:
            paragraphs.append([])
    return "\n".join("<p>" + "<br>\n".join(p) + "</p>" for p in paragraphs if p)


def markdown_html(body: str) -> str:
    rendered = _markdown().render(body)
    return nh3.clean(
        rendered,
        tags=TAGS,
        attributes=ATTRIBUTES,
        allowed_classes=CLASSES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow ugc",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        attribute_filter=_only_known_links,
    ).strip()


def _only_known_links(tag: str, attribute: str, value: str) -> str | None:
    """Links go to the web, to mail, or to a file shared here: no other address of this site."""
    if tag == "a" and attribute == "href" and not (value.startswith(("http:", "https:", "mailto:")) or _FILE_HREF.match(value)):
        return None
    return value
