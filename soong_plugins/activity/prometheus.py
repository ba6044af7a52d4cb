"""The ``prometheus`` activity source: serving engines' request and token counters.

Each look fetches every configured ``/metrics`` endpoint once (Prometheus text format
0.0.4), keeps the series that match the endpoint's selectors (:data:`DEFAULT_METRICS`
when it names none) and compares them with the previous look of the same endpoint:

- a counter that grew is activity, and so is one that went down (a reset: the engine
  restarted) and one first seen after the endpoint's first answer with a value above
  zero (engines create labelled series when the first request needs them);
- a gauge above zero is activity (requests running or waiting), at every look;
- the first answer of an endpoint only sets the counters' baseline: traffic from
  before the agent looked is not activity now. A positive gauge counts at once.

Only what an endpoint answered can be activity: one that fails is never activity.

The source's state, from the looks of all its endpoints at once, first that applies:

``active``       an endpoint shows activity;
``unhealthy``    an endpoint that answered before has failed ``failures_unhealthy``
                 looks in a row (it wins over ``idle``: a dead engine beside a quiet
                 one is worth a warning, and neither keeps the instance alive);
``idle``         an endpoint answered and none shows activity;
``unavailable``  nothing answered: no endpoint configured, none has ever answered
                 (nothing serving yet), or the ones that answered before have failed
                 fewer than ``failures_unhealthy`` looks in a row.

``health`` holds one entry per endpoint (its URL without credentials, its state, its
consecutive failures, its latest error, how many series it watches, the models it
names) and ``models``: the models named by the endpoints that answered this look,
from the ``model_name`` label of vLLM and SGLang (and the ``name`` label of older
SGLang's ``sglang:`` series). TGI names no model in its metrics.

Standard library only: this module runs inside the agent on the instance.
"""

from __future__ import annotations

import base64
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence, Tuple

from soong_core import urlopen
from soong_core.interfaces import ActivitySource
from soong_core.models import ActivitySample, ActivityState, Timestamp
from soong_plugins.activity.gpu import one_line

DEFAULT_METRICS: tuple[str, ...] = (
    # vLLM
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:num_requests_swapped",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:request_success_total",
    # Text Generation Inference (TGI)
    "tgi_request_count",
    "tgi_queue_size",
    "tgi_batch_current_size",
    "tgi_request_generated_tokens_count",
    "tgi_request_input_length_count",
    # SGLang
    "sglang:num_running_reqs",
    "sglang:num_queue_reqs",
    "sglang:prompt_tokens_total",
    "sglang:generation_tokens_total",
    "sglang:num_requests_total",
)
"""The series watched on an endpoint whose ``metrics`` is null: the request and token
counters and the running/waiting gauges of vLLM, TGI and SGLang (names as their
documentation and metric definitions spell them)."""

MAX_BODY = 8 * 1024 * 1024
"""Bytes of an answer read at most; a larger one is a failure (vLLM's is ~100 KiB)."""
ACCEPT = "text/plain;version=0.0.4;q=1.0, */*;q=0.1"
USER_AGENT = "soong-agent"
_CHUNK = 64 * 1024

TYPES = frozenset({"counter", "gauge", "histogram", "summary", "untyped"})
COUNTER, GAUGE = "counter", "gauge"

Labels = Tuple[Tuple[str, str], ...]
"""A series' labels as a tuple of ``(name, value)`` pairs, sorted by name."""

Fetch = Callable[[str, float], "bytes | str"]
"""``fetch(url, timeout_s) -> body``: the answer's body, or an exception (any kind)
when the endpoint did not answer 200 in time."""


# -- the text format --------------------------------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
_NAME_RE = re.compile(_NAME)
_FULL_NAME_RE = re.compile(_NAME + r"\Z")
_LABEL_PAIR_RE = re.compile(r'[ \t]*(' + _LABEL + r')[ \t]*=[ \t]*"((?:[^"\\]|\\.)*)"[ \t]*')
_VALUE_RE = re.compile(
    r"[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?)\Z|nan\Z", re.IGNORECASE)
