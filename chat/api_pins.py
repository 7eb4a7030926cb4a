"""JSON API endpoints for pinned and saved messages. Mounted by chatsite.api."""

from __future__ import annotations

from ninja import Router

router = Router()
