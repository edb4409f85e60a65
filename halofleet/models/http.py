"""
Every HTTP read halofleet makes from the control machine (the Hub's tree API, GGUF header slices of a download not
made yet, from the Hub, a mirror or a ``url`` source), under one rule:

- the token goes only to the origin it belongs to (scheme, host and port of ``halo_hf_endpoint``:
  :func:`may_carry_token`); a redirect to another origin goes on without it, and a chain that left the origin
  never gets it back;
- only http and https are followed, never ``file:`` or any other scheme;
- every read is bounded (:class:`Limits`): response bytes, redirects, time per request and per host, and for JSON
  its depth and items.

Over a bound or against the rule a read raises :class:`ReadRefused` with a one-line reason naming the bound; the
callers refuse that host with it (HostRefused). A server that cannot be reached or answers an HTTP error raises
OSError, ``http.client.HTTPException`` or :class:`HttpStatus`, which the callers judge themselves.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from ..contract.validators import mask_url_credentials

DEFAULT_PORTS = {"http": 80, "https": 443}
REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class Limits:
    """The bounds of what one host's plan may read over HTTP."""

    request_s: float = 30.0  # one request, connect to last byte
    host_s: float = 300.0  # every read made for one host in one run
    redirects: int = 5
    json_bytes: int = 8 << 20  # one page of the tree API
    json_depth: int = 16  # a tree entry is 3 levels deep
    json_items: int = 200_000  # values in one answer (and entries over all pages)
    pages: int = 100  # pages of one file list
    matches: int = 1000  # files one include pattern may select (a split set has at most 999)


LIMITS = Limits()


class ReadRefused(Exception):
    """A read stopped by a bound or by the rule (not a network failure): the reason names which."""


class HttpStatus(Exception):
    """The server answered an HTTP error."""

    def __init__(self, code: int, url: str):
        self.code, self.url = code, url
        super().__init__(f"HTTP {code}")


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Any  # http.client.HTTPMessage
    body: bytes
    url: str  # after redirects


def origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL; None for any other scheme or a URL without a host."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme]


def may_carry_token(url: str, token_origin: str | None) -> bool:
    """The rule: a request carries the token only to the exact origin the token belongs to."""
    return token_origin is not None and origin(url) is not None and origin(url) == origin(token_origin)


def shown(url: str) -> str:
    """A URL as a message may show it: credentials masked, at most 200 characters."""
    text = mask_url_credentials(url)
    return text if len(text) <= 200 else text[:197] + "..."


class _DeadlineSocket:
    """A connected socket whose every send and receive is bounded by what is left of the request's time."""

    def __init__(self, sock: socket.socket, deadline: float):
        self._sock, self._deadline = sock, deadline
        self._files, self._closed = 0, False  # as socket.socket: closed for real once its files are closed too

    def _arm(self) -> None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request deadline")
        self._sock.settimeout(left)

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:  # noqa: ANN001 (socket's signature)
        self._arm()
        # 0 means "the whole buffer" to socket.socket but "nothing" to gevent's SSLSocket (pyinfra's CLI patches ssl
        # with gevent): every HTTPS answer read as empty. The size is given explicitly.
        return self._sock.recv_into(buffer, nbytes or memoryview(buffer).nbytes, flags)

    def recv(self, size: int, flags: int = 0) -> bytes:
        self._arm()
        return self._sock.recv(size, flags)

    def sendall(self, data: bytes, flags: int = 0) -> None:
        self._arm()
        self._sock.sendall(data, flags)

    def makefile(self, mode: str = "rb", buffering: int = -1) -> io.BufferedReader:  # noqa: ARG002
        self._files += 1
        return io.BufferedReader(socket.SocketIO(self, "rb"))  # type: ignore[arg-type]

    def _decref_socketios(self) -> None:
        self._files -= 1
        if self._closed and self._files <= 0:
            self._sock.close()

    def close(self) -> None:
        self._closed = True
        if self._files <= 0:
            self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _connection(target: tuple[str, str, int], deadline: float) -> http.client.HTTPConnection:
    scheme, hostname, port = target
    timeout = max(deadline - time.monotonic(), 0.001)
    base = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection

    class Bounded(base):  # type: ignore[valid-type, misc]
        def connect(self) -> None:
            super().connect()
            self.sock = _DeadlineSocket(self.sock, deadline)

    if scheme == "https":
        return Bounded(hostname, port, timeout=timeout, context=ssl.create_default_context())
    return Bounded(hostname, port, timeout=timeout)