_TIMESTAMP_RE = re.compile(r"-?\d+\Z")
_LABEL_ESCAPE_RE = re.compile(r"\\(.)")
_HELP_ESCAPE_RE = re.compile(r"\\([\\n])")
_LABEL_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
_SUMMARY_SUFFIXES = ("_count", "_sum")
_UNTYPED_COUNTER_SUFFIXES = ("_total", "_count", "_sum", "_bucket")


@dataclass(frozen=True)
class Series:
    """One sample line: ``kind`` is ``counter`` or ``gauge`` (see :func:`parse_text`)."""

    name: str
    labels: Labels
    value: float
    kind: str

    def label(self, name: str) -> str | None:
        for key, value in self.labels:
            if key == name:
                return value
        return None


@dataclass(frozen=True)
class Exposition:
    """What one scrape said: its series (``_created`` ones left out), the ``# TYPE`` of
    each metric family that declared one and the ``# HELP`` texts."""

    series: tuple[Series, ...]
    types: Mapping[str, str] = field(default_factory=dict)
    help: Mapping[str, str] = field(default_factory=dict)

    def models(self) -> list[str]:
        """The models the series name, sorted: ``model_name`` labels (vLLM, SGLang) and
        the ``name`` label of ``sglang:`` series (SGLang before it used ``model_name``)."""
        found = set()
        for series in self.series:
            for key, value in series.labels:
                if value and (key == "model_name"
                              or (key == "name" and series.name.startswith("sglang:"))):
                    found.add(value)
        return sorted(found)


def _shown(line: str, limit: int = 80) -> str:
    return one_line(line, limit)


def parse_text(text: str) -> Exposition:
    """Parse a Prometheus text-format (0.0.4) exposition.

    A series is a counter or a gauge. Its ``# TYPE`` decides: a counter's own series,
    a histogram's ``_bucket``/``_count``/``_sum`` and a summary's ``_count``/``_sum``
    are counters; a gauge's series and a summary's quantiles are gauges. A series
    whose family declared no type (or ``untyped``) is a counter when its name ends in
    ``_total``, ``_count``, ``_sum`` or ``_bucket`` and a gauge otherwise. Series named
    ``*_created`` (the creation times prometheus_client writes beside counters, as
    gauges) are left out. Timestamps are checked and ignored; of two samples of one
    series the later stands.

    :raises ValueError: a malformed line, with its number, in one line of text.
    """
    types: dict[str, str] = {}
    helps: dict[str, str] = {}
    raw: dict[tuple[str, Labels], float] = {}
    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.strip()
        if not stripped:
            continue
        try:
            if stripped.startswith("#"):
                _comment(stripped, types, helps)
            else:
                name, labels, value = _sample(stripped)
                raw[(name, labels)] = value
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}: {_shown(stripped)}") from None
    series = []
    for (name, labels), value in raw.items():
        kind = _kind(name, types)
        if kind is not None:
            series.append(Series(name, labels, value, kind))
    return Exposition(tuple(series), types, helps)


def _comment(line: str, types: dict[str, str], helps: dict[str, str]) -> None:
    words = line[1:].split(None, 2)
    if not words or words[0] not in ("TYPE", "HELP"):
        return  # a comment
    if len(words) < 2:
        raise ValueError(f"# {words[0]} without a metric name")
    name = words[1]
    if not _FULL_NAME_RE.match(name):
        raise ValueError(f"invalid metric name {name!r} in # {words[0]}")
    rest = words[2].strip() if len(words) > 2 else ""
    if words[0] == "TYPE":
        if rest not in TYPES:
            raise ValueError(f"unknown metric type {rest!r} (expected one of "
                             f"{', '.join(sorted(TYPES))})" if rest else
                             "# TYPE without a metric type")
        types.setdefault(name, rest)
    else:
        helps.setdefault(name, _HELP_ESCAPE_RE.sub(
            lambda m: "\n" if m.group(1) == "n" else m.group(1), rest))


