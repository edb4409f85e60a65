"""The glue of ``halofleet plan --model``: parsing PATH@CTX and --tensor-split, and when a table is made."""

from __future__ import annotations

import re

import pytest

from halofleet.box.plan import build_plan
from halofleet.cli import synthetic_probe
from halofleet.models.kvcache import KVError
from halofleet.views import sizing as memplan


def exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


@pytest.mark.parametrize("spec, expected", [
    ("/m/x.gguf@512", True), ("/m/a@b.gguf@512", True), ("/m/a@b.gguf", False), ("x.gguf@", False),
    ("@512", False), ("x@5x", False), ("x@\u0665", False), ("x.gguf", False),
])
def test_has_ctx(spec, expected):
    assert memplan.has_ctx(spec) is expected


def test_parse_model():
    assert memplan.parse_model("/m/a@b.gguf@512", 8192, "halo_ctx") == ("/m/a@b.gguf", 512, "/m/a@b.gguf@512")
    assert memplan.parse_model("/m/a@b.gguf", 8192, "halo_ctx") == ("/m/a@b.gguf", 8192, "halo_ctx")
    assert memplan.parse_model("m@256", 1, "x")[1] == 256 and memplan.parse_model("m@1048576", 1, "x")[1] == 1048576
    with pytest.raises(ValueError, match=exact("--model 'm@255': ctx 255 is not in 256..1048576")):
        memplan.parse_model("m@255", 8192, "halo_ctx")
    with pytest.raises(ValueError, match=exact("--model '': give a GGUF path, optionally PATH@CTX")):
        memplan.parse_model("", 8192, "halo_ctx")
    with pytest.raises(ValueError, match=exact("--model '  ': give a GGUF path, optionally PATH@CTX")):
        memplan.parse_model("  ", 8192, "halo_ctx")


def test_parse_tensor_split():
    assert memplan.parse_tensor_split(None, 2) is None
    assert memplan.parse_tensor_split("0,1", 2) == [0.0, 1.0]
    assert memplan.parse_tensor_split("3, 1.5", 2) == [3.0, 1.5]
    with pytest.raises(ValueError, match=exact("--tensor-split 'inf,1' must be a non-empty list of numbers >= 0, not "
                                               "all zero (proportions, e.g. [3, 1]), each at most 1000000, at "
                                               "most 64 of them (e.g. 3,1)")):
        memplan.parse_tensor_split("inf,1", 2)
    with pytest.raises(ValueError, match=exact("--tensor-split '1,2,3': 3 values for 2 devices (1 workers and the "
                                               "head)")):
        memplan.parse_tensor_split("1,2,3", 2)


def test_size_makes_a_table_only_for_local_models(tmp_path):
    host_plan = build_plan("plan", {"halo_allow_non_strix_halo": True, "halo_serve": "none"}, synthetic_probe(128))
    assert memplan.size(host_plan, (), ctx=None, models_max=4) is None
    # the served model is on the host, not here: no table (served), a refusal (not served)
    assert memplan.size(host_plan, ("/srv/m.gguf",), ctx=None, models_max=4, served=True) is None
    assert memplan.size(host_plan, ("/srv/m.gguf@512",), ctx=None, models_max=4, served=True) is None
    with pytest.raises(KVError, match=exact("/srv/m.gguf: model file not readable")):
        memplan.size(host_plan, ("/srv/m.gguf",), ctx=None, models_max=4)
    from halofleet.testing.tinymodel import write_tiny_llama

    tiny = write_tiny_llama(tmp_path / "tiny.gguf")
    sizing = memplan.size(host_plan, (f"{tiny}@512",), ctx=None, models_max=4, served=True)
    assert sizing is not None and sizing.sources == {"tiny.gguf": f"{tiny}@512"} and sizing.split is None
    assert sizing.table.budget == 120 << 30 and sizing.refusal() == ""
    assert sizing.lines()[0] == f"memory (KV f16, -np 1, ctx from {tiny}@512):"
