"""Match requests to operations of GitHub's REST OpenAPI description and validate them with jsonschema."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from jsonschema import Draft4Validator, FormatChecker, validators
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4


NPM = Path(__file__).resolve().parents[1] / "npm" / "node_modules"
SPEC_PATH = NPM / "@octokit" / "openapi" / "generated" / "api.github.com.json"
SPEC_URI = "urn:github-openapi"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _nullable(keyword: str):
    """Wrap a Draft 4 keyword so that `nullable: true` (OpenAPI 3.0, not JSON Schema) also admits null."""
    original = Draft4Validator.VALIDATORS[keyword]

    def check(validator, value, instance, schema):
        if instance is None and schema.get("nullable") is True:
            return
        yield from original(validator, value, instance, schema)

    return check


# OpenAPI 3.0.3 schemas are a Draft 4 dialect plus `nullable`; formats are not checked by default.
OpenAPIValidator = validators.extend(Draft4Validator, {"type": _nullable("type"), "enum": _nullable("enum")})
FORMATS = FormatChecker(formats=())


@FORMATS.checks("date-time", raises=ValueError)
def _is_rfc3339(value: object) -> bool:
    # RFC 3339 (what OpenAPI's date-time means) needs a full date, a time and an offset: GitHub's own
    # "YYYY-MM-DDTHH:MM:SSZ" passes, a naive `datetime.now().isoformat()` does not.
    if not isinstance(value, str):
        return True
    if not re.fullmatch(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)", value):
        raise ValueError(f"{value!r} is not an RFC 3339 date-time such as 2026-01-01T00:00:00Z")
    datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    return True


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


@dataclass
class Parameter:
    name: str
    location: str
    required: bool
    schema: dict
    pointer: str
    multi_segment: bool = False


@dataclass
class Operation:
    """One method + path template of the description, with what is needed to check a request to it."""

    method: str
    template: str
    operation_id: str
    doc_url: str
    pointer: str
    parameters: list[Parameter]
    body_pointer: str | None
    body_required: bool
    body_media: tuple[str, ...]
    regex: re.Pattern = field(repr=False)
    groups: dict[str, str] = field(repr=False)

    @property
    def specificity(self) -> tuple[int, int]:
        # `/commits/{ref}/check-runs` must win over `/commits/{ref}` whose `ref` may span segments.
        literal = sum(1 for segment in self.template.split("/") if segment and "{" not in segment)
        multi = sum(1 for p in self.parameters if p.location == "path" and p.multi_segment)
        return literal, -multi


class OpenAPI:
    """GitHub's REST description: `match()` a request to an operation, `check_request()` it, `check_response()`."""

    def __init__(self, path: Path = SPEC_PATH):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run `cd tests/npm && npm ci` (or `make setup-dev`)")
        with open(path, "rb") as file:
            self.document = json.load(file)
        self.registry = Registry().with_resource(SPEC_URI, Resource.from_contents(self.document, DRAFT4))
        self.operations: dict[str, list[Operation]] = {}
        for template, item in self.document["paths"].items():
            for method in item:
                if method in METHODS:
                    self.operations.setdefault(method.upper(), []).append(self._operation(method, template, item))
        for candidates in self.operations.values():
            candidates.sort(key=lambda op: op.specificity, reverse=True)
        self.by_id = {op.operation_id: op for ops in self.operations.values() for op in ops}

    # -- building -------------------------------------------------------------------------------------------------

    def resolve(self, node: Any, pointer: str) -> tuple[Any, str]:
        """Follow local `$ref`s from `node` (found at `pointer`); return the target and its pointer."""
        while isinstance(node, dict) and "$ref" in node:
            pointer = node["$ref"].removeprefix("#")
            node = self.document
            for token in pointer.strip("/").split("/"):
                node = node[token.replace("~1", "/").replace("~0", "~")]
        return node, pointer

    def _operation(self, method: str, template: str, item: dict) -> Operation:
        pointer = f"/paths/{_escape(template)}/{method}"
        operation = item[method]
        parameters: dict[tuple[str, str], Parameter] = {}
        # Path-item parameters apply to every method; an operation's own parameter of the same name wins.
        for base, raw_list in (
            (f"/paths/{_escape(template)}", item.get("parameters", [])),
            (pointer, operation.get("parameters", [])),
        ):
            for index, raw in enumerate(raw_list):
                param, param_pointer = self.resolve(raw, f"{base}/parameters/{index}")
                parameters[param["name"], param["in"]] = Parameter(
                    name=param["name"],
                    location=param["in"],
                    required=bool(param.get("required")) or param["in"] == "path",
                    schema=self.resolve(param.get("schema", {}), "")[0],
                    pointer=f"{param_pointer}/schema",
                    multi_segment=bool(param.get("x-multi-segment")),
                )
        body_pointer, body_required, media = None, False, ()
        if "requestBody" in operation:
            body, body_at = self.resolve(operation["requestBody"], f"{pointer}/requestBody")
            body_required = bool(body.get("required"))
            media = tuple(body.get("content", {}))
            if "application/json" in body.get("content", {}):
                body_pointer = f"{body_at}/content/{_escape('application/json')}/schema"
        groups: dict[str, str] = {}

        def group(match: re.Match) -> str:
            name = match.group(1)
            key = f"p{len(groups)}"
            groups[key] = name
            spec = parameters.get((name, "path"))
            return f"(?P<{key}>.+?)" if spec is not None and spec.multi_segment else f"(?P<{key}>[^/]+)"

        regex = re.compile("^" + re.sub(r"\\\{([^}]+)\\\}", group, re.escape(template)) + "$")
        return Operation(
            method=method.upper(),
            template=template,
            operation_id=operation.get("operationId", f"{method} {template}"),
            doc_url=operation.get("externalDocs", {}).get("url", "https://docs.github.com/rest"),
            pointer=pointer,
            parameters=list(parameters.values()),
            body_pointer=body_pointer,
            body_required=body_required,
            body_media=media,
            regex=regex,
            groups=groups,
        )

    @functools.cache  # noqa: B019 - one OpenAPI per session, its validators live as long
    def validator(self, pointer: str):
        """A compiled validator for the schema at `pointer`; its `$ref`s resolve inside the whole description."""
        return OpenAPIValidator({"$ref": f"{SPEC_URI}#{pointer}"}, registry=self.registry, format_checker=FORMATS)

    # -- requests -------------------------------------------------------------------------------------------------

    def match(self, method: str, raw_path: str) -> tuple[Operation, dict[str, str]] | None:
        """The operation for `method raw_path` (still percent-encoded) and its decoded path parameters."""
        for op in self.operations.get(method.upper(), ()):
            found = op.regex.match(raw_path)
            if found:
                return op, {op.groups[key]: unquote(value) for key, value in found.groupdict().items()}
        return None

    def check_request(
        self,
        op: Operation,
        path_params: dict[str, str],
        query: dict[str, str],
        body: Any,
        has_body: bool,
        content_type: str | None,
    ) -> list[str]:
        """Every way the request differs from the operation's description, as readable strings."""
        errors: list[str] = []
        declared = {(p.name, p.location): p for p in op.parameters}
        for param in op.parameters:
            if param.location == "path":
                errors += self._check_param(param, path_params.get(param.name))
            elif param.location == "query":
                if param.name in query:
                    errors += self._check_param(param, query[param.name])
                elif param.required:
                    errors.append(f"query parameter {param.name!r} is required")
        for name in query:
            # GitHub ignores unknown query parameters, so a misspelt `perpage` would silently give 30 items.
            if (name, "query") not in declared:
                errors.append(f"query parameter {name!r} is not one of this operation's")
        if not has_body:
            if op.body_required:
                errors.append("a request body is required")
            return errors
        if not op.body_media:
            errors.append("this operation takes no request body")
            return errors
        media = (content_type or "").split(";")[0].strip().lower()
        if media not in op.body_media:
            errors.append(f"content type {media or None!r} is not one of {list(op.body_media)}")
            return errors
        if op.body_pointer is not None:
            for error in sorted(self.validator(op.body_pointer).iter_errors(body), key=lambda e: list(e.path))[:5]:
                errors.append(f"body {error.json_path}: {_explain(error)}")
        return errors

    def _check_param(self, param: Parameter, raw: str | None) -> list[str]:
        if raw is None:
            return [f"{param.location} parameter {param.name!r} is required"]
        value: Any = raw
        kinds = {param.schema.get("type")} | {branch.get("type") for branch in param.schema.get("oneOf", [])}
        # Query strings and paths carry text: convert to the declared type before validating.
        if "integer" in kinds and re.fullmatch(r"-?\d+", raw):
            value = int(raw)
        elif "number" in kinds and re.fullmatch(r"-?\d+(\.\d+)?", raw):
            value = float(raw)
        elif "boolean" in kinds and raw in ("true", "false"):
            value = raw == "true"
        elif "array" in kinds and "string" not in kinds:
            value = raw.split(",")
        return [
            f"{param.location} parameter {param.name}={raw!r}: {_short(error.message)}"
            for error in self.validator(param.pointer).iter_errors(value)
        ]

    # -- responses ------------------------------------------------------------------------------------------------

    def check_response(self, op: Operation, status: int, body: Any) -> list[str]:
        """How a JSON response body differs from the description's schema for that status (the fake's own check)."""
        responses = self.resolve({"$ref": f"#{op.pointer}"}, op.pointer)[0].get("responses", {})
        if str(status) not in responses:
            return [f"status {status} is not documented (documented: {sorted(responses)})"]
        response, at = self.resolve(responses[str(status)], f"{op.pointer}/responses/{status}")
        if "application/json" not in response.get("content", {}):
            return []
        pointer = f"{at}/content/{_escape('application/json')}/schema"
        found = sorted(self.validator(pointer).iter_errors(body), key=lambda e: list(e.path))
        return [f"{error.json_path}: {_explain(error)}" for error in found[:5]]


def _explain(error) -> str:
    """The error's message, plus why each branch of a failed anyOf/oneOf failed (the bare message says nothing)."""
    message = error.message
    if len(message) > 240:
        # jsonschema quotes the whole instance (51 annotations, a 70 kB summary); name the keyword instead.
        message = f"fails {error.validator}={error.validator_value!r} (got {_short(repr(error.instance), 80)})"
    if error.context:
        reasons = dict.fromkeys(f"{e.json_path}: {_short(e.message, 120)}" for e in error.context)
        message += " (" + "; ".join(list(reasons)[:4]) + ")"
    return message


def _short(message: str, limit: int = 240) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


@functools.cache
def load_openapi(path: Path = SPEC_PATH) -> OpenAPI:
    """The description, parsed once per process (about 0.3 s for 13 MB)."""
    return OpenAPI(path)
