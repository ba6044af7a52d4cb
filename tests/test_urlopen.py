"""soong_core.urlopen: openers without environment proxies, HTTPS only for https URLs."""

from __future__ import annotations

import http.server
import threading
import urllib.request
from typing import Iterator

import pytest

from soong_core import urlopen


@pytest.fixture
def server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"ok"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    served = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=served.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{served.server_address[1]}/"
    finally:
        served.shutdown()
        served.server_close()


def kinds(director: urllib.request.OpenerDirector) -> set[type]:
    return {type(handler) for handler in director.handlers}


def test_an_http_opener_has_no_https_machinery() -> None:
    assert urllib.request.HTTPSHandler not in kinds(urlopen.opener("http://127.0.0.1:1/"))
    https = urlopen.opener("HTTPS://example.invalid/")
    handler = next(h for h in https.handlers if isinstance(h, urllib.request.HTTPSHandler))
    assert handler._context is urlopen.https_context()  # one context for the process
    assert urlopen.opener("https://x/").handlers is not https.handlers


def test_proxies_from_the_environment_are_never_used(server: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with urlopen.opener(server).open(server, timeout=5) as answer:
        assert answer.read() == b"ok"


def test_a_given_handler_replaces_the_default_of_its_class() -> None:
    class NoRedirects(urllib.request.HTTPRedirectHandler):
        pass

    found = kinds(urlopen.opener("http://x/", NoRedirects()))
    assert NoRedirects in found and urllib.request.HTTPRedirectHandler not in found
