"""Path routing for the simulator: a table of routes, matched in order.

Templates use the spec's own spelling (``/api/v1/instances/{id}``); literal paths are
listed before templated ones that would also match them (``firewall-rulesets/global``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from soong_plugins.lambda_labs.simulator import errors

if TYPE_CHECKING:
    from soong_plugins.lambda_labs.simulator.app import Simulator


@dataclass(frozen=True)
class Call:
    """What a route handler receives."""

    simulator: Simulator
    params: Mapping[str, str]
    query: Mapping[str, str]
    read_body: Callable[[], Any]
    """Parses the body as JSON when called (``global/invalid-parameters`` if it is not)."""
    raw: bytes = b""
    """The body as sent (a control route whose body is optional looks at it first)."""

    def body(self) -> Any:
        return self.read_body()


Handler = Callable[[Call], Any]


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    handler: Handler
    operation: str
    """The spec's operationId (API routes) or the control action's name."""
    kind: str = "api"
    """``api`` (rate limited, faults apply) or ``control`` (neither)."""
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = re.split(r"(\{[^}]+\})", self.template)
        regex = "".join(f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") else re.escape(p)
                        for p in parts)
        object.__setattr__(self, "pattern", re.compile(f"^{regex}$"))


class Router:
    def __init__(self, routes: list[Route]) -> None:
        self.routes = list(routes)
        self.methods = frozenset(route.method for route in self.routes) | (
            {"HEAD"} if any(route.method == "GET" for route in self.routes) else set())
        """Every method some route serves (HEAD wherever GET is)."""

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route for ``method path`` and its parameters; HEAD takes GET's route (the
        server sends no body). 404 (API error) for an unknown path; 405 for a method the
        path does not serve, and for one no route serves at all (TRACE, CONNECT...) on
        any path, its ``Allow`` then naming what the server serves."""
        wanted = "GET" if method == "HEAD" else method
        allowed: set[str] = set()
        for route in self.routes:
            found = route.pattern.match(path)
            if found is None:
                continue
            if route.method == wanted:
                return route, found.groupdict()
            allowed.add(route.method)
        if "GET" in allowed:
            allowed.add("HEAD")
        if allowed:
            raise errors.method_not_allowed(method, path, sorted(allowed))
        if method not in self.methods:
            raise errors.method_not_allowed(method, path, sorted(self.methods))
        raise errors.no_such_path(method, path)