def _sample(line: str) -> tuple[str, Labels, float]:
    match = _NAME_RE.match(line)
    if not match:
        raise ValueError("a sample must start with a metric name")
    name = match.group(0)
    position = match.end()
    if position < len(line) and line[position] not in " \t{":
        raise ValueError(f"unexpected {line[position]!r} after the metric name")
    while position < len(line) and line[position] in " \t":
        position += 1
    labels: Labels = ()
    if position < len(line) and line[position] == "{":
        labels, position = _labels(line, position + 1)
    words = line[position:].split()
    if not words:
        raise ValueError("no value")
    if len(words) > 2:
        raise ValueError("unexpected text after the value and timestamp")
    if not _VALUE_RE.match(words[0]):
        raise ValueError(f"invalid value {words[0]!r}")
    if len(words) == 2 and not _TIMESTAMP_RE.match(words[1]):
        raise ValueError(f"invalid timestamp {words[1]!r} (milliseconds, an integer)")
    return name, labels, float(words[0])


def _labels(line: str, position: int) -> tuple[Labels, int]:
    """The label set starting after ``{`` at ``position``; returns it and the position
    after ``}``."""
    pairs: dict[str, str] = {}
    while True:
        while position < len(line) and line[position] in " \t":
            position += 1
        if position < len(line) and line[position] == "}":
            return tuple(sorted(pairs.items())), position + 1
        match = _LABEL_PAIR_RE.match(line, position)
        if not match:
            raise ValueError("malformed label set (expected name=\"value\" pairs in {...})")
        label, value = match.group(1), _unescape_label(match.group(2))
        if label in pairs:
            raise ValueError(f"label {label!r} given twice")
        pairs[label] = value
        position = match.end()
        if position < len(line) and line[position] == ",":
            position += 1
        elif not (position < len(line) and line[position] == "}"):
            raise ValueError("expected ',' or '}' after a label value")


def _unescape_label(value: str) -> str:
    if "\\" not in value:
        return value

    def one(match: re.Match[str]) -> str:
        escaped = _LABEL_ESCAPES.get(match.group(1))
        if escaped is None:
            raise ValueError(f"invalid escape \\{match.group(1)} in a label value "
                             "(only \\\\, \\\" and \\n)")
        return escaped

    return _LABEL_ESCAPE_RE.sub(one, value)


def _kind(name: str, types: Mapping[str, str]) -> str | None:
    """``counter``, ``gauge``, or None for a series left out (``_created``)."""
    if name.endswith("_created"):
        return None
    declared = types.get(name)
    if declared == COUNTER:
        return COUNTER
    if declared in (GAUGE, "summary", "histogram"):
        return GAUGE  # a gauge, a summary's quantile, a histogram's stray sample
    for suffix in _HISTOGRAM_SUFFIXES + ("_total",):
        if name.endswith(suffix):
            family = types.get(name[:-len(suffix)])
            if (family == "histogram" and suffix in _HISTOGRAM_SUFFIXES
                    or family == "summary" and suffix in _SUMMARY_SUFFIXES
                    or family == COUNTER and suffix == "_total"):
                return COUNTER
    return COUNTER if name.endswith(_UNTYPED_COUNTER_SUFFIXES) else GAUGE


# -- selectors ----------------------------------------------------------------------------

_OPERATORS = ("=~", "!~", "!=", "=")
_STRING_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
                   "v": "\v", "\\": "\\", "'": "'", '"': '"'}
_SELECTOR_NAME_RE = re.compile(_NAME)
_SELECTOR_LABEL_RE = re.compile(_LABEL)


@dataclass(frozen=True)
class Matcher:
    """One PromQL label matcher: ``label`` ``op`` (``=``, ``!=``, ``=~``, ``!~``)
    ``value``; regular expressions match the whole value, as in PromQL."""

    label: str
    op: str
    value: str
    pattern: re.Pattern[str] | None = None

    def matches(self, value: str) -> bool:
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        assert self.pattern is not None
        found = self.pattern.fullmatch(value) is not None
        return found if self.op == "=~" else not found


