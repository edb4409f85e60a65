"""The memory table (models at once vs the GTT budget) and the RPC split, with numbers worked out here by hand."""

from __future__ import annotations

import re

import pytest

from halofleet.models.budget import (
    OverBudget,
    check_memory,
    check_split,
    format_split,
    format_table,
    memory_table,
    split_across,
    split_json,
    table_rows,
)
from halofleet.models.kvcache import GIB, Need


def exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


def need(name: str, weights_gib: float, kv_gib: float, blocks: int = 0, ctx: int = 8192) -> Need:
    weights, kv = int(weights_gib * GIB), int(kv_gib * GIB)
    per_block = (weights + kv) // blocks if blocks else 0
    rest = weights + kv - per_block * blocks
    return Need(name=name, ctx=ctx, kv_type="f16", parallel=1, weights=weights, kv=kv, cells=ctx, swa_cells=0,
                layer_bytes=(per_block,) * blocks, output_bytes=rest, input_bytes=0)


def test_keep_loaded_models_and_the_largest_others_up_to_models_max_are_resident():
    models = [(need("a", 10, 1), True), (need("b", 40, 2), False), (need("c", 20, 1), False),
              (need("d", 30, 4), False)]
    table = memory_table(models, 120 * GIB, models_max=3)
    # a is kept loaded; 2 more slots: the largest others are b (42) and d (34), not c (21)
    assert [row.resident for row in table.rows] == [True, True, False, True]
    assert table.resident_total == (11 + 42 + 34) * GIB and table.fits
    assert [row.resident for row in memory_table(models, 120 * GIB, models_max=0).rows] == [True] * 4
    assert [row.resident for row in memory_table(models, 120 * GIB, models_max=1).rows] == [True, False, False,
                                                                                            False]
    # more keep_loaded models than models_max: all of them stay counted
    kept = [(need("x", 1, 0), True), (need("y", 2, 0), True), (need("z", 3, 0), False)]
    assert [row.resident for row in memory_table(kept, GIB * 10, models_max=1).rows] == [True, True, False]


def test_equal_sizes_keep_the_given_order():
    models = [(need("a", 5, 0), False), (need("b", 5, 0), False), (need("c", 5, 0), False)]
    assert [r.resident for r in memory_table(models, 100 * GIB, models_max=2).rows] == [True, True, False]


def test_over_budget_names_every_number():
    models = [(need("big.gguf", 100, 8), True), (need("small.gguf", 10, 3.5), False)]
    with pytest.raises(OverBudget) as error:
        check_memory(models, 120 * GIB, models_max=4)
    assert str(error.value) == (
        "models that may be loaded at once need 121.50 GiB, over the GTT budget of 120.00 GiB "
        "(big.gguf: 100.00 GiB weights + 8.00 GiB KV at ctx 8192 (f16) = 108.00 GiB; "
        "small.gguf: 10.00 GiB weights + 3.50 GiB KV at ctx 8192 (f16) = 13.50 GiB)")
    assert check_memory(models, 122 * GIB).fits
    exact = memory_table([(need("e", 1, 0), False)], GIB)
    assert exact.fits and exact.refusal() == ""


def test_models_max_must_not_be_negative():
    with pytest.raises(ValueError, match=exact("models_max -1 must be 0 (no limit) or more")):
        memory_table([], GIB, models_max=-1)


def test_table_text_and_rows():
    table = memory_table([(need("m.gguf", 4.5, 1), False), (need("n.gguf", 1, 0.25), False)], 56 * GIB, 1)
    lines = format_table(table)
    assert lines[1].split() == ["m.gguf", "4.50", "1.00", "8192", "5.50", "yes"]
    assert lines[2].split() == ["n.gguf", "1.00", "0.25", "8192", "1.25", "no"]
    assert lines[-1] == "  loaded at once (at most 1): 5.50 GiB of the 56.00 GiB GTT budget: fits"
    rows = table_rows(table, {"m.gguf": "--ctx"})
    assert rows[0]["weights_gib"] == 4.5 and rows[0]["kv_gib"] == 1.0 and rows[0]["total_gib"] == 5.5
    assert rows[0]["ctx_source"] == "--ctx" and rows[1]["ctx_source"] == "" and rows[1]["resident"] is False
    assert rows[0]["weights_bytes"] == int(4.5 * GIB) and rows[0]["kv_bytes"] == GIB


def test_default_split_follows_the_budgets_like_llama_cpp():
    # 32 blocks + the output layer = 33 layers; budgets 56 and 120 GiB: split point 56 / 176 = 0.318...
    # block il goes to the worker while il / 33 < 0.318, i.e. il <= 10 (10/33 = 0.303, 11/33 = 0.333)
    model = need("m", 31, 2, blocks=32)
    split = split_across(model, [("worker1", 56 * GIB), ("head", 120 * GIB)])
    assert split.source == "free memory"
    assert split.shares[0].layers == tuple(range(11))
    assert split.shares[1].layers == tuple(range(11, 33))
    per_block = (31 + 2) * GIB // 32
    assert split.shares[0].bytes == 11 * per_block
    assert split.shares[1].bytes == 21 * per_block + model.output_bytes
    assert split.ratios == pytest.approx((56 / 176, 120 / 176)) and split.fits


