"""soong_core.urlopen: openers without environment proxies, HTTPS only for https URLs."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from soong_core import urlopen
from soong_core.testing import LocalServer


@pytest.fixture
def server() -> Iterator[str]:
    with LocalServer(lambda request: b"ok") as served:
        yield served.url + "/"


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


def test_the_ca_directory_is_used_only_when_it_holds_hash_links(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl

    folder = tmp_path
    paths = ssl.get_default_verify_paths()
    monkeypatch.setattr(ssl, "get_default_verify_paths",
                        lambda: paths._replace(capath=str(folder)))
    assert urlopen.hashed_ca_directory({}) is None  # empty
    (folder / "ca-certificates.crt").write_text("")
    assert urlopen.hashed_ca_directory({}) is None  # no hash links
    (folder / "002c0b4f.0").write_text("")
    assert urlopen.hashed_ca_directory({}) == str(folder)
    assert urlopen.hashed_ca_directory({"SSL_CERT_FILE": "/x.pem"}) is None
    assert urlopen.hashed_ca_directory({"SSL_CERT_DIR": "/x"}) is None


def test_a_hashed_ca_directory_verifies_a_server_it_signed(tmp_path: Path) -> None:
    """The mechanism https_context relies on: OpenSSL finds the issuer in a hashed
    directory when the handshake needs it (a CA, a server certificate and a TLS
    server made here, on 127.0.0.1)."""
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make certificates with")
    work = tmp_path

    def openssl(*args: str) -> str:
        return subprocess.run(["openssl", *args], cwd=work, check=True,
                              capture_output=True, text=True).stdout

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=soong test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", "/CN=127.0.0.1")
    (work / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    trusted, empty = work / "trusted", work / "empty"
    trusted.mkdir()
    empty.mkdir()
    subject_hash = openssl("x509", "-hash", "-noout", "-in", "ca.pem").strip()
    shutil.copy(work / "ca.pem", trusted / f"{subject_hash}.0")

    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(work / "server.pem", work / "server.key")
    served = LocalServer(lambda request: b"hello", tls=tls)
    url = served.url + "/"
    try:
        good = urllib.request.HTTPSHandler(
            context=ssl.create_default_context(capath=str(trusted)))
        with urlopen.opener("http://x/", good).open(url, timeout=10) as answer:
            assert answer.read() == b"hello"
        bad = urllib.request.HTTPSHandler(context=ssl.create_default_context(capath=str(empty)))
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urlopen.opener("http://x/", bad).open(url, timeout=10)
    finally:
        served.close()