@dataclass(frozen=True)
class Selector:
    """A PromQL instant-vector selector without range or offset: ``name``,
    ``name{label="v", ...}`` or ``{__name__=~"...", ...}``."""

    text: str
    name: str | None
    matchers: tuple[Matcher, ...] = ()

    def matches(self, name: str, labels: Mapping[str, str] | Iterable[tuple[str, str]]
                ) -> bool:
        """Whether the series ``name`` with ``labels`` is selected; a label the series
        lacks has the value ``""``, as in PromQL."""
        if self.name is not None and name != self.name:
            return False
        if not self.matchers:
            return True
        values = labels if isinstance(labels, Mapping) else dict(labels)
        for matcher in self.matchers:
            value = name if matcher.label == "__name__" else values.get(matcher.label, "")
            if not matcher.matches(value):
                return False
        return True


def parse_selector(text: str) -> Selector:
    """Parse a series selector in PromQL syntax.

    Label values are PromQL strings (double or single quotes with Go escapes, or
    backticks, raw); ``=~`` and ``!~`` take regular expressions (Python's syntax, as
    close to RE2 as the standard library goes), anchored at both ends with ``.``
    matching newlines, as Prometheus does. As in PromQL, a selector without a metric
    name needs a matcher that does not match the empty string.

    :raises ValueError: not a selector, in one line saying where.
    """
    if not isinstance(text, str):
        raise ValueError("a series selector must be a string")
    scanner = _Scanner(text)
    scanner.blank()
    if scanner.done():
        raise ValueError("empty series selector")
    name = scanner.take(_SELECTOR_NAME_RE)
    matchers: list[Matcher] = []
    scanner.blank()
    if scanner.peek() == "{":
        scanner.position += 1
        matchers = _matchers(scanner)
    elif name is None:
        raise scanner.error("expected a metric name or '{'")
    scanner.blank()
    if not scanner.done():
        if scanner.peek() in "[(" or scanner.rest().startswith(("offset", "@")):
            raise scanner.error("only a series selector (no range, offset or function)")
        raise scanner.error("unexpected text")
    if name is not None and any(m.label == "__name__" for m in matchers):
        raise ValueError(f"metric name given twice in {text!r}")
    if name is None and all(m.matches("") for m in matchers):
        raise ValueError(f"a selector without a metric name needs a matcher that does not "
                         f"match the empty string: {text!r}")
    return Selector(text, name, tuple(matchers))


def _matchers(scanner: _Scanner) -> list[Matcher]:
    matchers: list[Matcher] = []
    while True:
        scanner.blank()
        if scanner.peek() == "}":
            scanner.position += 1
            return matchers
        label = scanner.take(_SELECTOR_LABEL_RE)
        if label is None:
            raise scanner.error("expected a label name or '}'")
        scanner.blank()
        op = next((o for o in _OPERATORS if scanner.rest().startswith(o)), None)
        if op is None:
            raise scanner.error(f"expected =, !=, =~ or !~ after {label!r}")
        scanner.position += len(op)
        scanner.blank()
        value = scanner.string()
        pattern = None
        if op in ("=~", "!~"):
            try:
                pattern = re.compile(f"(?s:{value})")
            except re.error as exc:
                raise ValueError(f"invalid regular expression {value!r} for {label!r}: "
                                 f"{exc.msg}") from None
        matchers.append(Matcher(label, op, value, pattern))
        scanner.blank()
        following = scanner.peek()
        if following == ",":
            scanner.position += 1
        elif following != "}":
            raise scanner.error("expected ',' or '}' after a label value")


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.position = 0

    def done(self) -> bool:
        return self.position >= len(self.text)

    def peek(self) -> str:
        return self.text[self.position] if not self.done() else ""

    def rest(self) -> str:
        return self.text[self.position:]

    def blank(self) -> None:
        while not self.done() and self.text[self.position] in " \t\r\n":
            self.position += 1

    def take(self, pattern: re.Pattern[str]) -> str | None:
        match = pattern.match(self.text, self.position)
        if not match:
            return None
        self.position = match.end()
        return match.group(0)

    def error(self, what: str) -> ValueError:
        if self.done():
            return ValueError(f"{what}, got the end of {self.text!r}")
        return ValueError(f"{what} at column {self.position + 1} of {self.text!r}")

    def string(self) -> str:
        quote = self.peek()
        if quote not in ('"', "'", "`"):
            raise self.error("expected a quoted label value")
        start = self.position
        self.position += 1
        if quote == "`":
            end = self.text.find("`", self.position)
            if end < 0:
                self.position = start
                raise self.error("unterminated string")
            value = self.text[self.position:end]
            self.position = end + 1
            return value
        out: list[str] = []
        while True:
            if self.done() or self.peek() == "\n":
                self.position = start
                raise self.error("unterminated string")
            char = self.text[self.position]
            self.position += 1
            if char == quote:
                return "".join(out)
            if char != "\\":
                out.append(char)
                continue
            out.append(self._escape(start))

    def _escape(self, start: int) -> str:
        code = self.peek()
        self.position += 1
        if code in _STRING_ESCAPES:
            return _STRING_ESCAPES[code]
        digits = {"x": 2, "u": 4, "U": 8}.get(code)
        if digits is not None:
            hexa = self.text[self.position:self.position + digits]
            if len(hexa) == digits and all(c in "0123456789abcdefABCDEF" for c in hexa):
                self.position += digits
                point = int(hexa, 16)
                if point <= 0x10FFFF and not 0xD800 <= point <= 0xDFFF:
                    return chr(point)
        elif code in "01234567" and code:
            octal = self.text[self.position - 1:self.position + 2]
            if len(octal) == 3 and all(c in "01234567" for c in octal) and int(octal, 8) < 256:
                self.position += 2
                return chr(int(octal, 8))
        self.position = start
        raise self.error(f"invalid escape \\{code} in the string")


