"""Reading the served model's GGUF header on the host for the bench roofline: the fact, the chunked reads, the stage."""

from __future__ import annotations

import base64
import subprocess

import pytest

from halofleet.facts.model_header import DATA_MARK, ModelBytes, model_token_cost, parse_model_bytes
from halofleet.models.gguf import GGUFError, read_header_in_chunks
from halofleet.testing.fake import probe_output, run_fake

from .test_gguf import MOE_KV, moe_tensors, write_header


@pytest.fixture(scope="module")
def moe_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("h") / "moe model.gguf"
    vocab = {"tokenizer.ggml.tokens": ("array", [f"token{index}" for index in range(2000)])}  # ~30 KB, as real ones
    write_header(path, "testmoe", moe_tensors(), {**MOE_KV, **vocab})
    with path.open("ab") as file:
        file.write(b"\x5a" * 100_000)  # stands in for the tensor data
    return path


def slicer(data: bytes, reads: list[tuple[int, int]]):
    def read(offset: int, length: int) -> bytes:
        reads.append((offset, length))
        return data[offset:offset + length]
    return read


def test_the_fact_command_reads_bounded_slices_of_a_real_file(moe_file):
    # the command as the host runs it: head/tail/base64 only, the path quoted
    data = moe_file.read_bytes()
    for offset, length in [(0, 1000), (1000, 5000), (len(data) - 10, 1000), (len(data) + 5, 10)]:
        out = subprocess.run(["sh", "-c", ModelBytes().command(str(moe_file), offset, length)],
                             capture_output=True, text=True, check=True).stdout.splitlines()
        assert parse_model_bytes(out) == data[offset:offset + length]
    missing = subprocess.run(["sh", "-c", ModelBytes().command(str(moe_file) + ".no", 0, 10)],
                             capture_output=True, text=True, check=True).stdout.splitlines()
    assert missing == [] and parse_model_bytes(missing) is None


def test_output_without_the_mark_or_with_broken_base64_is_unreadable():
    assert parse_model_bytes(["R0dVRg=="]) is None
    assert parse_model_bytes([DATA_MARK, "not base64!"]) is None
    assert parse_model_bytes([DATA_MARK, "R0dV", "Rg=="]) == b"GGUF"


def test_header_read_in_doubling_slices_until_it_parses(moe_file):
    data, reads = moe_file.read_bytes(), []
    header = read_header_in_chunks(slicer(data, reads), first=1000)
    # 1000, then 1000 more (2000), 2000 more (4000), ...: each slice starts where the last ended
    assert reads[:3] == [(0, 1000), (1000, 1000), (2000, 2000)]
    assert sum(length for _, length in reads) < 2 * header.header_bytes + 1000
    assert all(offset == sum(n for _, n in reads[:i]) for i, (offset, _) in enumerate(reads))


def test_token_cost_through_slices_and_the_reasons_it_is_unknown(moe_file):
    data = moe_file.read_bytes()
    cost, why_not = model_token_cost(slicer(data, []))
    assert (cost.bytes_per_token, cost.experts, why_not) == (1_450_336, (2, 8), "")
    end = data.index(b"output.weight")
    assert model_token_cost(slicer(data[:end], []))[1].startswith("file ends inside its GGUF header")
    assert model_token_cost(lambda o, n: None) == (None, "model file not readable")
    assert model_token_cost(slicer(b"\x00" * 64, []))[1].startswith("not a GGUF file")
    with pytest.raises(GGUFError, match="longer than 4096 bytes"):
        read_header_in_chunks(slicer(data, []), first=1024, limit=4096)


SERVES = {"halo_allow_non_strix_halo": True, "halo_reboot": "never", "halo_model": "/srv/models/moe.gguf",
          "halo_llama_backend": "cpu"}


def test_bench_stage_stores_the_headers_bytes_per_token_with_the_result(moe_file):
    encoded = base64.encodebytes(moe_file.read_bytes()).decode().splitlines()
    data = {**SERVES, "fake_responses": {"head -c": {"stdout": [DATA_MARK, *encoded]}}}
    run = run_fake("deploys/bench.py", {"h": (data, probe_output())})
    assert run.errors == []
    bench = [command for command in run.changes("h") if "llama-bench" in command]
    assert len(bench) == 1
    assert '"bytes_per_token": 1450336, "experts": [2, 8], ' in bench[0]


def test_bench_stage_without_a_readable_header_keeps_the_file_size(moe_file, caplog):
    run = run_fake("deploys/bench.py", {"h": (SERVES, probe_output())})  # the fact prints nothing
    bench = [command for command in run.changes("h") if "llama-bench" in command]
    assert len(bench) == 1 and "bytes_per_token" not in bench[0]
    assert "bench roofline by file size" in caplog.text and "model file not readable" in caplog.text
