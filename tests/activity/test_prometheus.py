"""The ``prometheus`` source: its text-format parser, its PromQL selectors, and the
source itself against real tiny HTTP servers the tests run on 127.0.0.1, whose
expositions the tests change between looks."""

from __future__ import annotations

import base64
import json
import math
import socket
from pathlib import Path
from typing import Any, Iterator

import pytest

from soong_core.models import ActivityState
from soong_core.testing import Answer, LocalServer, Request, free_port
from soong_plugins.activity import SOURCES
from soong_plugins.activity import prometheus as module
from soong_plugins.activity.prometheus import (DEFAULT_METRICS, PrometheusSource, display_url,
                                               fetch_metrics, parse_selector, parse_text)

NOW = 1_700_000_000.0
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
VLLM = (Path(__file__).with_name("vllm_metrics.txt")).read_text()


# -- a serving engine on 127.0.0.1 ---------------------------------------------------------


class Engine:
    """``/metrics`` on 127.0.0.1 answering ``body`` with ``status``; ``redirect`` sends a
    redirect there instead. Keeps the headers of every request it got."""

    def __init__(self, body: str = "") -> None:
        self.body = body
        self.status = 200
        self.redirect: str | None = None
        self.server = LocalServer(self.answer)
        self.port = self.server.port
        self.url = f"{self.server.url}/metrics"

    def answer(self, request: Request) -> Answer:
        if self.redirect and request.path == "/metrics":
            return Answer(status=307, headers={"Location": self.redirect})
        return Answer(self.body, status=self.status,
                      content_type="text/plain; version=0.0.4; charset=utf-8")

    @property
    def requests(self) -> list[dict[str, str]]:
        return [{"path": r.path, **r.headers} for r in self.server.requests]

    def stop(self) -> None:
        self.server.close()


@pytest.fixture
def engine() -> Iterator[Engine]:
    served = Engine()
    yield served
    served.stop()


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    return free_port()


def source(*endpoints: Any, **settings: Any) -> PrometheusSource:
    listed = [e if isinstance(e, dict) else {"url": e, "metrics": None} for e in endpoints]
    return PrometheusSource({"endpoints": listed, "timeout_seconds": 5,
                             "failures_unhealthy": 3, **settings})


def look(prometheus: PrometheusSource) -> Any:
    sample = prometheus.sample(NOW)
    json.dumps(sample.health, allow_nan=False)
    assert "\n" not in sample.detail and sample.last_activity is None
    return sample


def vllm(generated: float = 4231.0, running: float = 0.0) -> str:
    text = VLLM.replace(f'model_name="{MODEL}"}} 4231.0', f'model_name="{MODEL}"}} {generated!r}')
    return text.replace(f'vllm:num_requests_running{{engine="0",model_name="{MODEL}"}} 0.0',
                        f'vllm:num_requests_running{{engine="0",model_name="{MODEL}"}} '
                        f'{running!r}')


def counter(value: float, name: str = "vllm:generation_tokens_total", model: str = "m/8b") -> str:
    return (f"# TYPE {name} counter\n"
            f'{name}{{model_name="{model}"}} {value}\n')


def gauge(value: Any, name: str = "vllm:num_requests_running", model: str = "m/8b") -> str:
    return (f"# TYPE {name} gauge\n"
            f'{name}{{model_name="{model}"}} {value}\n')


# -- the text format -----------------------------------------------------------------------


def test_parses_names_labels_values_types_and_help() -> None:
    exposition = parse_text(
        "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.\n"
        "# TYPE vllm:prompt_tokens_total counter\n"
        'vllm:prompt_tokens_total{model_name="m",engine="0"} 1536.0\n'
        "# TYPE queue gauge\n"
        "queue 3\n")
    first, second = exposition.series
    assert (first.name, first.labels, first.value, first.kind) == (
        "vllm:prompt_tokens_total", (("engine", "0"), ("model_name", "m")), 1536.0, "counter")
    assert (second.name, second.labels, second.value, second.kind) == ("queue", (), 3.0, "gauge")
    assert exposition.types == {"vllm:prompt_tokens_total": "counter", "queue": "gauge"}
    assert exposition.help == {"vllm:prompt_tokens_total": "Number of prefill tokens processed."}
    assert first.label("model_name") == "m" and first.label("absent") is None