# -- fetching -----------------------------------------------------------------------------


class FetchError(Exception):
    """An endpoint that did not answer with a usable body; the message is one line."""


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only within the endpoint's scheme, host and port (an engine
    serving ``/metrics`` as ``/metrics/``), so a credential never travels elsewhere."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:
        old, new = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
        if (old.scheme, old.netloc) != (new.scheme, new.netloc):
            raise FetchError(f"HTTP {code} redirects to another origin "
                             f"({display_url(newurl)}), not followed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def display_url(url: str) -> str:
    """``url`` fit to show: user and password replaced by ``***``, the query by ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return one_line(url.split("@")[-1].split("?")[0], 200)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    shown = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path,
                                     "***" if parts.query else "", ""))
    return one_line(shown, 200)


def fetch_metrics(url: str, timeout_s: float) -> bytes:
    """GET ``url`` with no proxy (the engine is local; a proxy from the environment must
    not see the request), for about ``timeout_s`` at most; return the body.

    Credentials in the URL (``http://user:password@host/...``) go as HTTP basic
    authentication. Raises :class:`FetchError` (or :class:`OSError` from the network)
    for a scheme other than http(s), an answer other than 200, a body over
    :data:`MAX_BODY` bytes, or a read still going at the deadline.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"not an http(s) URL: {display_url(url)}")
    headers = {"Accept": ACCEPT, "User-Agent": USER_AGENT}
    if "@" in parts.netloc:
        user = urllib.parse.unquote(parts.username or "")
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
        url = urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2],
                                       parts.path, parts.query, ""))
    opener = urlopen.opener(url, _SameOriginRedirects())
    request = urllib.request.Request(url, headers=headers, method="GET")
    deadline = time.monotonic() + timeout_s
    try:
        response = opener.open(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise FetchError(f"HTTP {exc.code} {exc.reason}".strip()) from None
    with response:
        status = getattr(response, "status", None) or response.getcode()
        if status != 200:
            raise FetchError(f"HTTP {status} {getattr(response, 'reason', '')}".strip())
        chunks: list[bytes] = []
        size = 0
        read = getattr(response, "read1", response.read)
        while True:
            if time.monotonic() > deadline:
                raise FetchError(f"the answer took longer than {timeout_s:g} s")
            chunk = read(_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_BODY:
                limit = MAX_BODY
                shown = f"{limit // 1048576} MiB" if limit % 1048576 == 0 else f"{limit} bytes"
                raise FetchError(f"the answer is larger than {shown}")
            chunks.append(chunk)
    return b"".join(chunks)


def describe_failure(exc: BaseException, timeout_s: float) -> str:
    """One line saying why a fetch or a parse failed (no URL, no credential)."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            return f"no answer within {timeout_s:g} s"
        if isinstance(reason, OSError):
            return one_line(reason.strerror or str(reason))
        return one_line(str(reason))
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, (FetchError, ValueError)):
        return one_line(str(exc))
    if isinstance(exc, OSError) and exc.strerror:
        return one_line(exc.strerror)
    return one_line(f"{type(exc).__name__}: {exc}")


# -- the source ---------------------------------------------------------------------------

ACTIVE_STATE, IDLE_STATE = "active", "idle"
FAILING, UNHEALTHY, UNAVAILABLE = "failing", "unhealthy", "unavailable"
"""An endpoint's own state in ``health``: ``failing`` answered before and has failed
fewer than ``failures_unhealthy`` looks in a row; ``unavailable`` has never answered."""


@dataclass
class _Endpoint:
    url: str
    selectors: tuple[Selector, ...]
    shown: str = ""
    previous: dict[tuple[str, Labels], float] = field(default_factory=dict)
    answers: int = 0
    failures: int = 0
    last_error: str | None = None
    series: int = 0
    models: list[str] = field(default_factory=list)
    state: str = UNAVAILABLE
    signs: list[str] = field(default_factory=list)
    answered_now: bool = False

    def __post_init__(self) -> None:
        self.shown = display_url(self.url)
        by_name: dict[str | None, list[Selector]] = {}
        for selector in self.selectors:
            by_name.setdefault(selector.name, []).append(selector)
        self._by_name = by_name

    def watches(self, series: Series) -> bool:
        chosen = self._by_name.get(series.name, []) + self._by_name.get(None, [])
        if not chosen:
            return False
        labels = dict(series.labels)
        return any(selector.matches(series.name, labels) for selector in chosen)

    def health(self) -> dict[str, Any]:
        return {"url": self.shown, "state": self.state, "failures": self.failures,
                "last_error": self.last_error, "series": self.series,
                "models": list(self.models)}


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:g}"


class PrometheusSource(ActivitySource):
    """Serving engines' ``/metrics`` endpoints.

    :param settings: ``endpoints`` (a list of ``{"url", "metrics"}``, ``metrics`` a
        list of selectors or null for :data:`DEFAULT_METRICS`; a bare URL string is
        taken as ``{"url": URL}``), ``timeout_seconds``, ``failures_unhealthy``;
        checked by the agent's config loader.
    :param fetch: how an endpoint is fetched (tests); :func:`fetch_metrics` by default.
    :raises ValueError: a selector that does not parse.
    """

    name = "prometheus"
    bounded = True  # every look ends by its own timeouts

    def __init__(self, settings: Mapping[str, Any], *, fetch: Fetch | None = None) -> None:
        self.timeout_s = float(settings.get("timeout_seconds", 5))
        self.failures_unhealthy = max(1, int(settings.get("failures_unhealthy", 3)))
        self._fetch: Fetch = fetch or fetch_metrics
        self.endpoints: list[_Endpoint] = []
        for entry in settings.get("endpoints", None) or []:
            if isinstance(entry, str):
                entry = {"url": entry}
            metrics: Sequence[str] | None = entry.get("metrics")
            selectors = tuple(parse_selector(text) for text in (metrics or DEFAULT_METRICS))
            self.endpoints.append(_Endpoint(str(entry["url"]), selectors))

    def sample(self, now: Timestamp) -> ActivitySample:
        if not self.endpoints:
            return ActivitySample(ActivityState.UNAVAILABLE, "no endpoints configured",
                                  {"endpoints": [], "models": []})
        for endpoint in self.endpoints:
            self._look(endpoint)
        return self._judge()

    def _look(self, endpoint: _Endpoint) -> None:
        endpoint.signs = []
        endpoint.answered_now = False
        try:
            body = self._fetch(endpoint.url, self.timeout_s)
            text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) \
                else str(body)
            exposition = parse_text(text)
        except Exception as exc:  # every failure is a state, never an escape
            endpoint.failures += 1
            endpoint.last_error = describe_failure(exc, self.timeout_s)
            if endpoint.answers == 0:
                endpoint.state = UNAVAILABLE
            elif endpoint.failures >= self.failures_unhealthy:
                endpoint.state = UNHEALTHY
            else:
                endpoint.state = FAILING
            return
        baseline = endpoint.answers == 0
        current: dict[tuple[str, Labels], float] = {}
        signs = endpoint.signs
        for series in exposition.series:
            if not endpoint.watches(series):
                continue
            key = (series.name, series.labels)
            value = series.value
            current[key] = value
            if series.kind == GAUGE:
                if value > 0:
                    signs.append(f"{series.name} is {_number(value)}")
                continue
            before = endpoint.previous.get(key)
            if before is None:
                if not baseline and value > 0:
                    signs.append(f"{series.name} appeared at {_number(value)}")
            elif value > before:
                signs.append(f"{series.name} grew")
            elif value < before:
                signs.append(f"{series.name} went down from {_number(before)} to "
                             f"{_number(value)} (the engine restarted)")
        endpoint.previous = current
        endpoint.answers += 1
        endpoint.failures = 0
        endpoint.series = len(current)
        endpoint.models = exposition.models()
        endpoint.answered_now = True
        endpoint.state = ACTIVE_STATE if signs else IDLE_STATE

    def _judge(self) -> ActivitySample:
        endpoints = self.endpoints
        models: list[str] = []
        for endpoint in endpoints:
            if endpoint.answered_now:
                models += [m for m in endpoint.models if m not in models]
        health = {"endpoints": [e.health() for e in endpoints], "models": models}
        by_state: dict[str, list[_Endpoint]] = {}
        for endpoint in endpoints:
            by_state.setdefault(endpoint.state, []).append(endpoint)
        active = by_state.get(ACTIVE_STATE, [])
        unhealthy = by_state.get(UNHEALTHY, [])
        idle = by_state.get(IDLE_STATE, [])
        if active:
            first = active[0]
            detail = f"{first.signs[0]} on {first.shown}"
            more = sum(len(e.signs) for e in active) - 1
            if more:
                detail += f" (and {more} more sign{'s' if more != 1 else ''} of use)"
            return self._sample(ActivityState.ACTIVE, detail, health)
        if unhealthy:
            first = unhealthy[0]
            detail = (f"{first.shown} failed {first.failures} looks in a row: "
                      f"{first.last_error}")
            if len(unhealthy) > 1:
                detail += f"; {len(unhealthy) - 1} more endpoint(s) unhealthy"
            if idle:
                detail += f"; {len(idle)} other endpoint(s) answered, idle"
            return self._sample(ActivityState.UNHEALTHY, detail, health)
        if idle:
            watched = sum(e.series for e in idle)
            where = idle[0].shown if len(idle) == 1 else f"{len(idle)} endpoints"
            if not watched:
                detail = f"no series on {where} matches the watched metrics"
            else:
                detail = (f"{watched} watched series on {where}, none shows use")
                if all(e.answers == 1 for e in idle):
                    detail += " (first look: counters taken as the baseline)"
            others = len(endpoints) - len(idle)
            if others:
                detail += f"; {others} other endpoint(s) did not answer"
            return self._sample(ActivityState.IDLE, detail, health)
        failing = by_state.get(FAILING, [])
        if failing:
            first = failing[0]
            detail = (f"{first.shown} failed {first.failures} of "
                      f"{self.failures_unhealthy} looks before unhealthy: {first.last_error}")
        else:
            first = endpoints[0]
            if len(endpoints) == 1:
                detail = f"{first.shown} has not answered yet: {first.last_error}"
            else:
                detail = (f"none of {len(endpoints)} endpoints has answered yet "
                          f"({first.shown}: {first.last_error})")
        return self._sample(ActivityState.UNAVAILABLE, detail, health)

    @staticmethod
    def _sample(state: ActivityState, detail: str, health: dict[str, Any]) -> ActivitySample:
        return ActivitySample(state, one_line(detail, 280), health)
