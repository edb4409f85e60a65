"""llama-bench results against the memory roofline (pure)."""

import json

import pytest

from halofleet.bench import bench_cell, parse_bench_result

GIB = 2**30


def stored(model_bytes: int, pp: float, tg: float) -> str:
    records = [
        {"model_filename": "/m/llama-2-7b.Q4_0.gguf", "model_size": model_bytes - 1000, "backends": "Vulkan",
         "n_prompt": 512, "n_gen": 0, "avg_ts": pp},
        {"model_filename": "/m/llama-2-7b.Q4_0.gguf", "model_size": model_bytes - 1000, "backends": "Vulkan",
         "n_prompt": 0, "n_gen": 128, "avg_ts": tg},
    ]
    return json.dumps({"model": "/m/llama-2-7b.Q4_0.gguf", "model_file_bytes": model_bytes, "llama_bench": records})


def test_reference_run_against_the_roofline():
    # DOMAIN.md: llama-2-7b Q4_0, 3.56 GiB, Vulkan RADV 1338 / 55.7 t/s
    figures = parse_bench_result(stored(int(3.56 * GIB), 1338.0, 55.7))
    assert (figures.pp_tps, figures.tg_tps, figures.model_bytes) == (1338.0, 55.7, int(3.56 * GIB))
    assert figures.roofline_tps(256) == pytest.approx(66.97, abs=0.01)
    assert figures.percent_of_roofline(256) == pytest.approx(83.2, abs=0.1)
    assert figures.percent_of_roofline(215) == pytest.approx(99.0, abs=0.1)
    assert bench_cell(figures, 256, 215) == (
        "pp512 1338.0 t/s, tg128 55.7 t/s, tg 83% of 256 GB/s roofline (99% of 215)"
    )


def test_dense_model_from_domain_reads_at_about_measured_bandwidth():
    # Qwen3.6-27B Q8, 33.3 GiB at 6.3 t/s: ~225 GB/s, i.e. just above the 215 GB/s measured figure
    figures = parse_bench_result(stored(int(33.3 * GIB), 275.0, 6.3))
    assert figures.percent_of_roofline(215) == pytest.approx(104.8, abs=0.2)


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"llama_bench": []}', '{"model": "x"}'])
def test_nothing_stored_or_garbage_is_no_result(text):
    assert parse_bench_result(text) is None
    assert bench_cell(None, 256, 215) == "-"
