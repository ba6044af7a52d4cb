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
    """The process's one default (verifying) SSL context, made on first use."""
    global _context
    with _lock:
        if _context is None:
            import ssl

            _context = ssl.create_default_context()
        return _context


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
