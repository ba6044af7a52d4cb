"""The official Lambda Cloud API description (OpenAPI 3.1), shipped as package data.

The simulator serves what this file describes, and the conformance tests check every
request and response against it. It is a verbatim copy of Lambda's published
``lambda-cloud-openapi-1.8.3.json``: edit nothing in it; a newer version replaces it whole.

:class:`SpecValidator` imports ``jsonschema`` (a test dependency) only when built, so
importing this module costs nothing at run time.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

SPEC_FILE = "lambda-cloud-openapi-1.8.3.json"
SPEC_VERSION = "1.8.3"
SPEC_URI = f"urn:lambda-cloud-openapi:{SPEC_VERSION}"
"""The base URI the spec is registered under, so ``#/components/...`` refs resolve in it."""

API_PREFIX = "/api/v1"

ERROR_ENVELOPE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "suggestion": {"type": "string"},
            },
        },
    },
}
"""The error object of the spec's introduction ("Error responses"): what a response the
spec does not list (429, 5xx) must still look like."""

EDGE_RATE_LIMIT_BODY = "error code: 1015"
"""The plain-text body of a 429 from Lambda's Cloudflare edge, which enforces the rate
limits (Lambda's docs on rate limiting): a 429 is this or the envelope."""

UNLISTED_INVALID_PARAMETERS = "global/invalid-parameters"
"""A malformed request body is refused with 400 ``global/invalid-parameters`` on every
operation that takes a body, as the API's request validation does, even where the
operation's own response list forgets the 400 (terminate, restart, firewall rules)."""


@functools.lru_cache(maxsize=1)
def _spec_text() -> str:
    return resources.files(__name__).joinpath(SPEC_FILE).read_text(encoding="utf-8")


def load_spec() -> dict[str, Any]:
    """A fresh copy of the spec as a dictionary (callers may modify it)."""
    spec: dict[str, Any] = json.loads(_spec_text())
    return spec


@dataclass(frozen=True)
class Operation:
    method: str
    """Lower case, as in the spec (``get``, ``post``...)."""
    template: str
    """The spec's path, e.g. ``/api/v1/instances/{id}``."""
    operation_id: str
    pattern: re.Pattern[str]


