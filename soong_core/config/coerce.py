"""Text to typed values: command-line flags, environment variables, ``soong config set``.

:func:`parse_text` reads text as a key's schema type. Numbers are read by
:func:`soong_core.numbers.parse_number`, the one number parser of every flag and prompt,
so a config value and a flag refuse ``nan``, ``inf`` and words alike.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from soong_core.numbers import parse_number

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NULL = {"", "null", "~"}


def parse_boolean(text: str) -> bool:
    """true/false, yes/no, on/off, 1/0, in any case; anything else is a ValueError."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError("is not true or false")


def _parse_string(text: str) -> str:
    return text


def _parse_yaml_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise ValueError(text) from None


_PARSERS: dict[str, Callable[[str], Any]] = {
    "integer": lambda text: parse_number(text, "an integer", integer=True),
    "number": lambda text: parse_number(text, "a number"),
    "float": lambda text: parse_number(text, "a number"),
    "boolean": parse_boolean,
    "string": _parse_string,
}

_EXPECTED = {
    "integer": "an integer", "number": "a number", "float": "a number",
    "boolean": "true or false", "string": "a string", "list": "a list",
    "dict": "a mapping", "date": "a date", "datetime": "a date and time",
}


def value_types(rules: Mapping[str, Any]) -> list[str]:
    """The cerberus types a key's rules name, in order (none: any value)."""
    kind = rules.get("type")
    if kind is None:
        return []
    return [kind] if isinstance(kind, str) else list(kind)


def expected(rules: Mapping[str, Any]) -> str:
    """What a key takes, in words: "a number", "an integer or a string"."""
    words = [_EXPECTED.get(t, t) for t in value_types(rules)]
    return " or ".join(words) or "a value"


def parse_text(text: str, rules: Mapping[str, Any]) -> Any:
    """Turn command-line or environment text into a value of the key's schema type.

    Integers, numbers and booleans (true/false, yes/no, on/off, 1/0) are parsed; a
    list is comma-separated; ``null`` (or nothing) is ``None`` where the key is
    nullable; types without a parser are read as YAML. Raises ``ValueError`` whose
    message says what was expected.
    """
    if rules.get("nullable") and text.strip().lower() in _NULL:
        return None
    types = value_types(rules)
    if not types:
        return _parse_yaml_value(text)
    for kind in types:
        try:
            return _parse_as(kind, text, rules)
        except ValueError:
            continue
    raise ValueError(f"is not {expected(rules)}")


def _parse_as(kind: str, text: str, rules: Mapping[str, Any]) -> Any:
    if kind == "list":
        items = [item.strip() for item in text.split(",") if item.strip()]
        item_rules = rules.get("schema")
        if isinstance(item_rules, Mapping) and value_types(item_rules):
            return [parse_text(item, item_rules) for item in items]
        return items
    parser = _PARSERS.get(kind)
    if parser is not None:
        return parser(text)
    value = _parse_yaml_value(text)
    if kind == "dict" and not isinstance(value, dict):
        raise ValueError(text)
    return value
