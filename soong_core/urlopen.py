"""One way to build a :class:`urllib.request.OpenerDirector` for code on the instance.

``urllib.request.build_opener`` adds an HTTPS handler to every opener, and from Python
3.12 that handler loads the system's CA store at once: a megabyte or two of memory per
opener, for a scrape of ``http://127.0.0.1:8000/metrics`` that never uses it. An opener
from :func:`opener` has the HTTPS machinery only for an ``https`` URL, sharing one
verified context for the life of the process, and never takes a proxy from the
environment (``http_proxy`` set on a machine must not send a local scrape or a heartbeat
elsewhere). Standard library only: the agent carries it.
"""

from __future__ import annotations

import threading
import urllib.request
from typing import Any

_context: Any = None
_lock = threading.Lock()

DEFAULTS: tuple[type[urllib.request.BaseHandler], ...] = (
    urllib.request.UnknownHandler, urllib.request.HTTPHandler,
    urllib.request.HTTPDefaultErrorHandler, urllib.request.HTTPRedirectHandler,
    urllib.request.HTTPErrorProcessor,
)


def https_context() -> Any:
    """The process's one verifying SSL context, made on first use.

    Where the system keeps its CAs as an OpenSSL hashed directory too (Debian and
    Ubuntu: ``/etc/ssl/certs``), the context reads that directory, which OpenSSL
    consults certificate by certificate as a handshake needs one; the default reads
    the whole bundle file into memory at once (about 2.5 MiB, for the life of the
    agent). Elsewhere, or when ``SSL_CERT_FILE``/``SSL_CERT_DIR`` say otherwise, it is
    the default context.
    """
    global _context
    with _lock:
        if _context is None:
            import ssl

            directory = hashed_ca_directory()
            _context = ssl.create_default_context(capath=directory) if directory \
                else ssl.create_default_context()
        return _context


def hashed_ca_directory(environ: Any = None) -> str | None:
    """The system's CA directory when it holds OpenSSL hash links, else None."""
    import os
    import re
    import ssl

    env = os.environ if environ is None else environ
    if env.get("SSL_CERT_FILE") or env.get("SSL_CERT_DIR"):
        return None
    directory = ssl.get_default_verify_paths().capath
    if not directory or not os.path.isdir(directory):
        return None
    hashed = re.compile(r"[0-9a-f]{8}\.\d+\Z")
    try:
        return directory if any(hashed.match(n) for n in os.listdir(directory)) else None
    except OSError:
        return None


def opener(url: str, *handlers: urllib.request.BaseHandler) -> urllib.request.OpenerDirector:
    """An opener for ``url``: no proxies, HTTPS only when ``url`` is https; ``handlers``
    replace the default of their class (a redirect policy, say), as with build_opener."""
    director = urllib.request.OpenerDirector()
    director.add_handler(urllib.request.ProxyHandler({}))
    for default in DEFAULTS:
        if not any(isinstance(given, default) for given in handlers):
            director.add_handler(default())
    if url.lower().startswith("https:"):
        director.add_handler(urllib.request.HTTPSHandler(context=https_context()))
    for handler in handlers:
        director.add_handler(handler)
    return director
