"""
The one HTTP-read rule (halofleet.models.http) and the control machine's file reads (halofleet.contract.localfiles),
unit by unit: origins, the token rule, the bounds (bytes, redirects, time per request and per host, JSON depth and
items), credentials masked, and files opened only when regular.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from http.server import BaseHTTPRequestHandler

import pyinfra_cli  # noqa: F401 - gevent patches threads and sockets on import: before the server starts
import pytest

from halofleet.contract import localfiles
from halofleet.contract.validators import mask_url_credentials
from halofleet.models import http as bounded
from halofleet.testing.loopback import http_server


@pytest.mark.parametrize("url, expected", [
    ("https://Hub.Test/x", ("https", "hub.test", 443)), ("http://hub.test:8080/", ("http", "hub.test", 8080)),
    ("http://u:p@hub.test/", ("http", "hub.test", 80)), ("HTTPS://hub.test", ("https", "hub.test", 443)),
    ("file:///etc/passwd", None), ("ftp://hub.test/", None), ("http:///x", None), ("http://h:99999/", None),
    ("data:,x", None), ("//hub.test/x", None), ("", None),
])
def test_origin_is_scheme_host_and_port_of_http_urls_only(url, expected):
    assert bounded.origin(url) == expected


@pytest.mark.parametrize("url, carries", [
    ("https://hub.test/api/x", True), ("https://hub.test:443/y", True), ("https://HUB.test/z", True),
    ("http://hub.test/api/x", False),  # a downgrade is another origin
    ("https://hub.test:8443/x", False), ("https://cdn.hub.test/x", False), ("https://hub.test.evil/x", False),
    ("https://evil/?https://hub.test", False), ("file:///hub.test", False),
])
def test_the_token_goes_to_its_own_origin_only(url, carries):
    assert bounded.may_carry_token(url, "https://hub.test") is carries
    assert bounded.may_carry_token(url, None) is False


def test_credentials_are_masked_in_any_text():
    assert mask_url_credentials("at https://user:s3cret@h/x and ftp://tok@h/") == \
        "at https://user:<redacted>@h/x and ftp://<redacted>@h/"
    assert mask_url_credentials("https://user:tok#en@mirror/rocm") == "https://user:<redacted>@mirror/rocm"
    assert mask_url_credentials("https://h/a@b user@host") == "https://h/a@b user@host"
    assert bounded.shown("http://u:p@h/" + "x" * 300).startswith("http://u:<redacted>@h/xx")
    assert len(bounded.shown("http://h/" + "x" * 300)) == 200


def test_json_within_its_bounds():
    limits = bounded.Limits(json_bytes=100, json_depth=3, json_items=6)
    assert bounded.parse_json(b'[[1, [2]], {"a": 3}]', "it", limits) == [[1, [2]], {"a": 3}]  # 6 values, 3 deep
    for body, bound in ((b"[" + b" " * 100 + b"]", "it is larger than 100 bytes"),
                        (b"[[[[1]]]]", "it is JSON nested deeper than 3 levels"),
                        (b"[1,2,3,4,5,6,7]", "it holds more than 6 JSON values")):
        with pytest.raises(bounded.ReadRefused, match=bound):
            bounded.parse_json(body, "it", limits)
    deep = bounded.Limits(json_bytes=100_000, json_depth=3, json_items=6)
    with pytest.raises(bounded.ReadRefused, match="nested deeper than 3 levels"):  # past Python's recursion limit
        bounded.parse_json(b"[" * 50_000 + b"]" * 50_000, "it", deep)
    with pytest.raises(ValueError):
        bounded.parse_json(b"<html>", "it", limits)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.server.seen.append((self.path, dict(self.headers)))
        if self.path.startswith("/to/"):
            self.send_response(302)
            self.send_header("Location", self.path[len("/to/"):])
            self.end_headers()
            return
        if self.path == "/slow":
            time.sleep(0.4)
        body = b"0123456789" * 10
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    with http_server(Handler) as served:
        yield served


def test_a_read_is_bounded_in_bytes_and_a_slice_stops_early(server):
    httpd, base = server
    reads = bounded.Reads(bounded.Limits(request_s=5, host_s=10))
    assert reads.get(base + "/x", {}, max_bytes=100).body == b"0123456789" * 10
    assert reads.get(base + "/x", {}, max_bytes=0, take=12).body == b"012345678901"
    with pytest.raises(bounded.ReadRefused, match="is larger than 99 bytes"):
        reads.get(base + "/x", {}, max_bytes=99)


def test_redirects_keep_the_token_at_home_and_follow_http_only(server):
    httpd, base = server
    reads = bounded.Reads(bounded.Limits(request_s=5, host_s=10, redirects=2))
    other = base.replace("127.0.0.1", "localhost")  # the same server, another origin
    answer = reads.get(f"{base}/to/{other}/to/{base}/x", {"Authorization": "Bearer t"}, max_bytes=100)
    assert answer.url == f"{base}/x"
    assert [("Authorization" in headers) for _, headers in httpd.seen] == [True, False, False]  # never back
    with pytest.raises(bounded.ReadRefused, match="file:///etc/passwd is not an http.s. URL: only http and https"):
        reads.get(f"{base}/to/file:///etc/passwd", {}, max_bytes=100)
    with pytest.raises(bounded.ReadRefused, match="more than 2 redirects"):
        reads.get(f"{base}/to/{base}/to/{base}/to/{base}/x", {}, max_bytes=100)


def test_time_is_bounded_per_request_and_per_host(server):
    _, base = server
    with pytest.raises(bounded.ReadRefused, match="took more than 0.2 s \\(the bound per request\\)"):
        bounded.Reads(bounded.Limits(request_s=0.2, host_s=10)).get(base + "/slow", {}, max_bytes=100)
    reads = bounded.Reads(bounded.Limits(request_s=5, host_s=0.6))
    reads.get(base + "/slow", {}, max_bytes=100)  # 0.4 s of the host's 0.6
    with pytest.raises(bounded.ReadRefused, match="the reads for this host took more than 0.6 s"):
        reads.get(base + "/slow", {}, max_bytes=100)
    with pytest.raises(bounded.ReadRefused, match="the reads for this host took more than 0.6 s"):
        reads.get(base + "/x", {}, max_bytes=100)  # nothing left: not even asked
    assert reads.spent >= 0.6


def test_an_http_error_is_not_a_bound(server):
    _, base = server
    with pytest.raises(bounded.HttpStatus) as error:
        bounded.Reads().get(base.replace("127.0.0.1", "127.0.0.1") + "/to/", {}, max_bytes=10)  # no Location
    assert error.value.code == 302


# -- files on the control machine --------------------------------------------------------------------------------

def test_only_regular_files_are_opened(tmp_path):
    regular = tmp_path / "m.gguf"
    regular.write_bytes(b"GGUF" + bytes(100))
    os.symlink(regular, tmp_path / "link.gguf")
    os.mkfifo(tmp_path / "fifo")
    os.symlink(tmp_path / "a", tmp_path / "b")
    os.symlink(tmp_path / "b", tmp_path / "a")
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(tmp_path / "sock"))
    assert localfiles.read_at(str(tmp_path / "link.gguf"), 0, 4) == b"GGUF"
    assert localfiles.read_at(str(regular), 102, 10) == bytes(2)
    assert localfiles.sha256_of(str(regular)) == hashlib.sha256(regular.read_bytes()).hexdigest()
    assert localfiles.is_regular(str(regular)) and not localfiles.is_regular(str(tmp_path))
    for path, reason in ((tmp_path / "fifo", "is a FIFO on the control machine, not a regular file"),
                         ("/dev/zero", "is a device on the control machine, not a regular file"),
                         (tmp_path, "is a directory on the control machine, not a regular file"),
                         (tmp_path / "a", "cannot be opened on the control machine (Too many levels of symbolic"),
                         (tmp_path / "sock", "cannot be opened on the control machine"),
                         (tmp_path / "none", "no such file on the control machine")):
        with pytest.raises(localfiles.LocalFileRefused, match=reason.replace("(", "\\(")):
            localfiles.read_at(str(path), 0, 4)
    with pytest.raises(localfiles.LocalFileMissing):
        localfiles.read_bounded(str(tmp_path / "none"), 10)
    with pytest.raises(localfiles.LocalFileRefused, match="cannot be read on the control machine"):
        localfiles.read_at("/proc/self/mem", 0, 4)


def test_reads_are_bounded_in_bytes(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(bytes(1000))
    assert localfiles.read_bounded(str(big), 1000) == bytes(1000)
    with pytest.raises(localfiles.LocalFileRefused, match="is larger than 999 bytes \\(the bound\\)"):
        localfiles.read_bounded(str(big), 999)
    with pytest.raises(localfiles.LocalFileRefused, match="is larger than 999 bytes \\(the bound\\)"):
        localfiles.sha256_of(str(big), limit=999)


def test_the_readme_states_the_bounds():
    """What users read is what the code bounds (README 'Several models per host')."""
    from pathlib import Path

    text = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    limits = bounded.LIMITS
    assert (f"at most {limits.redirects} redirects, {limits.json_bytes >> 20} MiB and {limits.json_depth} levels and "
            f"{limits.json_items:,} values of JSON per page, {limits.pages} pages, {limits.matches:,} files per "
            f"`include`, {limits.request_s:g} s per request and {limits.host_s:g} s for one host's reads") in text
    assert f"the certificate up to {localfiles.CERT_BYTES >> 20} MiB" in text


def test_a_pushed_model_replaced_by_a_fifo_after_validation_refuses_the_host(tmp_path):
    from halofleet.box import serving
    from halofleet.contract.config import ConfigError
    from halofleet.models.specs import validate

    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(12))
    config = validate("h", {"halo_model": str(model), "halo_model_push": True, "halo_llama_backend": "cpu"})
    model.unlink()
    os.mkfifo(model)
    with pytest.raises(ConfigError, match="is a FIFO on the control machine, not a regular file \\(halo_model_push\\)"):
        serving._model(config, {})


# -- the Hub's tree and the header slices through the rule -----------------------------------------------------

class FakePages:
    """The tree API as a fetch: pages with the given next links; records each request's URL and headers."""

    def __init__(self, pages: list[tuple[list, str | None]]):
        self.pages, self.calls = pages, []

    def __call__(self, url, headers):
        self.calls.append((url, dict(headers)))
        entries, link = self.pages[len(self.calls) - 1]
        return json.dumps(entries).encode(), link