def test_label_values_keep_escapes_commas_and_braces_inside_quotes() -> None:
    exposition = parse_text(
        'a{path="C:\\\\dir\\\\file",quote="say \\"hi\\"",lines="one\\ntwo",'
        'list="x,y}z{",empty=""} 1\n'
        'b { spaced = "v" , trailing="comma", } 2\n')
    a, b = exposition.series
    assert dict(a.labels) == {"path": "C:\\dir\\file", "quote": 'say "hi"',
                              "lines": "one\ntwo", "list": "x,y}z{", "empty": ""}
    assert [k for k, _ in a.labels] == sorted(k for k, _ in a.labels)
    assert b.labels == (("spaced", "v"), ("trailing", "comma"))


def test_help_text_unescapes_backslash_and_newline() -> None:
    exposition = parse_text("# HELP x first\\nsecond \\\\n, a \\\\ backslash\nx 1\n")
    assert exposition.help["x"] == "first\nsecond \\n, a \\ backslash"


@pytest.mark.parametrize("text,expected", [
    ("NaN", math.nan), ("+Inf", math.inf), ("-Inf", -math.inf), ("Inf", math.inf),
    ("1.5e+09", 1.5e9), ("-0.25", -0.25), (".5", 0.5), ("3.", 3.0), ("7E-3", 0.007),
    ("42", 42.0)])
def test_special_and_scientific_values(text: str, expected: float) -> None:
    (series,) = parse_text(f"x {text}\n").series
    assert (math.isnan(series.value) if math.isnan(expected) else series.value == expected)


def test_timestamps_are_checked_and_ignored() -> None:
    exposition = parse_text('a{b="c"} 3 1712345678901\nb 4 -5\n  c 5   \t 17  \n')
    assert [(s.name, s.value) for s in exposition.series] == [("a", 3.0), ("b", 4.0), ("c", 5.0)]


def test_blank_lines_comments_and_crlf_are_fine() -> None:
    exposition = parse_text("\n# a plain comment\n#\n\r\nx 1\r\n\n   \n#TYPE y gauge\ny 2\n")
    assert [s.name for s in exposition.series] == ["x", "y"]
    assert exposition.types == {"y": "gauge"}


def test_kinds_follow_type_lines_and_suffixes() -> None:
    exposition = parse_text(
        "# TYPE latency histogram\n"
        'latency_bucket{le="0.5"} 3\nlatency_bucket{le="+Inf"} 4\n'
        "latency_sum 1.2\nlatency_count 4\n"
        "# TYPE rpc summary\n"
        'rpc{quantile="0.99"} 0.3\nrpc_sum 9\nrpc_count 30\n'
        "# TYPE hits counter\nhits 5\n"
        "# TYPE served counter\nserved_total 6\n"
        "# TYPE temperature gauge\ntemperature 40\n"
        "# TYPE odd_count gauge\nodd_count 2\n"
        "# TYPE loose untyped\nloose 1\nloose_total 2\n"
        "requests_total 7\nrequests_count 8\nduration_sum 9\nplain 10\nbuckets_bucket 3\n")
    kinds = {(s.name, s.labels): s.kind for s in exposition.series}
    assert {name for (name, _), kind in kinds.items() if kind == "counter"} == {
        "latency_bucket", "latency_sum", "latency_count", "rpc_sum", "rpc_count", "hits",
        "served_total", "loose_total", "requests_total", "requests_count", "duration_sum",
        "buckets_bucket"}
    assert {name for (name, _), kind in kinds.items() if kind == "gauge"} == {
        "rpc", "temperature", "odd_count", "loose", "plain"}


def test_created_series_are_left_out() -> None:
    exposition = parse_text(
        "# TYPE tokens_total counter\ntokens_total 3\n"
        "# TYPE tokens_created gauge\ntokens_created 1.7e9\nstray_created 1.7e9\n")
    assert [s.name for s in exposition.series] == ["tokens_total"]


