"""Template filters for message text."""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString, mark_safe

from chat.rendering import body_html

register = template.Library()


@register.filter
def message_html(body: str) -> SafeString:
    """A message body as the sanitized HTML of chat.rendering (safe: nh3 kept only its allowlist)."""
    return mark_safe(body_html(body))
