"""One shared fake GitHub for the test suite: a stateful REST server checked against GitHub's OpenAPI description.

`FakeGitHub` is the server (see tests/bot/conftest.py for the `fake_github` and `github` fixtures); the webhook
helpers build signed deliveries from GitHub's real example payloads.
"""

from .server import Call, FakeGitHub, Fault, GitHubError
from .spec import OpenAPI, load_openapi
from .webhooks import delivery, example, examples, issue_comment_payload, pull_request_payload, sign


__all__ = [
    "Call",
    "FakeGitHub",
    "Fault",
    "GitHubError",
    "OpenAPI",
    "delivery",
    "example",
    "examples",
    "issue_comment_payload",
    "load_openapi",
    "pull_request_payload",
    "sign",
]
