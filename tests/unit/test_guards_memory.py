"""
Preflight's memory check on what the unit will really run: the -np/-b/-ub the unit passes, every model of a router
without halo_models_max counted at once, llama.cpp's device order for an RPC group (the --rpc workers first, the
head last), and the Hub token kept from a plain URL source's host when its header is read.
"""

from __future__ import annotations

import hashlib
from http.server import BaseHTTPRequestHandler
from types import SimpleNamespace

import pytest

from halofleet.contract.config import HostRefused
from halofleet.deploy import resolve
from halofleet.models.fit import check_host_memory, served_needs
from halofleet.models.kvcache import need_of_file
from halofleet.models.specs import validate
from halofleet.testing import tinymodel
from halofleet.testing.loopback import http_server
from halofleet.testing.tinymodel import write_tiny_llama

GIB = 1 << 30
TOKEN = "hf_guardtoken0123456789"


@pytest.fixture
def tiny(tmp_path):
    return write_tiny_llama(tmp_path / "tiny.gguf")


def host_plan(config, gtt_gib, probe=None):
    return SimpleNamespace(config=config, probe=probe or {}, gtt=SimpleNamespace(gtt_gib=gtt_gib))


def test_the_kv_cache_is_sized_with_the_units_parallel_slots_and_batches(tiny):
    config = validate("h", {"halo_llama_backend": "cpu", "halo_model": str(tiny), "halo_model_push": True,
                            "halo_ctx": 1024, "halo_llama_parallel": 3, "halo_llama_batch": 1024,
                            "halo_llama_ubatch": 256})
    (need, _), = served_needs(config, {}, host_reader=None)[0]
    assert need.parallel == 3
    # -np 3 splits 1024 cells into three streams of 512 (1024 // 3 padded to 256): 1536 cells, not 1024.
    assert need.kv == 1536 * tinymodel.N_LAYERS * 2 * tinymodel.N_EMBD * 2
    assert need == need_of_file(str(tiny), 1024, "f16", parallel=3, batch=1024, ubatch=256, name="tiny.gguf")
    assert need != need_of_file(str(tiny), 1024, "f16", parallel=1, batch=1024, ubatch=256, name="tiny.gguf")


def _router(tiny, **data):
    # Loaded on demand (keep_loaded false): how many the router holds at once is what --models-max says.
    models = [{"name": name, "file": str(tiny), "ctx": 1048576, "keep_loaded": False} for name in ("a", "b")]
    return resolve(validate("h", {"halo_llama_backend": "cpu", "halo_models": models, **data}))


def test_a_router_without_halo_models_max_counts_every_model_at_once(tiny):
    # Each model needs about 0.5 GiB at this ctx: two at once are over 1 GiB, one alone fits.
    with pytest.raises(HostRefused, match=r"does not fit: models that may be loaded at once need 1\.00 GiB"):
        check_host_memory(host_plan(_router(tiny), 1), None, {})
    lines = check_host_memory(host_plan(_router(tiny, halo_models_max=1), 1), None, {})
    assert lines[-1].startswith("  loaded at once (at most 1): 0.50 GiB of the 1.00 GiB GTT budget: fits")
    lines = check_host_memory(host_plan(_router(tiny), 2), None, {})
    assert lines[-1].startswith("  loaded at once (at most 2): 1.00 GiB of the 2.00 GiB GTT budget: fits")


def test_a_single_model_is_one_model_at_once(tiny):
    config = validate("h", {"halo_llama_backend": "cpu", "halo_model": str(tiny), "halo_model_push": True})
    assert "(at most 1)" in check_host_memory(host_plan(config, 1), None, {})[-1]


def test_an_rpc_group_is_split_in_llama_cpps_device_order_workers_first_head_last(tiny):
    config = validate("head", {"halo_llama_backend": "cpu", "halo_model": str(tiny), "halo_model_push": True,
                               "halo_rpc_address": "10.0.0.1", "halo_rpc_workers": ["w2", "w1"]})
    lines = check_host_memory(host_plan(config, 4), None, {"w1": 2 * GIB, "w2": 1 * GIB})
    assert lines[0].startswith("  split of tiny.gguf (") and lines[0].endswith(
        "in llama.cpp's device order (--rpc workers, then the head):")
    boxes = [line.split()[0] for line in lines[1:-1]]
    assert boxes == ["w2", "w1", "head"]
    # Shares by free memory in that order: 1, 2 and 4 GiB of 7.
    assert [line.split()[1] for line in lines[1:-1]] == ["14.3%", "28.6%", "57.1%"]
    assert lines[1].split()[-3:] == ["of", "1.00", "GiB"] or " of 1.00 GiB" in lines[1]
    assert " of 4.00 GiB" in lines[3]


class Source(BaseHTTPRequestHandler):
    body = b""
    seen: list = []

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append(dict(self.headers))
        first, last = self.headers["Range"].removeprefix("bytes=").split("-")
        chunk = self.body[int(first):int(last) + 1]
        self.send_response(206)
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        self.wfile.write(chunk)


@pytest.fixture
def source(tiny):
    handler = type("S", (Source,), {"body": tiny.read_bytes(), "seen": []})
    with http_server(handler) as (_, base):
        yield handler, base


def test_the_hub_token_is_not_sent_to_a_plain_url_sources_host(tiny, source):
    handler, base = source
    digest = hashlib.sha256(tiny.read_bytes()).hexdigest()
    config = validate("h", {"halo_llama_backend": "cpu", "halo_hf_token": TOKEN, "halo_models": [
        {"name": "plain", "url": f"{base}/tiny.gguf", "sha256": digest}]})
    (need, _), = served_needs(config, {}, host_reader=None)[0]
    assert need.weights == need_of_file(str(tiny), config.ctx, "f16").weights  # the header was read there
    assert handler.seen and all("Authorization" not in headers for headers in handler.seen)
    assert all(TOKEN not in str(headers) for headers in handler.seen)
