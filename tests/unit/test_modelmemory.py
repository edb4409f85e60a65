"""
The glue that sizes what a host will serve: headers read over HTTP ranges (the token kept from other hosts on a
redirect), a pushed model sized here, and the refusal over budget. Servers here listen on loopback only.
"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler
from types import SimpleNamespace

import pytest

from halofleet.box import gtt as memory
from halofleet.contract.config import HostRefused
from halofleet.models.fit import check_host_memory, http_reader, served_needs
from halofleet.models.specs import validate
from halofleet.testing import tinymodel
from halofleet.testing.loopback import http_server
from halofleet.testing.tinymodel import write_tiny_llama

GIB = 1 << 30


class Recorder(BaseHTTPRequestHandler):
    """Serves ``body`` with ranges; ``/moved`` redirects to ``target``; remembers every request's headers."""

    body = b""
    target = ""
    seen: list = []

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append((self.server.server_address[0], self.path, dict(self.headers)))
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", self.target)
            self.end_headers()
            return
        first, last = self.headers["Range"].removeprefix("bytes=").split("-")
        chunk = self.body[int(first):int(last) + 1]
        self.send_response(206)
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        self.wfile.write(chunk)


@pytest.fixture
def servers():
    """Two loopback servers on different addresses (two "hosts" for the redirect)."""
    handler = type("H", (Recorder,), {"body": bytes(range(256)) * 4, "seen": []})
    with http_server(handler) as (_, first), http_server(handler, address="127.0.0.2") as (_, second):
        handler.target = f"{second}/file"
        yield handler, [first, second]


def test_a_header_slice_is_read_with_a_range_and_the_token_stays_with_its_host(servers):
    handler, (first, _) = servers
    data = http_reader("hf_secret", first)(first + "/moved")(10, 5)
    assert data == bytes(range(10, 15))
    (host1, _, asked), (host2, path2, redirected) = handler.seen
    assert (host1, host2, path2) == ("127.0.0.1", "127.0.0.2", "/file")
    assert asked["Authorization"] == "Bearer hf_secret" and asked["Range"] == "bytes=10-14"
    assert "Authorization" not in redirected and redirected["Range"] == "bytes=10-14"


def test_an_unreachable_source_reads_as_nothing(servers):
    _, (first, _) = servers
    assert http_reader()(first.replace("127.0.0.1", "127.0.0.3") + "/x")(0, 4) is None


def _config(**data):
    return validate("h", {"halo_llama_backend": "cpu", **data})


def test_a_pushed_model_is_sized_from_its_file(tmp_path):
    model = write_tiny_llama(tmp_path / "tiny.gguf")
    config = _config(halo_model=str(model), halo_model_push=True, halo_ctx=1000)
    (need, kept), = served_needs(config, {}, host_reader=None)[0]
    cells = 1024  # 1000 padded to llama.cpp's 256
    assert need.kv == cells * tinymodel.N_LAYERS * 2 * tinymodel.N_EMBD * 2 and kept
    assert need.name == "tiny.gguf"
    assert served_needs(_config(halo_serve="none"), {}, host_reader=None) == ([], [])


def test_over_the_budget_refuses_the_host_with_the_numbers(tmp_path):
    model = write_tiny_llama(tmp_path / "tiny.gguf")
    config = _config(halo_model=str(model), halo_model_push=True, halo_ctx=1048576)
    plan = SimpleNamespace(config=config, probe={}, gtt=memory.plan_gtt(8, 4))
    lines = check_host_memory(plan, None, {})
    assert lines[-1].endswith("GTT budget: fits") and "tiny.gguf" in lines[1]
    small = SimpleNamespace(config=config, probe={}, gtt=SimpleNamespace(gtt_gib=0))
    with pytest.raises(HostRefused, match=r"does not fit: models that may be loaded at once need 0\.50 GiB, over "
                                          r"the GTT budget of 0\.00 GiB \(tiny\.gguf: 0\.00 GiB weights \+ 0\.50"):
        check_host_memory(small, None, {})
