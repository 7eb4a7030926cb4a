"""Message bodies rendered from Markdown and sanitized (chat.rendering), on the wire and on the page."""

from __future__ import annotations

import random
import re
from html.parser import HTMLParser

import pytest
from django.test import Client

from chat import rendering
from chat.rendering import body_html
from chat.serialization import message_dict
from chat.services import messages as message_services
from tests.conftest import PASSWORD

LINK_ATTRS = 'target="_blank" rel="noopener noreferrer nofollow ugc"'


@pytest.mark.parametrize(
    "body,html",
    [
        ("hello", "<p>hello</p>"),
        ("*it* **bold** ~~gone~~ `code`", "<p><em>it</em> <strong>bold</strong> <s>gone</s> <code>code</code></p>"),
        ("line one\nline two\n\nnext", "<p>line one<br>\nline two</p>\n<p>next</p>"),
        ("```\nx = 1 < 2\n```", "<pre><code>x = 1 &lt; 2\n</code></pre>"),
        ("> quoted\n\n- a\n- b\n\n3. c", "<blockquote>\n<p>quoted</p>\n</blockquote>\n<ul>\n<li>a</li>\n<li>b</li>\n</ul>\n<ol start=\"3\">\n<li>c</li>\n</ol>"),
        ("[docs](https://example.com/a?b=1)", f'<p><a href="https://example.com/a?b=1" {LINK_ATTRS}>docs</a></p>'),
        ("see https://example.com.", f'<p>see <a href="https://example.com" {LINK_ATTRS}>https://example.com</a>.</p>'),
        ("ask @bob, not bob@example.com", f'<p>ask <span class="mention" data-username="bob">@bob</span>, not <a href="mailto:bob@example.com" {LINK_ATTRS}>bob@example.com</a></p>'),
        ("in #general.", '<p>in <span class="room-ref" data-room="general">#general</span>.</p>'),
        ("# not a heading", "<p># not a heading</p>"),
        ("`@bob` stays code", "<p><code>@bob</code> stays code</p>"),
    ],
)
def test_what_renders(body, html):
    assert body_html(body) == html


XSS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x](data:text/html;base64,PHNjcmlwdD4=)",
    "<javascript:alert(1)>",
    "![x](javascript:alert(1))",
    '[x](https://example.com "a\\" onmouseover=\\"alert(1))")',
    "<a href='javascript:alert(1)'>x</a>",
    "@<img/src/onerror=alert(1)>",
    "#<svg/onload=alert(1)>",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "```\n</code><script>alert(1)</script>\n```",
    "[home](/logout/)",
    "[x](//evil.example/x)",
    "[x](/files/../../admin/)",
]


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, attrs))


ALLOWED_ATTRIBUTES = {"href", "title", "target", "rel", "start", "class", "data-username", "data-room"}


@pytest.mark.parametrize("probe", XSS)
def test_markup_in_a_body_never_becomes_markup(probe):
    """Whatever a body holds, the HTML has only the allowed elements and attributes, and links only to web or mail."""
    html = body_html(probe)
    parser = _Elements()
    parser.feed(html)
    for tag, attrs in parser.found:
        assert tag in rendering.TAGS, html
        for name, value in attrs:
            assert name in ALLOWED_ATTRIBUTES, html
            if name == "href":
                assert value and (value.startswith(("https:", "http:", "mailto:")) or re.match(r"^/files/\d+/", value)), html
            if name == "class":
                assert value in ("mention", "room-ref"), html


def test_plain_text_takes_the_short_way_to_the_same_html():
    """Text with nothing for Markdown to do is not parsed; what it gets is what the parser would make."""
    rng = random.Random(7)
    alphabets = [
        "abc XYZ é漢字🎉👍🏽\"'.,?;()$%/=\n  0123-+",
        "ab \n\n  -1.)=+\"'-",
        "x y  \n\n\n  z.1 a.",
        "ab:|!/ \nhtp",
        "a|b|c\n-|-\n:x",
    ]
    checked = 0
    for alphabet in alphabets:
        for _ in range(5_000):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
            if not text.strip() or not rendering._PLAIN.fullmatch(text) or rendering._SHAPED.search(text):
                continue
            checked += 1
            assert rendering.plain_html(text) == rendering.markdown_html(text), repr(text)
    assert checked > 5_000


@pytest.mark.django_db
def test_messages_carry_their_html_and_a_deleted_one_none(chat_world):
    room, owner = chat_world["public"], chat_world["owner"]
    message, _ = message_services.message_create(room=room, author=owner, body="**hi** <b>")
    assert message_dict(message)["html"] == "<p><strong>hi</strong> &lt;b&gt;</p>"
    message_services.message_delete(message=message_services_loaded(owner, message), by=owner)
    message.refresh_from_db()
    assert message_dict(message)["html"] == "" and message_dict(message)["body"] == ""


def message_services_loaded(user, message):
    from chat.selectors import history as history_selectors

    return history_selectors.message_get_for_user(user=user, message_id=message.id)


@pytest.mark.django_db
def test_the_api_and_the_page_show_the_rendered_body(chat_world, api_client):
    room, owner, member = chat_world["public"], chat_world["owner"], chat_world["member"]
    message_services.message_create(room=room, author=owner, body="**bold** and <script>alert(1)</script>")
    items = api_client(member).get(f"/api/v1/rooms/{room.id}/messages").json()["items"]
    assert items[-1]["body"] == "**bold** and <script>alert(1)</script>"
    assert items[-1]["html"] == "<p><strong>bold</strong> and &lt;script&gt;alert(1)&lt;/script&gt;</p>"
    client = Client()
    assert client.login(username=member.username, password=PASSWORD)
    page = client.get(f"/p/{room.project.slug}/r/{room.slug}/").content.decode()
    assert "<strong>bold</strong> and &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)</script>" not in page
    # The raw body rides along for the editor, escaped as an attribute.
    assert 'data-body="**bold** and &lt;script&gt;alert(1)&lt;/script&gt;"' in page