class Reads:
    """One host's HTTP reads in one run: the time they took so far is counted against ``limits.host_s``."""

    def __init__(self, limits: Limits | None = None):
        self.limits, self.spent = limits or LIMITS, 0.0

    def get(self, url: str, headers: dict[str, str], max_bytes: int, take: int | None = None) -> Answer:
        """
        GET ``url`` under the rule. ``Authorization`` in ``headers`` goes to ``url``'s origin only (the caller
        decides with :func:`may_carry_token`) and is dropped for good at the first redirect elsewhere. A body over
        ``max_bytes`` is refused; with ``take``, reading stops after that many bytes instead (a header slice).
        """
        first = origin(url)
        headers = dict(headers)
        for _ in range(self.limits.redirects + 1):
            target = origin(url)
            if target is None:
                raise ReadRefused(f"{shown(url)} is not an http(s) URL: only http and https are followed")
            if target != first:
                headers.pop("Authorization", None)  # the token stays with its origin, also on the way back
            status, answer_headers, body = self._request(target, url, headers, max_bytes, take)
            location = answer_headers.get("Location")
            if status in REDIRECTS and location:
                url = urljoin(url, location.strip())
                continue
            if not 200 <= status < 300:  # an error, or a redirect without a Location
                raise HttpStatus(status, url)
            return Answer(status, answer_headers, body, url)
        raise ReadRefused(f"{shown(url)}: more than {self.limits.redirects} redirects (the bound)")

    def _request(self, target: tuple[str, str, int], url: str, headers: dict[str, str], max_bytes: int,
                 take: int | None) -> tuple[int, Any, bytes]:
        left = self.limits.host_s - self.spent
        if left <= 0:
            raise ReadRefused(f"the reads for this host took more than {self.limits.host_s:g} s (the bound per host)")
        started = time.monotonic()
        per_host = left < self.limits.request_s
        deadline = started + min(self.limits.request_s, left)
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection, response = _connection(target, deadline), None
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            if not 200 <= response.status < 300:  # the body of an error or a redirect is never read
                return response.status, response.headers, b""
            chunks, size = [], 0
            while take is None or size < take:
                chunk = response.read1(min(1 << 20, (take or max_bytes + 1) - size))  # few, large reads
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if take is None and size > max_bytes:
                    raise ReadRefused(f"the answer of {shown(url)} is larger than {max_bytes} bytes (the bound)")
                if time.monotonic() > deadline:
                    raise TimeoutError("request deadline")
            body = b"".join(chunks)
            return response.status, response.headers, body[:take] if take is not None else body
        except TimeoutError:
            bound = (f"the reads for this host took more than {self.limits.host_s:g} s (the bound per host)"
                     if per_host else f"{shown(url)} took more than {self.limits.request_s:g} s (the bound per "
                                      "request)")
            raise ReadRefused(bound) from None
        finally:
            if response is not None:
                response.close()
            connection.close()
            self.spent += time.monotonic() - started


def parse_json(body: bytes, what: str, limits: Limits | None = None) -> Any:
    """JSON within the bounds: bytes, depth and items; ReadRefused naming the bound, ValueError if not JSON."""
    limits = limits or LIMITS
    if len(body) > limits.json_bytes:
        raise ReadRefused(f"{what} is larger than {limits.json_bytes} bytes (the bound)")
    try:
        value = json.loads(body)
    except RecursionError:
        raise ReadRefused(f"{what} is JSON nested deeper than {limits.json_depth} levels (the bound)") from None
    items, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limits.json_depth:
            raise ReadRefused(f"{what} is JSON nested deeper than {limits.json_depth} levels (the bound)")
        members = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        for member in members:
            items += 1
            if items > limits.json_items:
                raise ReadRefused(f"{what} holds more than {limits.json_items} JSON values (the bound)")
            if isinstance(member, (dict, list)):
                stack.append((member, depth + 1))
    return value
