"""
The bounded HTTP reads (halofleet.models.http) where test_http.py does not reach: the socket wrapper that puts the
request's deadline on every send and receive (and closes the socket like socket.socket, once its files are closed
too), the connect and TLS handshake bounded by the same deadline, certificates verified even when the process's
default HTTPS context was made unverified, relative redirects, 3xx answers that are not redirects, chunked answers
bounded over all their chunks, and a host with no time left that connects nowhere. Real sockets on loopback only.

Mutants judged equivalent (mutmut 3.7 names, halofleet.models.http.*; no behaviour can tell them apart):
- xǁ_DeadlineSocketǁ_arm__mutmut_3 (``left < 0``): differs only when the clock reads exactly the deadline.
- xǁ_DeadlineSocketǁmakefile__mutmut_1, _2 (default ``mode`` changed): the mode is ignored, the file is always "rb".
- xǁReadsǁget__mutmut_34, _35 (``get("location")``/``"LOCATION"``): http.client's headers are case-insensitive.
- xǁReadsǁ_request__mutmut_41 (``b"XXXX"`` for a non-2xx body): get never returns the body of a non-2xx answer.
- xǁReadsǁ_request__mutmut_46 (``size <= take``): the extra turn asks read1(0), which returns b"" and ends the loop.
- xǁReadsǁ_request__mutmut_54, _55 (2 MiB instead of 1 MiB per read1): the size of one read only, not the result.
- xǁReadsǁ_request__mutmut_56, _59 (read1 asks for more): read1 returns what has arrived; the bound is checked on
  the running size and a slice is cut to ``take``, so the answer and the refusal are the same.
- xǁReadsǁ_request__mutmut_70 (``>= deadline``): differs only when the clock reads exactly the deadline.
- xǁReadsǁ_request__mutmut_71, _72, _73 (the loop's TimeoutError text): caught at once and replaced by ReadRefused.
  (The three xǁ_DeadlineSocketǁrecv_into mutants name the line before the fix of recv_into; they were applied by
  hand to the fixed line and are killed.)
- xǁReadsǁ_request__mutmut_77 (``body[:take] if take is None``): read1 is never asked for more than ``take - size``,
  so the body is never longer than ``take``.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler

import pyinfra_cli  # noqa: F401 - gevent patches threads and sockets on import: before any server starts
import pytest

from halofleet.models import http as bounded
from halofleet.testing.loopback import http_server

# -- the socket wrapper ------------------------------------------------------------------------------------------


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_the_wrapper_receives_and_sends_like_its_socket(pair):
    a, b = pair
    wrapped = bounded._DeadlineSocket(a, time.monotonic() + 1)  # a mistake blocks until the deadline, not forever
    b.sendall(b"hello")
    buffer = bytearray(10)
    assert wrapped.recv_into(buffer, 0, socket.MSG_PEEK) == 5  # the whole buffer, and only a peek
    assert wrapped.recv_into(buffer) == 5 and bytes(buffer[:5]) == b"hello"
    b.sendall(b"world")
    assert wrapped.recv(5, socket.MSG_PEEK) == b"world"
    assert wrapped.recv(5) == b"world"
    wrapped.sendall(b"ping")
    assert b.recv(10) == b"ping"
    assert wrapped.fileno() == a.fileno() and wrapped.getsockname() == a.getsockname()  # the rest is the socket's


def test_the_wrapper_passes_send_flags_on():
    listener = socket.create_server(("127.0.0.1", 0))
    with listener, socket.create_connection(listener.getsockname()) as a:
        peer, _ = listener.accept()
        with peer:
            bounded._DeadlineSocket(a, time.monotonic() + 1).sendall(b"abc", socket.MSG_OOB)  # "c" is urgent data
            peer.settimeout(1)
            assert peer.recv(10) == b"ab"
            assert peer.recv(1, socket.MSG_OOB) == b"c"


def test_every_receive_waits_only_for_what_is_left_of_the_deadline(pair):
    a, b = pair
    wrapped = bounded._DeadlineSocket(a, time.monotonic() + 0.2)
    late = threading.Timer(3.0, b.sendall, [b"late"])  # answers well after the deadline (a loaded machine)
    late.start()
    try:
        with pytest.raises(TimeoutError):
            wrapped.recv(10)
    finally:
        late.cancel()
    b.sendall(b"ready")  # data waiting makes no difference once the deadline has passed
    spent = bounded._DeadlineSocket(a, time.monotonic() - 0.01)
    for call in (lambda: spent.recv(5), lambda: spent.recv_into(bytearray(5)), lambda: spent.sendall(b"x")):
        with pytest.raises(TimeoutError, match="^request deadline$"):
            call()
    assert a.recv(5) == b"ready"


def closed(sock: socket.socket) -> bool:
    return sock.fileno() == -1


def test_the_wrapper_closes_its_socket_once_its_files_are_closed_too(pair):
    a, b = pair
    alone = bounded._DeadlineSocket(a, time.monotonic() + 1)
    alone.close()  # no file: closed at once
    assert closed(a)

    a, b = socket.socketpair()
    with a, b:
        wrapped = bounded._DeadlineSocket(a, time.monotonic() + 1)
        wrapped.makefile().close()  # a file closed while the wrapper is open: the socket stays open
        assert not closed(a)
        wrapped.sendall(b"x")
        assert b.recv(1) == b"x"
        handle = wrapped.makefile()
        wrapped.close()  # the wrapper closed while a file is open: the file still reads
        assert not closed(a)
        b.sendall(b"data")
        assert handle.read1(10) == b"data"
        handle.close()
        assert closed(a)

    a, b = socket.socketpair()
    with a, b:
        wrapped = bounded._DeadlineSocket(a, time.monotonic() + 1)
        first, second = wrapped.makefile(), wrapped.makefile()
        wrapped.close()
        first.close()
        assert not closed(a)  # one file still open
        b.sendall(b"more")
        assert second.read1(10) == b"more"
        second.close()
        assert closed(a)


# -- a plain HTTP server on loopback -----------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def answer(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802
        self.server.seen.append((self.path, dict(self.headers)))
        if self.path.startswith("/to/"):
            self.answer(302, Location=self.path[len("/to/"):])
        elif self.path == "/relative":
            self.answer(302, Location=" /x ")
        elif self.path == "/choices":  # 300 Multiple Choices: not a redirect halofleet follows, with a body
            self.answer(300, b"c" * 1000)
        elif self.path == "/chunked":  # 10 chunks of 10 bytes
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"".join(b"a\r\n" + b"%d" % n * 10 + b"\r\n" for n in range(10)) + b"0\r\n\r\n")
            self.close_connection = True
        elif self.path in ("/", "/?a=1", "/x"):
            self.answer(200, b"0123456789" * 10, Content_Type="text/plain")
        else:
            self.answer(404, b"no")


@pytest.fixture
def server():
    with http_server(Handler) as served:
        yield served


def reads(**limits) -> bounded.Reads:
    return bounded.Reads(bounded.Limits(**{"request_s": 5, "host_s": 10, **limits}))


def test_an_answer_carries_its_status_headers_and_url(server):
    _, base = server
    answer = reads().get(base + "/x", {}, max_bytes=100)
    assert (answer.status, answer.headers["Content-Length"], answer.headers["Content-Type"], answer.url) == \
        (200, "100", "text/plain", base + "/x")


def test_a_url_without_a_path_asks_for_the_root(server):
    httpd, base = server
    assert reads().get(base, {}, max_bytes=100).body == b"0123456789" * 10
    assert reads().get(base + "?a=1", {}, max_bytes=100).body == b"0123456789" * 10
    assert [path for path, _ in httpd.seen] == ["/", "/?a=1"]


def test_a_relative_redirect_is_resolved_against_the_url_that_answered(server):
    _, base = server
    assert reads().get(base + "/relative", {}, max_bytes=100).url == base + "/x"


def test_a_redirect_elsewhere_without_a_token_is_followed(server):
    httpd, base = server
    other = base.replace("127.0.0.1", "localhost")  # the same server, another origin
    answer = reads().get(f"{base}/to/{other}/x", {"Accept": "*/*"}, max_bytes=100)
    assert answer.url == other + "/x" and answer.body == b"0123456789" * 10
    assert [headers.get("Accept") for _, headers in httpd.seen] == ["*/*", "*/*"]  # the other headers go on


def test_an_answer_that_is_neither_2xx_nor_a_followed_redirect_is_an_http_error(server):
    _, base = server
    with pytest.raises(bounded.HttpStatus) as error:  # its body (over max_bytes) is not read: not a bound
        reads().get(base + "/choices", {}, max_bytes=10)
    assert (error.value.code, error.value.url, str(error.value)) == (300, base + "/choices", "HTTP 300")
    with pytest.raises(bounded.HttpStatus) as error:
        reads().get(base + "/to//missing", {}, max_bytes=10)
    assert (error.value.code, error.value.url, str(error.value)) == (404, base + "/missing", "HTTP 404")


def test_a_chunked_answer_is_bounded_over_all_its_chunks(server):
    _, base = server
    expected = b"".join(b"%d" % n * 10 for n in range(10))
    assert reads().get(base + "/chunked", {}, max_bytes=100).body == expected
    assert reads().get(base + "/chunked", {}, max_bytes=0, take=25).body == expected[:25]
    with pytest.raises(bounded.ReadRefused, match="is larger than 95 bytes \\(the bound\\)$"):
        reads().get(base + "/chunked", {}, max_bytes=95)  # no chunk is over 95 bytes, the answer is


def test_shown_keeps_200_characters_and_cuts_longer_urls():
    exactly = "http://h/" + "x" * 191
    assert len(exactly) == 200 and bounded.shown(exactly) == exactly
    longer = exactly + "y"
    assert bounded.shown(longer) == longer[:197] + "..."


# -- time: the host's budget, the connect and the TLS handshake -------------------------------------------------

@pytest.fixture
def silent():
    """A TCP port that completes the handshake (the kernel's backlog) and never answers a byte."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=8)
    yield listener
    listener.close()


def test_a_host_without_time_left_connects_nowhere(silent):
    port = silent.getsockname()[1]
    with pytest.raises(bounded.ReadRefused, match="^the reads for this host took more than 0 s \\(the bound per host"):
        reads(host_s=0).get(f"http://127.0.0.1:{port}/x", {}, max_bytes=10)
    silent.settimeout(0.3)
    with pytest.raises(TimeoutError):
        silent.accept()  # no connection waits to be accepted


def test_when_the_request_bound_is_the_whole_budget_the_request_bound_is_named(silent):
    port = silent.getsockname()[1]
    with pytest.raises(bounded.ReadRefused, match="took more than 0.3 s \\(the bound per request\\)$"):
        reads(request_s=0.3, host_s=0.3).get(f"http://127.0.0.1:{port}/x", {}, max_bytes=10)


def test_a_connect_that_is_never_answered_is_bounded_by_the_request():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    queued = socket.create_connection(("127.0.0.1", port))  # the backlog is full: the next SYNs are dropped
    stop = threading.Timer(4, listener.close)  # a connect without a bound is refused then (its next SYN), not a hang
    stop.start()
    try:
        limited = reads(request_s=0.3, host_s=30)
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(bounded.ReadRefused, match="took more than 0.3 s \\(the bound per request\\)$"):
                limited.get(f"http://127.0.0.1:{port}/x", {}, max_bytes=10)
            # the request's 0.3 s bounds the connect, not a second of its own (slack for a loaded machine)
            assert time.monotonic() - started < 0.9
    finally:
        stop.cancel()
        queued.close()
        listener.close()


def test_a_tls_handshake_that_never_comes_is_bounded_by_the_request(silent):
    port = silent.getsockname()[1]
    stop = threading.Timer(4, silent.close)  # a handshake without a bound gets a reset then, not a hang
    stop.start()
    try:  # one read: loading the system's CAs may take long on a loaded machine, and counts against the host
        with pytest.raises(bounded.ReadRefused, match="took more than 0.3 s \\(the bound per request\\)$"):
            reads(request_s=0.3).get(f"https://127.0.0.1:{port}/x", {}, max_bytes=10)
    finally:
        stop.cancel()


# -- TLS ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (its own CA), and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "halofleet test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return str(folder / "cert.pem"), str(folder / "key.pem")


@pytest.fixture
def tls_server(certificate):
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with http_server(Handler, tls=context) as (_, base):
        yield base, cert


def test_https_is_read_over_tls_from_a_trusted_server(tls_server, monkeypatch):
    base, cert = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", cert)  # OpenSSL's default trust store: this certificate only
    answer = reads().get(base + "/x", {}, max_bytes=100)
    assert answer.body == b"0123456789" * 10 and answer.url == base + "/x"


def test_an_untrusted_certificate_is_refused_even_when_the_process_default_does_not_verify(tls_server, monkeypatch,
                                                                                           tmp_path):
    base, _ = tls_server
    (tmp_path / "empty.pem").write_text("")
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "empty.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    with pytest.raises(ssl.SSLCertVerificationError):
        reads().get(base + "/x", {}, max_bytes=100)
    # What PYTHONHTTPSVERIFY=0 or a library's global switch does (PEP 476): http.client's own default stops
    # verifying. halofleet brings its own context, so its reads still verify.
    monkeypatch.setattr(ssl, "_create_default_https_context", ssl._create_unverified_context)
    with pytest.raises(ssl.SSLCertVerificationError):
        reads().get(base + "/x", {}, max_bytes=100)