def test_tensor_split_overrides_the_budgets():
    model = need("m", 31, 2, blocks=32)
    # 1,3: split point 0.25; il / 33 < 0.25 for il <= 8
    split = split_across(model, [("worker1", 56 * GIB), ("head", 120 * GIB)], [1, 3])
    assert split.source == "--tensor-split" and split.shares[0].layers == tuple(range(9))
    # three devices 1,1,1: points 1/3, 2/3: il <= 10 (10/33 < 1/3), 11..21 (21/33 < 2/3), 22..32
    three = split_across(model, [("w1", GIB), ("w2", GIB), ("head", GIB)], [1, 1, 1])
    assert [len(s.layers) for s in three.shares] == [11, 11, 11]
    # 0 for a device: it gets nothing; all zero means the default
    assert split_across(model, [("w1", GIB), ("head", GIB)], [0, 1]).shares[0].layers == ()
    assert split_across(model, [("w1", GIB), ("head", 3 * GIB)], [0, 0]).source == "free memory"


def test_the_head_gets_the_token_embeddings():
    model = Need(name="m", ctx=256, kv_type="f16", parallel=1, weights=300, kv=0, cells=256, swa_cells=0,
                 layer_bytes=(100, 100), output_bytes=50, input_bytes=50)
    split = split_across(model, [("w", 1000), ("head", 1000)])
    # points 0.5, 1: blocks 0 (0/3) and 1 (1/3) on w, the output layer (2/3) and the embeddings on the head
    assert [s.bytes for s in split.shares] == [200, 100]


def test_split_refusals_name_the_numbers():
    model = need("glm.gguf", 180, 10, blocks=92)
    with pytest.raises(OverBudget) as error:
        check_split(model, [("worker1", 56 * GIB), ("head", 120 * GIB)])
    assert str(error.value).startswith("glm.gguf: 180.00 GiB weights + 10.00 GiB KV at ctx 8192 (f16) = 190.00 GiB "
                                       "needs more than the 176.00 GiB the group has: split by free memory: "
                                       "worker1 ")
    # enough in sum, but a lopsided --tensor-split overloads the worker
    fits_sum = need("m.gguf", 90, 10, blocks=32)
    # 100 GiB in 32 equal blocks of 3.125 GiB; 9,1 puts blocks 0..29 (il / 33 < 0.9) on the worker: 93.75 GiB
    with pytest.raises(OverBudget, match=exact(
            "m.gguf: 90.00 GiB weights + 10.00 GiB KV at ctx 8192 (f16) = 100.00 GiB worker1 over budget: split by "
            "--tensor-split: worker1 93.75 of 56.00 GiB, head 6.25 of 120.00 GiB")):
        check_split(fits_sum, [("worker1", 56 * GIB), ("head", 120 * GIB)], [9, 1])
    assert check_split(fits_sum, [("worker1", 56 * GIB), ("head", 120 * GIB)]).fits


@pytest.mark.parametrize("ratios, message", [([1], "--tensor-split has 1 values for 2 devices"),
                                            ([1, -1], "--tensor-split values must not be negative")])
def test_bad_tensor_split(ratios, message):
    with pytest.raises(ValueError, match=exact(message)):
        split_across(need("m", 1, 0, blocks=2), [("w", GIB), ("head", GIB)], ratios)


def test_split_needs_boxes_with_memory():
    with pytest.raises(ValueError, match=exact("an RPC split needs at least one box")):
        split_across(need("m", 1, 0, blocks=2), [])
    with pytest.raises(ValueError, match=exact("the boxes have no memory to split over")):
        split_across(need("m", 1, 0, blocks=2), [("w", 0), ("head", 0)])


def test_split_text_and_json():
    split = split_across(need("m.gguf", 31, 2, blocks=32), [("worker1", 56 * GIB), ("head", 120 * GIB)])
    lines = format_split(split)
    assert lines[1].split()[:4] == ["worker1", "31.8%", "11", "layers"]
    assert lines[2].split()[:4] == ["head", "68.2%", "22", "layers"]
    assert lines[-1] == "  group: 33.00 of 176.00 GiB: fits"
    data = split_json(split)
    assert data["boxes"][0]["layers"] == 11 and data["boxes"][1]["budget_gib"] == 120.0 and data["fits"]
    assert data["need_gib"] == 33.0 and data["budget_gib"] == 176.0 and data["source"] == "free memory"


