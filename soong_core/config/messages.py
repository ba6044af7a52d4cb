"""Problem lines: one per problem, naming the key, the value, what is expected and where
the value came from, so a user fixes every problem in one go.

Validation errors reach them through :func:`problem_handler`, a cerberus error handler
(a ``cerberus.errors.BasicErrorHandler`` whose ``Validator.errors`` are those lines).
Secrets are masked wherever a value is shown.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Callable, Iterable, Iterator

from soong_core.config.coerce import expected
from soong_core.config.schema import ConfigSchema, unknown_key_message
from soong_core.errors import ConfigError

SECRET_MASK = "********"

Where = Callable[[Iterable[str]], str]
"""Given the keys a problem involves, ``" (in /path)"``: where their values came from."""


def mask_secret(value: Any) -> Any:
    """What to display of a secret: ``None`` stays ``None`` (unset is no secret), long
    strings show their last 4 characters (enough to tell two keys apart), anything
    else is ``********``."""
    if value is None or value == "":
        return value
    if isinstance(value, str) and len(value) >= 16:
        return "****" + value[-4:]
    return SECRET_MASK


def show_value(value: Any, *, secret: bool = False) -> str:
    """A value as a problem line shows it: JSON-like, short, and masked if secret."""
    if secret:
        return json.dumps(mask_secret(value))
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def raise_problems(problems: list[str]) -> None:
    """Raise one ConfigError: the first problem as message, the others as hints."""
    if problems:
        raise ConfigError(problems[0], hints=problems[1:])


def problem_handler(schema: ConfigSchema, where: Where) -> Any:
    """A cerberus error handler whose ``Validator.errors`` is a list of problem lines,
    one per failed rule (a rule of a nested schema counts, its group does not)."""
    return _handler_class()(schema=schema, where=where)


@functools.lru_cache(maxsize=1)
def _handler_class() -> type:
    """The handler class, made on first use: cerberus is imported only then."""
    from cerberus import errors as codes
    from cerberus.errors import BasicErrorHandler

    class ProblemHandler(BasicErrorHandler):
        def __init__(self, tree: Any = None, *, schema: ConfigSchema, where: Where) -> None:
            super().__init__(tree)
            self.schema = schema
            self.where = where
            self.problems: list[str] = []

        def __call__(self, errors: Iterable[Any]) -> list[str]:
            self.clear()
            self.extend(errors)
            return list(self.problems)

        def __iter__(self) -> Iterator[str]:
            return iter(self.problems)

        def clear(self) -> None:
            super().clear()
            self.problems = []

        def add(self, error: Any) -> None:
            for leaf in _leaf_errors([error]):
                self.problems.append(self.describe(leaf))

        def describe(self, error: Any) -> str:
            path = tuple(error.document_path)
            where = self.where([".".join(str(part) for part in path[:2])])
            key = _display_path(path)
            if error.code == codes.UNKNOWN_FIELD.code:
                return unknown_key_message(self.schema, ".".join(str(p) for p in path[:2])
                                           ) + where
            secret = len(path) >= 2 and self.schema.is_secret(f"{path[0]}.{path[1]}")
            value = show_value(error.value, secret=secret)
            rule, constraint = error.rule, error.constraint
            if rule == "type":
                return f"{key}: {value} is not {expected({'type': constraint})}{where}"
            if rule == "min":
                return f"{key}: {value} is below the minimum {constraint}{where}"
            if rule == "max":
                return f"{key}: {value} is above the maximum {constraint}{where}"
            if rule == "allowed":
                return f"{key}: {value} is not one of {', '.join(map(str, constraint))}{where}"
            if rule == "nullable":
                return f"{key}: null is not allowed{where}"
            if rule == "required":
                return f"{key}: is required{where}"
            if rule == "regex":
                return f"{key}: {value} does not match {constraint}{where}"
            return f"{key}: {value}: {self.message(error)}{where}"

        def message(self, error: Any) -> str:
            """cerberus' own words for a rule this handler has none for."""
            template = self.messages.get(error.code, "is invalid ({rule})")
            try:
                return str(template.format(*error.info, constraint=error.constraint,
                                           field=error.field, value=error.value,
                                           rule=error.rule))
            except (IndexError, KeyError):
                return f"breaks rule {error.rule}"

    return ProblemHandler


def _leaf_errors(errors: Iterable[Any]) -> Iterator[Any]:
    for error in errors:
        if error.is_group_error and error.child_errors:
            yield from _leaf_errors(error.child_errors)
        else:
            yield error


def _display_path(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        if isinstance(part, int) and text:
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text
