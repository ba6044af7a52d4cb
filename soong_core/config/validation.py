"""Validation: cerberus normalises a document (defaults filled in) and checks each key's
rules; cross checks look at several keys at once. Problems come back as lines
(:mod:`soong_core.config.messages`), each saying where its values came from.

cerberus is imported by the functions that need it (``soong --help`` must stay fast).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeGuard

from soong_core.config.layers import DEFAULT, Source
from soong_core.config.messages import Where, problem_handler, show_value
from soong_core.config.schema import ConfigSchema


def _check_lease_within_hard_timeout(document: Mapping[str, Any]
                                     ) -> Iterator[tuple[tuple[str, ...], str]]:
    defaults = document.get("defaults")
    if not isinstance(defaults, Mapping):
        return
    lease, hard = defaults.get("lease_hours"), defaults.get("hard_timeout_hours")
    if _is_number(lease) and _is_number(hard) and lease > hard:
        yield (("defaults.lease_hours", "defaults.hard_timeout_hours"),
               f"defaults.lease_hours: {show_value(lease)} is more than "
               f"defaults.hard_timeout_hours ({show_value(hard)}); a lease cannot outlast "
               "the hard timeout")


def _check_finite(document: Mapping[str, Any]) -> Iterator[tuple[tuple[str, ...], str]]:
    """YAML reads ``.nan`` and ``.inf`` as floats, and NaN passes every min/max rule."""
    for section, values in document.items():
        if not isinstance(values, Mapping):
            continue
        for key, value in values.items():
            items = value if isinstance(value, list) else [value]
            if any(isinstance(item, float) and not math.isfinite(item) for item in items):
                yield ((f"{section}.{key}",),
                       f"{section}.{key}: {show_value(value)} is not a finite number")


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


CrossCheck = Callable[[Mapping[str, Any]], Iterator[tuple[tuple[str, ...], str]]]

CROSS_CHECKS: tuple[CrossCheck, ...] = (_check_finite, _check_lease_within_hard_timeout)
"""Checks across keys, run on the normalised document: each yields the keys involved
(to say where their values came from) and the problem."""


def where_from(sources: Mapping[str, Source]) -> Where:
    """How a problem involving some keys says where their values came from (``sources``
    by ``"section"`` and ``"section.key"``; absent means default). Of several, it names
    what the user set, not the defaults around it."""

    def where(keys: Iterable[str]) -> str:
        phrases = dict.fromkeys(sources.get(key, DEFAULT).phrase for key in keys)
        if len(phrases) > 1:
            phrases.pop(DEFAULT.phrase, None)
        shown = [phrase for phrase in phrases if phrase]
        return f" ({'; '.join(shown)})" if shown else ""

    return where


def validate(raw: Mapping[str, Any], schema: ConfigSchema,
             sources: Mapping[str, Source] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Normalise (defaults filled in) and validate ``raw``.

    Returns the normalised document, ordered as the schema is, and the problems, one
    line each, naming the key, the value, what is expected and where the value came
    from (``sources``, by ``"section"`` and ``"section.key"``; absent means default).
    """
    where = where_from(sources or {})
    validator = schema.validator(error_handler=problem_handler(schema, where))
    validator.validate(dict(raw))
    problems: list[str] = list(validator.errors)
    document = _ordered(validator.document or {}, schema)
    for check in CROSS_CHECKS:
        for keys, problem in check(document):
            problems.append(problem + where(keys))
    return document, problems


def _ordered(document: Mapping[str, Any], schema: ConfigSchema) -> dict[str, Any]:
    """Sections and keys in schema order (core first), whatever order the file had."""
    ordered: dict[str, Any] = {}
    for section in [*schema.sections, *document]:
        if section in document and section not in ordered:
            values = document[section]
            if isinstance(values, Mapping) and section in schema.sections:
                keys = [*schema.section(section), *values]
                values = {key: values[key] for key in dict.fromkeys(keys) if key in values}
            ordered[section] = values
    return ordered