def test_three_boxes_the_head_is_last_and_holds_the_embeddings():
    model = Need(name="m", ctx=256, kv_type="f16", parallel=1, weights=1000, kv=0, cells=256, swa_cells=0,
                 layer_bytes=(100, 100, 100, 100, 100), output_bytes=200, input_bytes=300)
    split = split_across(model, [("w1", 10), ("w2", 10), ("head", 10)])
    # 6 layers, points 1/3, 2/3, 1: il / 6 -> 0, 1 on w1; 2, 3 on w2; 4 and the output (5) on the head
    assert [s.layers for s in split.shares] == [(0, 1), (2, 3), (4, 5)]
    assert [s.bytes for s in split.shares] == [200, 200, 100 + 200 + 300]
    assert [s.budget for s in split.shares] == [10, 10, 10] and not split.fits


def test_rows_and_split_as_json_exactly():
    table = memory_table([(need("m.gguf", 4.5, 1), True)], 56 * GIB, 1)
    assert table_rows(table, {"m.gguf": "--ctx"}) == [{
        "model": "m.gguf", "architecture": "", "ctx": 8192, "ctx_source": "--ctx", "kv_type": "f16",
        "weights_gib": 4.5, "kv_gib": 1.0, "total_gib": 5.5, "weights_bytes": int(4.5 * GIB), "kv_bytes": GIB,
        "keep_loaded": True, "resident": True, "notes": []}]
    assert table.rows[0].keep_loaded is True and table.models_max == 1 and table.budget == 56 * GIB
    split = split_across(need("m.gguf", 31, 2, blocks=32), [("worker1", 56 * GIB), ("head", 120 * GIB)], [1, 1])
    per_block = 33 * GIB // 32
    assert split_json(split) == {
        "model": "m.gguf", "source": "--tensor-split", "need_gib": 33.0, "budget_gib": 176.0, "fits": True,
        "boxes": [{"box": "worker1", "ratio": 0.5, "layers": 17, "gib": round(17 * per_block / GIB, 2),
                   "budget_gib": 56.0, "bytes": 17 * per_block, "fits": True},
                  {"box": "head", "ratio": 0.5, "layers": 16, "gib": round((15 * per_block + split.need.output_bytes)
                                                                             / GIB, 2),
                   "budget_gib": 120.0, "bytes": 15 * per_block + split.need.output_bytes, "fits": True}]}


def test_table_and_split_text_exactly():
    table = memory_table([(need("m.gguf", 4.5, 1), False), (need("n", 1, 0.25), False)], 56 * GIB, 0)
    assert format_table(table) == [
        "  model   weights GiB    KV GiB      ctx  total GiB  at once",
        "  m.gguf         4.50      1.00     8192       5.50  yes",
        "  n              1.00      0.25     8192       1.25  yes",
        "  loaded at once (no limit): 6.75 GiB of the 56.00 GiB GTT budget: fits"]
    noted = Need(name="g", ctx=256, kv_type="f16", parallel=1, weights=0, kv=GIB, cells=256, swa_cells=0,
                 notes=("a note",))
    over = memory_table([(noted, True)], GIB // 2, 4)
    assert format_table(over)[1:] == ["  g             0.00      1.00      256       1.00  yes",
                                      "         note: a note",
                                      "  loaded at once (at most 4): 1.00 GiB of the 0.50 GiB GTT budget: OVER BUDGET"]
    split = split_across(need("m.gguf", 31, 2, blocks=32), [("worker1", 8 * GIB), ("head", 120 * GIB)], [1, 1])
    assert format_split(split) == [
        "  split of m.gguf (33.00 GiB) by --tensor-split, in llama.cpp's device order (--rpc workers, then the head):",
        "  worker1   50.0%   17 layers     17.53 of 8.00 GiB  OVER",
        "  head      50.0%   16 layers     15.47 of 120.00 GiB  ok",
        "  group: 33.00 of 128.00 GiB: OVER BUDGET"]


def test_json_keeps_two_decimals():
    odd = need("odd.gguf", 4.123456, 1.987654, blocks=3)
    row = table_rows(memory_table([(odd, False)], 7 * GIB, 4))[0]
    assert (row["weights_gib"], row["kv_gib"], row["total_gib"]) == (4.12, 1.99, 6.11)
    split = split_across(odd, [("w", int(3.3333 * GIB)), ("head", int(5.55555 * GIB))])
    data = split_json(split)
    assert (data["need_gib"], data["budget_gib"]) == (6.11, 8.89)
    assert [(b["ratio"], b["budget_gib"]) for b in data["boxes"]] == [(0.375, 3.33), (0.625, 5.56)]
    assert [b["gib"] for b in data["boxes"]] == [round(b["bytes"] / GIB, 2) for b in data["boxes"]]


def test_check_memory_defaults_to_four_models_at_once():
    models = [(need(f"m{i}", 10, 0), False) for i in range(5)]
    assert check_memory(models, 40 * GIB).resident_total == 40 * GIB


def test_ratios_keep_four_decimals():
    split = split_across(need("m", 3, 0, blocks=3), [("w1", GIB), ("w2", GIB), ("head", GIB)])
    assert [box["ratio"] for box in split_json(split)["boxes"]] == [0.3333, 0.3333, 0.3333]