def spec():
    from halofleet.models.specs import parse_models

    (parsed,) = parse_models("h", [{"name": "m", "hf": "acme/tiny", "include": "*.gguf"}])
    return parsed


def lfs(path):
    return {"type": "file", "path": path, "size": 1, "oid": "1" * 40, "lfs": {"oid": "a" * 64, "size": 1}}


def test_next_links_carry_the_token_to_the_hubs_origin_only():
    from halofleet.models import hub

    fetch = FakePages([([lfs("a.gguf")], '</p2>; rel="next"'), ([], '<https://elsewhere.test/p3>; rel="next"'),
                       ([], '<https://hub.test/p4>; rel="next"'), ([lfs("b.gguf")], None)])
    entries = hub.list_files("h", spec(), "https://hub.test", "tok", fetch)
    assert [entry["path"] for entry in entries] == ["a.gguf", "b.gguf"]
    assert [url for url, _ in fetch.calls] == [
        "https://hub.test/api/models/acme/tiny/tree/main?recursive=true", "https://hub.test/p2",
        "https://elsewhere.test/p3", "https://hub.test/p4"]
    assert ["Authorization" in headers for _, headers in fetch.calls] == [True, True, False, True]


def test_the_tree_is_bounded_in_pages_entries_and_matches():
    from halofleet.contract.config import HostRefused
    from halofleet.models import hub

    limits = bounded.Limits(pages=3, json_items=4, matches=2)
    endless = FakePages([([], '</again>; rel="next"')] * 4)
    with pytest.raises(HostRefused, match="acme/tiny@main has more than 3 pages \\(the bound\\)$"):
        hub.list_files("h", spec(), "https://hub.test", None, endless, limits)
    assert len(endless.calls) == 3
    many = FakePages([([{"type": "file"}] * 3, '</p2>; rel="next"'), ([{"type": "file"}] * 3, '</p3>; rel="next"'),
                      ([{"type": "file"}] * 3, None)])  # 6 values a page, 9 entries in all
    with pytest.raises(HostRefused, match="has more than 6 files \\(the bound\\)$"):
        hub.list_files("h", spec(), "https://hub.test", None, many, bounded.Limits(pages=3, json_items=6))
    deep = FakePages([([[[[[]]]]], None)])
    with pytest.raises(HostRefused, match="the answer is JSON nested deeper than 16 levels|holds more than"):
        hub.list_files("h", spec(), "https://hub.test", None, deep, bounded.Limits(json_depth=16, json_items=3))

    class Reads:
        limits = bounded.Limits(matches=2)

    three = FakePages([([lfs("a.gguf"), lfs("b.gguf"), lfs("c.gguf")], None)])
    with pytest.raises(HostRefused, match="include '\\*.gguf' matches more than 2 files in acme/tiny@main"):
        hub.resolve_hf("h", spec(), "https://hub.test", None, False, fetch=three, reads=Reads())


def test_header_slices_follow_the_rule(server):
    from halofleet.models.fit import http_reader

    httpd, base = server
    reads = bounded.Reads(bounded.Limits(request_s=5, host_s=10))
    # The server ignores Range: the slice is cut from the whole answer.
    assert http_reader("tok", base, reads)(base + "/x")(10, 5) == b"01234"
    assert http_reader("tok", "https://hub.test", reads)(base + "/x")(0, 3) == b"012"
    assert ["Authorization" in headers for _, headers in httpd.seen] == [True, False]
    assert http_reader(None, None, reads)(base + "/to/")(0, 3) is None  # an HTTP answer that is no file
    with pytest.raises(bounded.ReadRefused, match="only http and https"):
        http_reader(None, None, reads)(base + "/to/file:///dev/zero")(0, 3)
