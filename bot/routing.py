"""All event handlers, combined into one gidgethub router."""

from __future__ import annotations

from gidgethub.routing import Router

from bot.handlers import issue_comment, pull_request


router = Router(pull_request.router, issue_comment.router)
