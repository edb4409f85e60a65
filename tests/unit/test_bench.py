"""llama-bench results against the memory roofline (pure)."""

import json

import pytest

from halofleet.box.bench import bench_cell, parse_bench_result

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


def stored_moe(file_bytes: int, tg: float, bytes_per_token: int | None, experts: object) -> str:
    text = json.loads(stored(file_bytes, 1692.0, tg))
    text.update(bytes_per_token=bytes_per_token, experts=experts)
    return json.dumps(text)


def test_file_size_roofline_is_impossible_for_an_moe_model():
    # DOMAIN.md: gpt-oss-20b MXFP4, 11.3 GiB, Vulkan tg 79.8 t/s: by file size that is 3.8x the 256 GB/s roofline
    figures = parse_bench_result(stored(int(11.3 * GIB), 1692.0, 79.8))
    assert figures.percent_of_roofline(256) == pytest.approx(378, abs=1)


def test_moe_roofline_uses_the_header_bytes_per_token_and_says_so():
    # a made-up MoE run: 2.0e9 bytes read per token, 4 of 32 experts; 256 GB/s / 2.0 GB = 128 t/s roofline
    figures = parse_bench_result(stored_moe(int(11.3 * GIB), 79.8, 2_000_000_000, [4, 32]))
    assert (figures.bytes_per_token, figures.experts, figures.read_per_token) == (2_000_000_000, (4, 32),
                                                                                  2_000_000_000)
    assert figures.roofline_tps(256) == pytest.approx(128.0)
    assert bench_cell(figures, 256, 215) == (
        "pp512 1692.0 t/s, tg128 79.8 t/s, tg 62% of 256 GB/s roofline (74% of 215), MoE: 4 of 32 experts active"
    )  # 79.8 / 128 = 62.3 %; 215 GB/s: 107.5 t/s, 74.2 %


def test_dense_model_with_header_figure_has_no_moe_note():
    figures = parse_bench_result(stored_moe(int(3.56 * GIB), 55.7, 3_750_000_000, None))
    assert figures.experts is None and figures.roofline_tps(256) == pytest.approx(68.27, abs=0.01)
    assert bench_cell(figures, 256, 215).endswith("roofline (97% of 215)")  # 55.7 / 57.33


@pytest.mark.parametrize("bytes_per_token, experts", [
    (0, [2, 8]), (-5, None), ("12", None), (True, None), (None, [9, 8]), (None, [2]), (None, "2 of 8"),
    (None, [0, 8]), (None, [2.0, 8]),
])
def test_bad_header_fields_are_ignored_and_the_file_size_used(bytes_per_token, experts):
    figures = parse_bench_result(stored_moe(int(3.56 * GIB), 55.7, bytes_per_token, experts))
    assert figures.bytes_per_token is None and figures.experts is None
    assert figures.percent_of_roofline(256) == pytest.approx(83.2, abs=0.1)
