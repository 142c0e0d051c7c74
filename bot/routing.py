"""All event handlers, combined into one gidgethub router."""

from __future__ import annotations

from gidgethub.routing import Router

from bot.handlers import pull_request


router = Router(pull_request.router)
