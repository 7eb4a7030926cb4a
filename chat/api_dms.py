"""JSON API endpoints for direct-message conversations. Mounted by chatsite.api."""

from __future__ import annotations

from ninja import Router

router = Router()
