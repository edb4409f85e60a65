"""A test's own HTTP server on loopback: one request handler class, served from a thread for a ``with`` block."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None,
                address: str = "127.0.0.1") -> Iterator[tuple[ThreadingHTTPServer, str]]:
    """
    (the server, its base URL); ``server.seen`` is a list the handler may record requests in. With ``tls`` (a
    server-side context holding its certificate) it answers HTTPS; ``address`` is another loopback address for a
    second "host".
    """
    httpd = ThreadingHTTPServer((address, 0), handler)
    httpd.seen = []  # type: ignore[attr-defined]
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield httpd, f"{'https' if tls else 'http'}://{address}:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