def test_a_type_after_its_samples_still_counts_and_the_later_sample_wins() -> None:
    exposition = parse_text("hits 1\nhits 2\n# TYPE hits counter\n")
    (series,) = exposition.series
    assert (series.value, series.kind) == (2.0, "counter")


@pytest.mark.parametrize("line,says", [
    ('a{b="c} 1', "malformed label set"),
    ("a{b=c} 1", "malformed label set"),
    ('a{b="c"d="e"} 1', "expected ',' or '}'"),
    ('a{b="c"', "expected ',' or '}'"),
    ('a{b="1",b="2"} 1', "label 'b' given twice"),
    ('a{b="\\t"} 1', "invalid escape \\t"),
    ('a{0b="c"} 1', "malformed label set"),
    ("a", "no value"),
    ('a{b="c"}', "no value"),
    ("a one", "invalid value 'one'"),
    ("a 1_000", "invalid value '1_000'"),
    ("a 0x1f", "invalid value '0x1f'"),
    ("a 1 1.5", "invalid timestamp '1.5'"),
    ("a 1 2 3", "unexpected text after the value"),
    ("a-b 1", "unexpected '-' after the metric name"),
    ("9lives 1", "must start with a metric name"),
    ("{a=\"b\"} 1", "must start with a metric name"),
    ("# TYPE a", "# TYPE without a metric type"),
    ("# TYPE a countr", "unknown metric type 'countr'"),
    ("# TYPE a counter extra", "unknown metric type 'counter extra'"),
    ("# TYPE 1a counter", "invalid metric name '1a'"),
    ("# HELP", "# HELP without a metric name"),
])
def test_a_malformed_line_is_an_error_naming_its_line(line: str, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_text(f"# TYPE ok gauge\nok 1\n\n{line}\nafter 2\n")
    message = str(caught.value)
    assert message.startswith("line 4: ") and says in message, message
    assert "\n" not in message


# -- selectors -----------------------------------------------------------------------------


@pytest.mark.parametrize("selector,labels,selected", [
    ('x{model_name="a"}', {"model_name": "a"}, True),
    ('x{model_name="a"}', {"model_name": "b"}, False),
    ('x{model_name!="a"}', {"model_name": "b"}, True),
    ('x{model_name!="a"}', {"model_name": "a"}, False),
    ('x{model_name=~"llama.*"}', {"model_name": "llama-3"}, True),
    ('x{model_name=~"llama.*"}', {"model_name": "my-llama"}, False),
    ('x{model_name!~"llama.*"}', {"model_name": "my-llama"}, True),
    ('x{model_name!~"llama.*"}', {"model_name": "llama-3"}, False),
    ('x{a="1", b=~"2|3"}', {"a": "1", "b": "3"}, True),
    ('x{a="1", b=~"2|3"}', {"a": "1", "b": "4"}, False),
    ("x", {"anything": "at all"}, True),
    ("x{}", {}, True),
])
def test_each_matcher_operator(selector: str, labels: dict[str, str], selected: bool) -> None:
    assert parse_selector(selector).matches("x", labels) is selected
    assert parse_selector(selector).matches("x", tuple(sorted(labels.items()))) is selected


def test_regular_expressions_are_anchored_as_in_promql() -> None:
    alternatives = parse_selector('x{m=~"a|b"}')
    assert alternatives.matches("x", {"m": "a"}) and alternatives.matches("x", {"m": "b"})
    assert not alternatives.matches("x", {"m": "ab"})
    assert not alternatives.matches("x", {"m": "ba"})
    assert not parse_selector('x{m=~"b"}').matches("x", {"m": "abc"})
    assert parse_selector('x{m!~"b"}').matches("x", {"m": "abc"})
    assert parse_selector('x{m=~"a.c"}').matches("x", {"m": "a\nc"})  # . matches newline


def test_a_missing_label_is_the_empty_string() -> None:
    assert parse_selector('x{gone=""}').matches("x", {})
    assert not parse_selector('x{gone!=""}').matches("x", {})
    assert parse_selector('x{gone!="v"}').matches("x", {})
    assert not parse_selector('x{gone=~".+"}').matches("x", {})


def test_the_name_must_match_and_may_be_a_matcher() -> None:
    assert not parse_selector("vllm:x").matches("vllm:y", {})
    by_name = parse_selector('{__name__=~"vllm:.*_total", model_name="a"}')
    assert by_name.name is None
    assert by_name.matches("vllm:prompt_tokens_total", {"model_name": "a"})
    assert not by_name.matches("vllm:num_requests_running", {"model_name": "a"})
    assert not by_name.matches("sglang:prompt_tokens_total", {"model_name": "a"})


@pytest.mark.parametrize("selector,value", [
    ("x{a='single \"quoted\"'}", 'single "quoted"'),
    ('x{a="tab\\there \\u00e9 \\x41 \\101 \\\\ \\""}', 'tab\there é A A \\ "'),
    ("x{a=`raw \\d+ \"as is\"`}", 'raw \\d+ "as is"'),
    ('  x  {  a  =  "spaced"  ,  }  ', "spaced"),
])
def test_string_literals(selector: str, value: str) -> None:
    (matcher,) = parse_selector(selector).matchers
    assert matcher.value == value


def test_the_default_metrics_are_selectors() -> None:
    for text in DEFAULT_METRICS:
        assert parse_selector(text).name == text
    names = set(DEFAULT_METRICS)
    assert {"vllm:num_requests_running", "vllm:num_requests_waiting",
            "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
            "vllm:request_success_total", "tgi_request_count", "tgi_queue_size",
            "tgi_batch_current_size", "tgi_request_generated_tokens_count",
            "sglang:num_running_reqs", "sglang:num_queue_reqs", "sglang:prompt_tokens_total",
            "sglang:generation_tokens_total"} <= names


@pytest.mark.parametrize("selector,says", [
    ("", "empty series selector"),
    ("   ", "empty series selector"),
    ("{}", "needs a matcher that does not match the empty string"),
    ('{a=~".*"}', "needs a matcher that does not match the empty string"),
    ('{a=""}', "needs a matcher that does not match the empty string"),
    ("x{", "expected a label name or '}'"),
    ('x{a="b"', "expected ',' or '}'"),
    ('x{a="b" c="d"}', "expected ',' or '}'"),
    ("x{a}", "expected =, !=, =~ or !~"),
    ('x{a=="b"}', "expected a quoted label value"),
    ("x{a=b}", "expected a quoted label value"),
    ('x{a="b}', "unterminated string"),
    ('x{a="\\q"}', "invalid escape \\q"),
    ('x{a="\\xZZ"}', "invalid escape \\x"),
    ('x{a=~"("}', "invalid regular expression '('"),
    ('x{__name__="x"}', "metric name given twice"),
    ("x[5m]", "no range, offset or function"),
    ("rate(x[5m])", "no range, offset or function"),
    ("x offset 5m", "no range, offset or function"),
    ("x y", "unexpected text"),
    ("9x", "expected a metric name or '{'"),
    ('x{"a"="b"}', "expected a label name or '}'"),
])
def test_invalid_selectors_say_why_in_one_line(selector: str, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_selector(selector)
    assert says in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


# -- the source against a real endpoint --------------------------------------------------


def test_a_growing_counter_is_active_a_still_one_idle(engine: Engine) -> None:
    engine.body = counter(100)
    prometheus = source(engine.url)
    first = look(prometheus)
    assert first.state is ActivityState.IDLE  # old traffic is no activity
    assert first.detail == (f"1 watched series on {engine.url}, none shows use "
                            "(first look: counters taken as the baseline)")
    engine.body = counter(117)
    grew = look(prometheus)
    assert grew.state is ActivityState.ACTIVE
    assert grew.detail == f"vllm:generation_tokens_total grew on {engine.url}"
    still = look(prometheus)
    assert still.state is ActivityState.IDLE
    assert still.detail == f"1 watched series on {engine.url}, none shows use"
    assert len(engine.requests) == 3


def test_a_positive_gauge_is_active_from_the_first_look(engine: Engine) -> None:
    engine.body = gauge(2)
    prometheus = source(engine.url)
    sample = look(prometheus)
    assert sample.state is ActivityState.ACTIVE
    assert sample.detail == f"vllm:num_requests_running is 2 on {engine.url}"
    assert look(prometheus).state is ActivityState.ACTIVE  # still running: still in use
    engine.body = gauge(0)
    assert look(prometheus).state is ActivityState.IDLE


@pytest.mark.parametrize("value", ["NaN", "0", "-1", "-Inf"])
def test_a_gauge_that_is_not_above_zero_is_idle(engine: Engine, value: str) -> None:
    engine.body = gauge(value)
    assert look(source(engine.url)).state is ActivityState.IDLE


def test_a_counter_reset_is_active(engine: Engine) -> None:
    engine.body = counter(5000)
    prometheus = source(engine.url)
    look(prometheus)
    engine.body = counter(12)  # the engine restarted and served a little
    reset = look(prometheus)
    assert reset.state is ActivityState.ACTIVE
    assert reset.detail == ("vllm:generation_tokens_total went down from 5000 to 12 "
                            f"(the engine restarted) on {engine.url}")
    assert look(prometheus).state is ActivityState.IDLE


def test_a_series_that_appears_after_the_first_look(engine: Engine) -> None:
    engine.body = counter(3, model="a")
    prometheus = source(engine.url)
    assert look(prometheus).state is ActivityState.IDLE
    engine.body = counter(3, model="a") + 'vllm:generation_tokens_total{model_name="b"} 0\n'
    assert look(prometheus).state is ActivityState.IDLE  # created, not yet used
    engine.body = counter(3, model="a") + 'vllm:generation_tokens_total{model_name="c"} 9\n'
    appeared = look(prometheus)
    assert appeared.state is ActivityState.ACTIVE
    assert appeared.detail == f"vllm:generation_tokens_total appeared at 9 on {engine.url}"


def test_an_engine_that_creates_its_counters_lazily(engine: Engine) -> None:
    engine.body = "# TYPE tgi_queue_size gauge\ntgi_queue_size 0\n"  # TGI before a request
    prometheus = source(engine.url)
    first = look(prometheus)
    assert first.state is ActivityState.IDLE
    engine.body += "# TYPE tgi_request_count counter\ntgi_request_count 1\n"
    assert look(prometheus).state is ActivityState.ACTIVE


def test_a_dead_engine_is_unhealthy_after_n_looks_not_before(engine: Engine) -> None:
    engine.body = counter(10)
    prometheus = source(engine.url, failures_unhealthy=3)
    assert look(prometheus).state is ActivityState.IDLE
    engine.stop()
    states = [look(prometheus) for _ in range(4)]
    assert [s.state for s in states] == [ActivityState.UNAVAILABLE, ActivityState.UNAVAILABLE,
                                         ActivityState.UNHEALTHY, ActivityState.UNHEALTHY]
    assert states[0].detail == (f"{engine.url} failed 1 of 3 looks before unhealthy: "
                                "Connection refused")
    assert states[2].detail == f"{engine.url} failed 3 looks in a row: Connection refused"
    (health,) = states[3].health["endpoints"]
    assert health == {"url": engine.url, "state": "unhealthy", "failures": 4,
                      "last_error": "Connection refused", "series": 1, "models": ["m/8b"]}
    assert states[3].health["models"] == []  # nothing serves it now


def test_an_engine_that_comes_back_is_looked_at_again(engine: Engine) -> None:
    engine.body = counter(10)
    prometheus = source(engine.url, failures_unhealthy=2)
    look(prometheus)
    engine.status = 503
    assert [look(prometheus).state for _ in range(2)] == [ActivityState.UNAVAILABLE,
                                                          ActivityState.UNHEALTHY]
    assert prometheus.sample(NOW).health["endpoints"][0]["last_error"] == \
        "HTTP 503 Service Unavailable"
    engine.status = 200
    assert look(prometheus).state is ActivityState.IDLE  # the same counter: no use
    engine.body = counter(11)
    assert look(prometheus).state is ActivityState.ACTIVE
    assert prometheus.sample(NOW).health["endpoints"][0]["failures"] == 0


def test_nothing_that_never_answered_is_unhealthy(closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}/metrics"
    prometheus = source(url, failures_unhealthy=1)
    samples = [look(prometheus) for _ in range(3)]
    assert {s.state for s in samples} == {ActivityState.UNAVAILABLE}
    assert samples[-1].detail == f"{url} has not answered yet: Connection refused"
    assert samples[-1].health["endpoints"][0]["state"] == "unavailable"


def test_no_endpoints_is_unavailable() -> None:
    sample = look(PrometheusSource({"endpoints": []}))
    assert sample.state is ActivityState.UNAVAILABLE
    assert sample.detail == "no endpoints configured"
    assert sample.health == {"endpoints": [], "models": []}


def test_label_matchers_choose_the_series(engine: Engine) -> None:
    def body(a: int, b: int) -> str:
        return ("# TYPE vllm:generation_tokens_total counter\n"
                f'vllm:generation_tokens_total{{model_name="team/a"}} {a}\n'
                f'vllm:generation_tokens_total{{model_name="team/b"}} {b}\n')

    engine.body = body(1, 1)
    only_a = source({"url": engine.url, "metrics": [
        'vllm:generation_tokens_total{model_name="team/a"}']})
    not_a = source({"url": engine.url, "metrics": [
        'vllm:generation_tokens_total{model_name!~"team/a"}']})
    for prometheus in (only_a, not_a):
        assert look(prometheus).state is ActivityState.IDLE
        assert prometheus.endpoints[0].series == 1
    engine.body = body(1, 50)  # only b served
    assert look(only_a).state is ActivityState.IDLE
    assert look(not_a).state is ActivityState.ACTIVE
    engine.body = body(2, 50)  # only a served
    assert look(only_a).state is ActivityState.ACTIVE
    assert look(not_a).state is ActivityState.IDLE


def test_its_own_scrapes_are_not_activity_when_the_selector_says_so(engine: Engine) -> None:
    """An instrumented server counts /metrics requests too: the selector leaves them out."""
    def body(scrapes: int, chats: int) -> str:
        return ("# TYPE http_requests_total counter\n"
                f'http_requests_total{{handler="/metrics",method="GET"}} {scrapes}\n'
                f'http_requests_total{{handler="/v1/chat/completions",method="POST"}} {chats}\n')

    engine.body = body(1, 5)
    prometheus = source({"url": engine.url, "metrics": [
        'http_requests_total{handler!="/metrics"}']})
    look(prometheus)
    engine.body = body(2, 5)
    assert look(prometheus).state is ActivityState.IDLE
    engine.body = body(3, 6)
    assert look(prometheus).state is ActivityState.ACTIVE


def test_series_outside_the_selectors_never_count(engine: Engine) -> None:
    engine.body = counter(1, name="process_cpu_seconds_total") + gauge(3, name="vllm:x_info")
    prometheus = source(engine.url)
    assert look(prometheus).detail == f"no series on {engine.url} matches the watched metrics"
    engine.body = counter(9, name="process_cpu_seconds_total") + gauge(3, name="vllm:x_info")
    assert look(prometheus).state is ActivityState.IDLE


def test_the_model_names_are_reported(engine: Engine) -> None:
    engine.body = (counter(1, model="org/model-a")
                   + 'vllm:generation_tokens_total{model_name="org/model-b"} 1\n'
                   + '# TYPE sglang:token_usage gauge\nsglang:token_usage{name="old/sglang"} 0\n'
                   + '# TYPE other gauge\nother{name="not-a-model"} 0\n'
                   + "# TYPE tgi_queue_size gauge\ntgi_queue_size 0\n")
    sample = look(source(engine.url))
    assert sample.health["models"] == ["old/sglang", "org/model-a", "org/model-b"]
    assert sample.health["endpoints"][0]["models"] == ["old/sglang", "org/model-a",
                                                       "org/model-b"]


def test_a_vllm_exposition(engine: Engine) -> None:
    engine.body = vllm()
    prometheus = source(engine.url)
    first = look(prometheus)
    assert first.state is ActivityState.IDLE
    assert first.detail == (f"7 watched series on {engine.url}, none shows use "
                            "(first look: counters taken as the baseline)")
    assert first.health == {"models": [MODEL], "endpoints": [{
        "url": engine.url, "state": "idle", "failures": 0, "last_error": None, "series": 7,
        "models": [MODEL]}]}
    assert look(prometheus).state is ActivityState.IDLE  # its own scrapes count nowhere
    engine.body = vllm(generated=4299.0)
    assert look(prometheus).detail == f"vllm:generation_tokens_total grew on {engine.url}"
    engine.body = vllm(generated=4299.0, running=1.0)
    assert look(prometheus).detail == f"vllm:num_requests_running is 1 on {engine.url}"
    engine.body = vllm(generated=4299.0)
    assert look(prometheus).state is ActivityState.IDLE
    accept = engine.requests[0]["Accept"]
    assert accept.startswith("text/plain;version=0.0.4")


def test_the_vllm_exposition_parses_as_prometheus_client_writes_it() -> None:
    exposition = parse_text(VLLM)
    names = {s.name for s in exposition.series}
    assert not any(name.endswith("_created") for name in names)
    kinds = {s.name: s.kind for s in exposition.series}
    assert kinds["vllm:time_to_first_token_seconds_bucket"] == "counter"
    assert kinds["vllm:time_to_first_token_seconds_count"] == "counter"
    assert kinds["vllm:num_requests_running"] == "gauge"
    assert kinds["vllm:cache_config_info"] == "gauge"
    assert exposition.models() == [MODEL]
    assert exposition.types["vllm:time_to_first_token_seconds"] == "histogram"


def test_with_several_endpoints_the_most_telling_state_wins(engine: Engine,
                                                            closed_port: int) -> None:
    other = Engine(counter(1))
    try:
        engine.body = counter(1)
        never = f"http://127.0.0.1:{closed_port}/metrics"
        prometheus = source(engine.url, other.url, never, failures_unhealthy=1)
        first = look(prometheus)
        assert first.state is ActivityState.IDLE
        assert first.detail.endswith("; 1 other endpoint(s) did not answer")
        other.stop()
        engine.body = counter(1)
        dead = look(prometheus)  # one idle, one dead: the warning shows
        assert dead.state is ActivityState.UNHEALTHY
        assert dead.detail == (f"{other.url} failed 1 looks in a row: Connection refused; "
                               "1 other endpoint(s) answered, idle")
        engine.body = counter(2)
        busy = look(prometheus)  # activity wins over a dead endpoint
        assert busy.state is ActivityState.ACTIVE
        assert [e["state"] for e in busy.health["endpoints"]] == ["active", "unhealthy",
                                                                  "unavailable"]
    finally:
        other.stop()


def test_an_endpoint_that_answers_something_else_fails(engine: Engine) -> None:
    engine.body = counter(1)
    prometheus = source(engine.url)
    look(prometheus)
    engine.body = "<html><body>Not metrics</body></html>\n"
    sample = look(prometheus)
    assert sample.state is ActivityState.UNAVAILABLE
    assert sample.detail.startswith(f"{engine.url} failed 1 of 3 looks before unhealthy: "
                                    "line 1: a sample must start with a metric name")


@pytest.mark.parametrize("status", [204, 404, 500])
def test_an_answer_other_than_200_is_a_failure(engine: Engine, status: int) -> None:
    engine.body = "" if status == 204 else counter(1)
    engine.status = status
    sample = look(source(engine.url))
    assert sample.state is ActivityState.UNAVAILABLE
    assert sample.health["endpoints"][0]["last_error"].startswith(f"HTTP {status}")


def test_no_proxy_from_the_environment_is_used(engine: Engine, closed_port: int,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    for variable in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.setenv(variable, f"http://127.0.0.1:{closed_port}")
    engine.body = counter(1)
    assert fetch_metrics(engine.url, 5) == counter(1).encode()
    assert engine.requests[0]["path"] == "/metrics"  # asked directly, not via a proxy


def test_a_body_over_the_limit_is_a_failure(engine: Engine,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert module.MAX_BODY == 8 * 1024 * 1024
    monkeypatch.setattr(module, "MAX_BODY", 1024)
    engine.body = counter(1) * 40
    assert len(engine.body) > 1024
    sample = look(source(engine.url))
    assert sample.state is ActivityState.UNAVAILABLE
    assert sample.health["endpoints"][0]["last_error"] == "the answer is larger than 1024 bytes"
    engine.body = counter(1) * 10
    assert len(engine.body) < 1024
    assert look(source(engine.url)).state is ActivityState.IDLE


def test_a_redirect_is_followed_on_the_same_origin_only(engine: Engine) -> None:
    engine.body = counter(1)
    engine.redirect = "/metrics/"
    assert fetch_metrics(engine.url, 5) == counter(1).encode()
    assert [r["path"] for r in engine.requests] == ["/metrics", "/metrics/"]
    other = Engine(counter(2))
    try:
        engine.redirect = other.url
        sample = look(source(engine.url))
        assert sample.state is ActivityState.UNAVAILABLE
        assert "redirects to another origin" in sample.health["endpoints"][0]["last_error"]
        assert other.requests == []
    finally:
        other.stop()


def test_credentials_in_the_url_are_sent_and_never_shown(engine: Engine) -> None:
    engine.body = gauge(1)
    url = engine.url.replace("http://", "http://reader:s3cr%40t@") + "?token=hush"
    sample = look(source(url))
    assert sample.state is ActivityState.ACTIVE
    expected = base64.b64encode(b"reader:s3cr@t").decode()
    assert engine.requests[0]["Authorization"] == f"Basic {expected}"
    assert engine.requests[0]["path"] == "/metrics?token=hush"
    shown = json.dumps(sample.health) + sample.detail
    assert "s3cr" not in shown and "hush" not in shown and "reader" not in shown
    assert sample.health["endpoints"][0]["url"] == \
        f"http://***@127.0.0.1:{engine.port}/metrics?***"
    assert display_url("http://127.0.0.1:8000/metrics") == "http://127.0.0.1:8000/metrics"


def test_only_http_and_https_are_fetched(tmp_path: Path) -> None:
    secret = tmp_path / "metrics"
    secret.write_text(counter(1))
    sample = look(source(f"file://{secret}"))
    assert sample.state is ActivityState.UNAVAILABLE
    assert sample.health["endpoints"][0]["last_error"].startswith("not an http(s) URL")


def test_a_silent_endpoint_times_out() -> None:
    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/metrics"
        sample = look(source(url, timeout_seconds=0.2))
    assert sample.state is ActivityState.UNAVAILABLE
    assert sample.health["endpoints"][0]["last_error"] == "no answer within 0.2 s"


def test_a_fetch_that_raises_anything_is_a_failure_not_an_escape() -> None:
    def fetch(url: str, timeout_s: float) -> bytes:
        raise RuntimeError("the network fell over\nbadly")

    sample = look(PrometheusSource({"endpoints": [{"url": "http://e/metrics", "metrics": None}]},
                                   fetch=fetch))
    assert sample.state is ActivityState.UNAVAILABLE
    assert sample.health["endpoints"][0]["last_error"] == \
        "RuntimeError: the network fell over badly"


def test_an_injected_fetch_gets_the_url_and_timeout() -> None:
    calls = []
    bodies = iter([counter(1), counter(2)])

    def fetch(url: str, timeout_s: float) -> str:
        calls.append((url, timeout_s))
        return next(bodies)

    prometheus = PrometheusSource({"endpoints": ["http://engine:8000/metrics"],
                                   "timeout_seconds": 2.5}, fetch=fetch)
    assert look(prometheus).state is ActivityState.IDLE
    assert look(prometheus).state is ActivityState.ACTIVE
    assert calls == [("http://engine:8000/metrics", 2.5)] * 2


def test_registered_as_prometheus() -> None:
    built = SOURCES["prometheus"]({"endpoints": [], "timeout_seconds": 5,
                                   "failures_unhealthy": 3})
    assert isinstance(built, PrometheusSource) and built.name == "prometheus"


def test_a_bad_selector_in_the_settings_is_refused() -> None:
    with pytest.raises(ValueError, match="expected a label name"):
        PrometheusSource({"endpoints": [{"url": "http://e/metrics", "metrics": ["x{"]}]})