def _compile(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    regex = "".join(f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"^{regex}$")


def operations(spec: Mapping[str, Any] | None = None) -> list[Operation]:
    """Every operation of the spec; literal paths before templated ones, so
    ``/firewall-rulesets/global`` is not taken for ``/firewall-rulesets/{id}``."""
    spec = spec if spec is not None else load_spec()
    found = [Operation(method, template, op.get("operationId", ""), _compile(template))
             for template, item in spec["paths"].items()
             for method, op in item.items()
             if method in ("get", "put", "post", "delete", "patch")]
    return sorted(found, key=lambda op: ("{" in op.template, op.template))


def _pointer(*parts: str) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


class SpecValidator:
    """Checks requests and responses against the spec with ``jsonschema`` (2020-12, the
    dialect of OpenAPI 3.1). Each check returns a list of problems, empty when valid.

    Responses the spec does not list are accepted only where the spec's own text says
    what they look like: 429 and 5xx must be the error envelope of its introduction
    (a 429 may also be the edge's plain text, :data:`EDGE_RATE_LIMIT_BODY`),
    a 404 for a path the spec does not have must be that envelope too, and a 400
    ``global/invalid-parameters`` may answer any operation with a request body.
    """

    def __init__(self, spec: Mapping[str, Any] | None = None) -> None:
        from jsonschema import Draft202012Validator
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012

        self.spec = dict(spec) if spec is not None else load_spec()
        resource = Resource.from_contents(self.spec, default_specification=DRAFT202012)
        self._registry = Registry().with_resource(SPEC_URI, resource)
        self._validator_class = Draft202012Validator
        self._operations = operations(self.spec)
        self._cache: dict[str, Validator] = {}

    def _validator(self, pointer: str) -> Validator:
        if pointer not in self._cache:
            schema = {"$ref": f"{SPEC_URI}#{pointer}"}
            self._cache[pointer] = self._validator_class(
                schema, registry=self._registry,
                format_checker=self._validator_class.FORMAT_CHECKER)
        return self._cache[pointer]

    def _errors(self, pointer: str | None, body: Any, schema: Mapping[str, Any] | None = None
                ) -> list[str]:
        validator = (self._validator(pointer) if pointer is not None
                     else self._validator_class(schema or {}))
        return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                for e in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))]

    def find(self, method: str, path: str) -> Operation | None:
        """The operation serving ``method path`` (the path without its query), if any."""
        method = method.lower()
        for op in self._operations:
            if op.method == method and op.pattern.match(path):
                return op
        return None

    def path_exists(self, path: str) -> bool:
        return any(op.pattern.match(path) for op in self._operations)

    def validate_request(self, method: str, path: str, body: Any) -> list[str]:
        """Problems with a request body the client sent (``body`` parsed from JSON)."""
        op = self.find(method, path)
        if op is None:
            return [f"{method.upper()} {path} is not an operation of the spec"]
        operation = self.spec["paths"][op.template][op.method]
        if "requestBody" not in operation:
            return [] if body in (None, b"", "") else [f"{op.operation_id} takes no body"]
        pointer = _pointer("paths", op.template, op.method, "requestBody", "content",
                           "application/json", "schema")
        return self._errors(pointer, body)

    def validate_query(self, method: str, path: str, query: Mapping[str, Any]) -> list[str]:
        """Problems with a request's query string (``{name: value}``): each name must be
        a query parameter of the operation, each value valid for its schema, and every
        required one present."""
        op = self.find(method, path)
        if op is None:
            return [f"{method.upper()} {path} is not an operation of the spec"]
        declared = self.spec["paths"][op.template][op.method].get("parameters", [])
        parameters = {p["name"]: (index, p) for index, p in enumerate(declared)
                      if p.get("in") == "query"}
        problems = [f"{op.operation_id} has no query parameter {name!r}"
                    for name in query if name not in parameters]
        problems += [f"{op.operation_id} requires query parameter {name!r}"
                     for name, (_, p) in parameters.items()
                     if p.get("required") and name not in query]
        for name, value in query.items():
            if name in parameters and "schema" in parameters[name][1]:
                pointer = _pointer("paths", op.template, op.method, "parameters",
                                   str(parameters[name][0]), "schema")
                problems += [f"query {name}: {problem}"
                             for problem in self._errors(pointer, value)]
        return problems

    def validate_response(self, method: str, path: str, status: int, body: Any) -> list[str]:
        """Problems with a response (``body`` parsed from JSON, or the text of a 429
        from the edge) to ``method path``."""
        if status == 429 and body == EDGE_RATE_LIMIT_BODY:
            return []
        op = self.find(method, path)
        if op is None:
            if status in (404, 405) or status == 429 or status >= 500:
                return self._errors(None, body, ERROR_ENVELOPE)
            return [f"{method.upper()} {path} is not in the spec, yet answered {status}"]
        responses = self.spec["paths"][op.template][op.method]["responses"]
        if str(status) in responses:
            pointer = _pointer("paths", op.template, op.method, "responses", str(status),
                               "content", "application/json", "schema")
            return self._errors(pointer, body)
        if status == 429 or status >= 500:
            return self._errors(None, body, ERROR_ENVELOPE)
        has_body = "requestBody" in self.spec["paths"][op.template][op.method]
        if status == 400 and has_body:
            problems = self._errors(None, body, ERROR_ENVELOPE)
            code = body.get("error", {}).get("code") if isinstance(body, dict) else None
            if not problems and code != UNLISTED_INVALID_PARAMETERS:
                problems.append(f"unlisted 400 of {op.operation_id} has code {code!r}, "
                                f"not {UNLISTED_INVALID_PARAMETERS!r}")
            return problems
        return [f"{op.operation_id} answered {status}, which the spec does not list "
                f"({', '.join(responses)})"]
