"""
KV-cache and weight sizes from real architectures' headers, against numbers worked out here by hand from the
published configs (tests/unit/ggufheaders.py cites each value) and llama.cpp's sizing rules (halofleet/kvcache.py
docstring), never from the code under test.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from halofleet.facts.model_header import need_on_host
from halofleet.models import archrules, kvcache
from halofleet.models.gguf import GGUFHeader, TensorInfo, read_header
from halofleet.models.kvcache import KVError, need_of_file, need_of_header

from . import ggufheaders as gh

pytest.importorskip("gguf")

MIB = 1 << 20


def exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


@pytest.fixture(scope="module")
def llama_path(tmp_path_factory):
    return str(gh.llama8b(tmp_path_factory.mktemp("llama") / "llama8b.gguf"))


@pytest.fixture(scope="module")
def headers(tmp_path_factory):
    root = tmp_path_factory.mktemp("headers")
    return {name: read_header((write(root / f"{name}.gguf")).read_bytes()) for name, write in (
        ("llama8b", gh.llama8b), ("gpt-oss-20b", gh.gpt_oss_20b), ("qwen3-30b-a3b", gh.qwen3_30b_a3b),
        ("mamba2", gh.mamba2_27b), ("llama8b-q8", lambda p: gh.llama8b(p, gh.Q8_0)))}


# Llama-3.1-8B by hand: 32 layers x 8 KV heads x head dim 128 (4096 / 32), K and V, 2 bytes (f16) per value.
LLAMA_KV_PER_CELL = 32 * 8 * 128 * 2 * 2  # 131072 bytes
# its parameters: embeddings and output 128256 x 4096 each; per layer q, o 4096 x 4096, k, v 1024 x 4096,
# gate, up, down 3 x 14336 x 4096, two norms of 4096; the final norm 4096
LLAMA_MATRIX = 2 * 128256 * 4096 + 32 * (2 * 4096 * 4096 + 2 * 1024 * 4096 + 3 * 14336 * 4096)
LLAMA_NORMS = 32 * 2 * 4096 + 4096


def test_llama_8b_kv_at_8192_is_one_gib(headers):
    need = need_of_header(headers["llama8b"], 8192)
    assert need.kv == 8192 * LLAMA_KV_PER_CELL == 1 << 30
    assert need.cells == 8192 and need.swa_cells == 0
    # the published total: 8,030,261,248 parameters
    assert LLAMA_MATRIX + LLAMA_NORMS == 8_030_261_248
    assert need.weights == LLAMA_MATRIX * 2 + LLAMA_NORMS * 4
    assert need.total == need.weights + need.kv


def test_llama_8b_q8_0_kv_and_weights(headers):
    need = need_of_header(headers["llama8b-q8"], 8192, "q8_0")
    # a row of 8 x 128 = 1024 values is 32 blocks of 34 bytes (q8_0: 32 values + a 2-byte scale)
    assert need.kv == 32 * 2 * (1024 // 32 * 34) * 8192 == 570_425_344
    assert need.weights == LLAMA_MATRIX // 32 * 34 + LLAMA_NORMS * 4


def test_llama_context_is_padded_to_256_and_split_among_slots(headers):
    header = headers["llama8b"]
    # -c 1000: 1024 cells (llama_context pads n_ctx to 256)
    assert need_of_header(header, 1000).kv == 1024 * LLAMA_KV_PER_CELL
    # -c 10000 -np 3: n_ctx 10240, per slot 10240 // 3 = 3413 -> 3584 cells, three streams
    three = need_of_header(header, 10000, parallel=3)
    assert three.cells == 3 * 3584 and three.kv == 3 * 3584 * LLAMA_KV_PER_CELL
    # --kv-unified: one stream of the padded n_ctx
    assert need_of_header(header, 10000, parallel=3, unified=True).kv == 10240 * LLAMA_KV_PER_CELL


def test_gpt_oss_20b_sliding_window_layers_are_sized_to_the_window(headers):
    need = need_of_header(headers["gpt-oss-20b"], 8192)
    full = 12 * 8 * 64 * 2 * 2 * 8192  # 12 full-attention layers, 8 KV heads x 64, K+V, f16
    # 12 sliding layers: min(8192, window 128 + ubatch 512) = 640 cells, padded to 768
    swa = 12 * 8 * 64 * 2 * 2 * 768
    assert need.kv == full + swa == 192 * MIB + 18 * MIB
    assert need.cells == 8192 and need.swa_cells == 768
    assert need.notes == ("12 of 24 layers use a sliding window of 128",)
    # -np 2 (streams): each slot gets its own 4096-cell full and 768-cell window cache
    two = need_of_header(headers["gpt-oss-20b"], 8192, parallel=2)
    assert two.kv == 12 * (8 * 64) * 2 * 2 * (4096 + 768) * 2  # x 2 streams
    # --swa-full: the window layers get the whole context too
    assert need_of_header(headers["gpt-oss-20b"], 8192, swa_full=True).kv == 2 * full


def test_gpt_oss_window_cache_with_a_small_context_is_the_context(headers):
    need = need_of_header(headers["gpt-oss-20b"], 256, ubatch=512)
    # min(256 cells, 128 + 512) -> 256: the window cache is never larger than the full one
    assert need.swa_cells == 256 and need.kv == 24 * 512 * 2 * 2 * 256


def test_qwen3_30b_a3b_uses_the_header_head_dim(headers):
    need = need_of_header(headers["qwen3-30b-a3b"], 32768)
    # 48 layers x 4 KV heads x 128 (key_length, not 2048 / 32 = 64), K+V, f16
    assert need.kv == 48 * 4 * 128 * 2 * 2 * 32768 == 3 << 30


def test_mamba2_state_is_per_slot_and_not_per_token(headers):
    one = need_of_header(headers["mamba2"], 4096)
    # per layer: conv state (4 - 1) x (5120 + 2 x 1 x 128) + ssm state 128 x 5120 floats, 4 bytes each
    per_layer = ((4 - 1) * (5120 + 2 * 1 * 128) + 128 * 5120) * 4
    assert one.kv == 64 * per_layer == 171_900_928
    assert need_of_header(headers["mamba2"], 65536).kv == one.kv
    assert need_of_header(headers["mamba2"], 4096, parallel=4).kv == 4 * one.kv
    assert one.cells == 0 and one.notes == ("64 recurrent layers",)


def test_need_of_file_reads_the_file_and_names_it(llama_path):
    need = need_of_file(llama_path, 4096, "f16")
    assert need.name == "llama8b.gguf" and need.architecture == "llama" and need.ctx == 4096
    assert need.kv == 4096 * LLAMA_KV_PER_CELL


def test_layer_bytes_place_weights_and_kv_per_block(headers):
    need = need_of_header(headers["llama8b"], 8192)
    block = (2 * 4096 * 4096 + 2 * 1024 * 4096 + 3 * 14336 * 4096) * 2 + 2 * 4096 * 4
    assert need.layer_bytes == (block + 8192 * LLAMA_KV_PER_CELL // 32,) * 32
    assert need.output_bytes == 128256 * 4096 * 2 + 4096 * 4
    assert need.input_bytes == 128256 * 4096 * 2
    assert sum(need.layer_bytes) + need.output_bytes + need.input_bytes == need.total


def test_a_kv_type_that_does_not_divide_the_head_is_refused(headers, tmp_path):
    from halofleet.testing.tinymodel import write_tiny_llama

    tiny = read_header(write_tiny_llama(tmp_path / "tiny.gguf").read_bytes())  # head dim 64 / 4 = 16
    with pytest.raises(KVError, match=exact("KV type q8_0 (blocks of 32) does not divide a row of 16")):
        need_of_header(tiny, 512, "q8_0")
    assert need_of_header(tiny, 512, "f16").kv == 2 * 4 * 16 * 2 * 2 * 512


@pytest.mark.parametrize("kv_type, row_bytes", [("f32", 4096), ("f16", 2048), ("bf16", 2048), ("q8_0", 1088),
                                                ("q4_0", 576), ("q4_1", 640), ("q5_0", 704), ("q5_1", 768),
                                                ("iq4_nl", 576)])
def test_kv_row_bytes_of_every_llama_server_kv_type(kv_type, row_bytes):
    # 1024 values: 32 blocks of (q4_0 18, q4_1 20, q5_0 22, q5_1 24, q8_0 34, iq4_nl 18) bytes; f16 2 each
    assert kvcache.kv_row_bytes(kv_type, 1024) == row_bytes


def test_unknown_kv_type_and_bad_context_are_refused(headers):
    with pytest.raises(KVError, match=exact("KV type 'q3_k' is not one of f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1")):
        kvcache.kv_row_bytes("q3_k", 1024)
    with pytest.raises(KVError, match=exact("ctx 0 and parallel 1 must be positive")):
        kvcache.cache_cells(0)
    with pytest.raises(KVError, match=exact("ctx 512 and parallel 0 must be positive")):
        kvcache.cache_cells(512, 0)


def test_cache_cells():
    assert kvcache.cache_cells(1) == (256, 1)
    assert kvcache.cache_cells(256) == (256, 1)
    assert kvcache.cache_cells(257) == (512, 1)
    assert kvcache.cache_cells(1000, 3) == (512, 3)  # measured: forky llama-server -c 1000 -np 3: 512 cells x 3
    assert kvcache.cache_cells(1000, 3, unified=True) == (1024, 1)
    assert kvcache.cache_cells(8192, 4) == (2048, 4)


@pytest.mark.parametrize("metadata, message", [
    ({}, "the header has no general.architecture"),
    ({"general.architecture": "llama"}, "llama.block_count and llama.embedding_length are needed"),
    ({"general.architecture": "llama", "llama.block_count": 513, "llama.embedding_length": 64},
     "llama.block_count 513 is more than llama.cpp's 512 layers"),
    ({"general.architecture": "llama", "llama.block_count": 1 << 40, "llama.embedding_length": 64},
     f"llama.block_count {1 << 40} is more than llama.cpp's 512 layers"),
    ({"general.architecture": "llama", "llama.block_count": 2, "llama.embedding_length": 64,
      "llama.attention.head_count": [4, 4, 4]},
     "llama.attention.head_count has 3 entries for 2 layers, or one that is not a count"),
    ({"general.architecture": "llama", "llama.block_count": 2, "llama.embedding_length": 64,
      "llama.attention.head_count": [True, 4]},
     "llama.attention.head_count has 2 entries for 2 layers, or one that is not a count"),
    ({"general.architecture": "llama", "llama.block_count": 2, "llama.embedding_length": 64,
      "llama.attention.head_count": [-1, 4]},
     "llama.attention.head_count has 2 entries for 2 layers, or one that is not a count"),
    ({"general.architecture": "llama", "llama.block_count": 2, "llama.embedding_length": 64,
      "llama.attention.head_count": -4}, "llama.attention.head_count is -4, not a non-negative integer"),
    ({"general.architecture": "llama", "llama.block_count": 2, "llama.embedding_length": 64,
      "llama.attention.head_count": 4, "split.count": 3}, "split GGUF of 3 files: 1 headers given"),
    ({"general.architecture": "gpt-oss", "gpt-oss.block_count": 2, "gpt-oss.embedding_length": 64,
      "gpt-oss.attention.head_count": 4}, "gpt-oss.attention.sliding_window is missing"),
])
def test_headers_that_cannot_be_sized_are_refused(metadata, message):

    with pytest.raises(KVError, match=exact(message)):
        need_of_header(GGUFHeader(3, metadata, (), 0), 512)


def test_per_layer_kv_heads_array(headers):

    meta = {"general.architecture": "deci", "deci.block_count": 3, "deci.embedding_length": 64,
            "deci.attention.head_count": 4, "deci.attention.head_count_kv": [4, 2, 0]}
    # layer widths 4 x 16, 2 x 16, 0 (no KV values) -> (64 + 32 + 0) x (K, V) x 2 bytes x 256 cells
    assert need_of_header(GGUFHeader(3, meta, (), 0), 256).kv == (64 + 32) * 2 * 2 * 256


def test_variable_v_width_is_padded_without_flash_attention():

    meta = {"general.architecture": "deci", "deci.block_count": 2, "deci.embedding_length": 64,
            "deci.attention.head_count": 4, "deci.attention.head_count_kv": [4, 2]}
    with_fa = need_of_header(GGUFHeader(3, meta, (), 0), 256)
    without = need_of_header(GGUFHeader(3, meta, (), 0), 256, flash_attn=False)
    assert with_fa.kv == (64 + 64 + 32 + 32) * 2 * 256
    assert without.kv == (64 + 64 + 32 + 64) * 2 * 256  # V of layer 1 padded to 64


def test_kv_heads_that_differ_between_layers_are_refused_where_llama_cpp_refuses_them():
    # the oracle: a llama file with head_count_kv [1, 2] (and K/V tensors to match) does not load
    meta = {"general.architecture": "llama", "llama.block_count": 2, "llama.embedding_length": 64,
            "llama.attention.head_count": 2, "llama.attention.head_count_kv": [1, 2]}
    with pytest.raises(KVError, match=exact("llama.attention.head_count_kv differs between layers ([1, 2]): "
                                            "llama.cpp loads llama with layer 0's count in every layer and "
                                            "refuses the file")):
        need_of_header(GGUFHeader(3, meta, (), 0), 256)
    meta["llama.attention.head_count_kv"] = [1, 1]
    assert need_of_header(GGUFHeader(3, meta, (), 0), 256).kv == 2 * 32 * 2 * 2 * 256


def test_an_architecture_without_rules_is_refused_by_name():
    meta = {"general.architecture": "kimi-linear", "kimi-linear.block_count": 2,
            "kimi-linear.embedding_length": 64, "kimi-linear.attention.head_count": 2}
    with pytest.raises(KVError, match=exact("not sized: kimi-linear (an architecture halofleet has no memory "
                                            "rules for)")):
        need_of_header(GGUFHeader(3, meta, (), 0), 256)


def test_glm4moe_nextn_layers_hold_no_kv():

    meta = {"general.architecture": "glm4moe", "glm4moe.block_count": 4, "glm4moe.embedding_length": 64,
            "glm4moe.attention.head_count": 4, "glm4moe.nextn_predict_layers": 1}
    assert need_of_header(GGUFHeader(3, meta, (), 0), 256).kv == 3 * 64 * 2 * 2 * 256


def test_shard_paths():
    assert kvcache.shard_paths("/m/x-00002-of-00003.gguf") == [
        "/m/x-00001-of-00003.gguf", "/m/x-00002-of-00003.gguf", "/m/x-00003-of-00003.gguf"]
    assert kvcache.shard_paths("/m/x.gguf") == ["/m/x.gguf"]


def test_unreadable_and_non_gguf_files_are_refused(tmp_path):
    with pytest.raises(KVError, match=exact(f"{tmp_path}/missing.gguf: model file not readable")):
        need_of_file(str(tmp_path / "missing.gguf"), 512)
    (tmp_path / "junk.gguf").write_bytes(b"not a model at all")
    with pytest.raises(KVError, match=exact(f"{tmp_path}/junk.gguf: not a GGUF file (magic b'not ')")):
        need_of_file(str(tmp_path / "junk.gguf"), 512)


def test_head_dims_come_from_layer_0s_head_count():

    # llama_model::load_hparams: n_embd_head_k = embedding_length / n_head(0), and 0 when layer 0 has no heads
    meta = {"general.architecture": "deci", "deci.block_count": 2, "deci.embedding_length": 64,
            "deci.attention.head_count": [4, 2]}
    assert need_of_header(GGUFHeader(3, meta, (), 0), 256).kv == (4 * 16 + 2 * 16) * 2 * 2 * 256
    meta["deci.attention.head_count"] = [0, 4]
    meta["deci.attention.key_length"] = 16
    assert need_of_header(GGUFHeader(3, meta, (), 0), 256).kv == 0


def test_damaged_headers_are_refused_never_crash(tmp_path):
    import random

    from halofleet.testing.tinymodel import write_tiny_llama

    good = write_tiny_llama(tmp_path / "tiny.gguf").read_bytes()
    header_end = 16384  # damage only the header (metadata and tensor infos) part
    rng = random.Random(1151)
    outcomes = set()
    for attempt in range(120):
        data = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(header_end)] = rng.randrange(256)
        path = tmp_path / f"bad{attempt % 3}.gguf"
        path.write_bytes(bytes(data))
        try:
            need_of_file(str(path), 512, "f16")
            outcomes.add("sized")
        except KVError:
            outcomes.add("refused")
    assert outcomes == {"sized", "refused"}


def test_tensor_rows_that_do_not_fill_blocks_are_refused():

    meta = {"general.architecture": "llama", "llama.block_count": 1, "llama.embedding_length": 64,
            "llama.attention.head_count": 4}
    broken = GGUFHeader(3, meta, (TensorInfo("blk.0.attn_q.weight", (40, 64), 8, 0),), 0)  # q8_0 row of 40
    with pytest.raises(KVError, match=exact(
            "tensor 'blk.0.attn_q.weight': row of 40 is not a multiple of the Q8_0 block of 32")):
        need_of_header(broken, 256)
    unknown = GGUFHeader(3, meta, (TensorInfo("blk.0.attn_q.weight", (64, 64), 99, 0),), 0)
    with pytest.raises(KVError, match=exact("tensor blk.0.attn_q.weight has ggml type 99, unknown here")):
        need_of_header(unknown, 256)


def small(arch: str, layers: int, **keys) -> GGUFHeader:
    """A header of ``layers`` layers, 64 wide, 4 heads of 16 (so 4 x 16 x (K, V) x 2 bytes = 256 bytes per cell
    and layer in f16); ``keys`` without the arch prefix, dots as underscores."""

    meta = {"general.architecture": arch, f"{arch}.block_count": layers, f"{arch}.embedding_length": 64,
            f"{arch}.attention.head_count": 4}
    meta.update({f"{arch}.{key.replace('__', '.')}": value for key, value in keys.items()})
    return GGUFHeader(3, meta, (), 0)


CELL = 4 * 16 * 2 * 2  # bytes per cell and layer of small()


# Patterns and windows from llama_model::load_hparams (llama.cpp src/llama-model.cpp): for each case the layers
# that use the window, and the window cache's cells: pad256(min(ctx, window + ubatch 512)).
@pytest.mark.parametrize("arch, layers, keys, ctx, expected", [
    # gemma2: every other layer (pattern 2), window 4096 unless the header says
    ("gemma2", 4, {}, 4096, 4 * 4096 * CELL),
    ("gemma2", 4, {"attention__sliding_window": 64}, 4096, (2 * 4096 + 2 * 768) * CELL),
    # gemma3: 5 of 6 layers when the header has a window > 0, else none
    ("gemma3", 6, {"attention__sliding_window": 1024}, 4096, (1 * 4096 + 5 * 1536) * CELL),
    ("gemma3", 6, {}, 4096, 6 * 4096 * CELL),
    # gemma3n: only the first 20 layers hold KV, 4 of every 5 windowed: 16 window + 4 full
    ("gemma3n", 25, {"attention__sliding_window": 512}, 4096, (4 * 4096 + 16 * 1024) * CELL),
    # cohere2: 3 of 4, the window from the header (1000 + 512 -> 1536)
    ("cohere2", 4, {"attention__sliding_window": 1000}, 4096, (4096 + 3 * 1536) * CELL),
    # olmo2 and afmoe: 3 of 4 when the window is > 0
    ("olmo2", 4, {"attention__sliding_window": 100}, 4096, (4096 + 3 * 768) * CELL),
    ("olmo2", 4, {"attention__sliding_window": 0}, 4096, 4 * 4096 * CELL),
    ("afmoe", 4, {"attention__sliding_window": 100}, 4096, (4096 + 3 * 768) * CELL),
    ("afmoe", 4, {}, 4096, 4 * 4096 * CELL),
    # smallthinker: dense first (layers 1, 2, 3 windowed), the window forced to 4096 when the header has one
    ("smallthinker", 4, {"attention__sliding_window": 100}, 8192, (8192 + 3 * 4608) * CELL),
    ("smallthinker", 4, {}, 8192, 4 * 8192 * CELL),
    # llama4: chunks of 8192 on 3 of 4 layers, unless sliding_window is 0
    ("llama4", 4, {}, 16384, (16384 + 3 * 8704) * CELL),
    ("llama4", 6, {}, 16384, (16384 + 5 * 8704) * CELL),  # layers 0-2 and 4-5 chunked, layer 3 full
    ("llama4", 4, {"attention__sliding_window": 0}, 16384, 4 * 16384 * CELL),
    # exaone4: only the 64-layer model, window 4096 (the header's if given): 48 windowed, 16 full
    ("exaone4", 64, {}, 8192, (16 * 8192 + 48 * 4608) * CELL),
    ("exaone4", 64, {"attention__sliding_window": 100}, 8192, (16 * 8192 + 48 * 768) * CELL),
    ("exaone4", 32, {"attention__sliding_window": 100}, 8192, 32 * 8192 * CELL),
    # an architecture llama.cpp gives no window: full attention whatever the header says
    ("llama", 2, {"attention__sliding_window": 100}, 4096, 2 * 4096 * CELL),
])
def test_sliding_window_architectures(arch, layers, keys, ctx, expected):
    assert need_of_header(small(arch, layers, **keys), ctx).kv == expected


def test_unknown_window_architecture_is_noted():
    need = need_of_header(small("llama", 2, attention__sliding_window=100), 4096)
    assert need.notes == ("sliding_window in the header, but llama is sized as full attention here [U]",)
    assert need.swa_cells == 0
    windowed = need_of_header(small("gemma2", 4, attention__sliding_window=64), 4096)
    assert windowed.swa_cells == 768 and windowed.notes == ("2 of 4 layers use a sliding window of 64",)


def test_cohere2_needs_its_window():
    with pytest.raises(KVError, match=exact("cohere2.attention.sliding_window is missing")):
        need_of_header(small("cohere2", 4), 4096)


SSM = {"ssm__conv_kernel": 4, "ssm__inner_size": 64, "ssm__state_size": 16, "ssm__group_count": 1}
# a recurrent layer of SSM: conv (4 - 1) x (64 + 2 x 1 x 16) + state 16 x 64 floats, 4 bytes each
SSM_LAYER = ((4 - 1) * (64 + 2 * 1 * 16) + 16 * 64) * 4


@pytest.mark.parametrize("arch, layers, keys, ctx, parallel, expected", [
    # RWKV: token shift 2 (default) x 64 + 64 x head size 16 floats per layer and slot
    ("rwkv6", 2, {"attention__head_count": 0, "wkv__head_size": 16}, 256, 1, 2 * (2 * 64 + 64 * 16) * 4),
    ("rwkv7", 2, {"attention__head_count": 0, "wkv__head_size": 16, "token_shift_count": 1}, 256, 3,
     3 * 2 * (1 * 64 + 64 * 16) * 4),
    # LFM2: layer 0 (no KV heads) is a short convolution of l_cache 3: 64 x (3 - 1) floats; layer 1 attention
    ("lfm2", 2, {"attention__head_count_kv": [0, 4], "shortconv__l_cache": 3}, 256, 1, 64 * 2 * 4 + 256 * CELL),
    # hybrids size their attention cache as any other: -np 2 -> 2 streams of pad(256 / 2) = 256 cells
    ("lfm2", 2, {"attention__head_count_kv": [0, 4], "shortconv__l_cache": 3}, 256, 2,
     2 * 64 * 2 * 4 + 2 * 256 * CELL),
    # Nemotron-H: SSM layers have no KV heads and no FFN, attention layers no FFN, MLP layers neither
    ("nemotron_h", 3, {"attention__head_count_kv": [0, 4, 0], "feed_forward_length": [0, 0, 128], **SSM}, 256, 1,
     SSM_LAYER + 256 * CELL),
    # Qwen3-Next: every 4th layer attention, the others recurrent
    ("qwen3next", 4, SSM, 256, 1, 3 * SSM_LAYER + 256 * CELL),
    # Falcon-H1: every layer both
    ("falcon-h1", 2, SSM, 256, 1, 2 * (SSM_LAYER + 256 * CELL)),
    # Jamba and Granite hybrids: recurrent where head_count_kv is 0
    ("jamba", 2, {"attention__head_count_kv": [0, 4], **SSM}, 256, 1, SSM_LAYER + 256 * CELL),
    ("granitehybrid", 2, {"attention__head_count_kv": [4, 0], **SSM}, 256, 1, SSM_LAYER + 256 * CELL),
    # MTP layers of bailingmoe2 hold no KV either
    ("bailingmoe2", 3, {"nextn_predict_layers": 1}, 256, 1, 2 * 256 * CELL),
])
def test_recurrent_and_hybrid_architectures(arch, layers, keys, ctx, parallel, expected):
    assert need_of_header(small(arch, layers, **keys), ctx, parallel=parallel).kv == expected


@pytest.mark.parametrize("arch, layers, keys, parallel, unified, per_layer", [
    # which layer holds what: the state where llama.cpp keeps it, the KV where it keeps that
    ("jamba", 2, {"attention__head_count_kv": [0, 4], **SSM}, 1, False, (SSM_LAYER, 256 * CELL)),
    ("nemotron_h", 3, {"attention__head_count_kv": [4, 0, 0], "feed_forward_length": [0, 128, 0], **SSM}, 1, False,
     (256 * CELL, 0, SSM_LAYER)),
    ("nemotron_h_moe", 2, {"attention__head_count_kv": [0, 4], **SSM}, 1, False, (SSM_LAYER, 256 * CELL)),
    ("qwen3next", 8, SSM, 1, False, (SSM_LAYER,) * 3 + (256 * CELL,) + (SSM_LAYER,) * 3 + (256 * CELL,)),
    # --kv-unified: one stream of n_ctx cells, the states per slot
    ("lfm2", 2, {"attention__head_count_kv": [0, 4], "shortconv__l_cache": 3}, 2, True, (2 * 64 * 2 * 4, 256 * CELL)),
    # Mamba (v1, no groups) with and without a conv kernel: (4 - 1) x 64 + 16 x 64, or only the 16 x 64 state
    ("mamba", 1, {"attention__head_count": 0, "ssm__conv_kernel": 4, "ssm__inner_size": 64, "ssm__state_size": 16},
     1, False, (((4 - 1) * 64 + 16 * 64) * 4,)),
    ("mamba", 1, {"ssm__inner_size": 64, "ssm__state_size": 16}, 1, False, (16 * 64 * 4,)),
    # RWKV without head_count (optional there)
    ("rwkv6", 1, {"wkv__head_size": 16}, 1, False, ((2 * 64 + 64 * 16) * 4,)),
    # glm4moe without nextn layers: every layer has KV
    ("glm4moe", 2, {}, 1, False, (256 * CELL, 256 * CELL)),
])
def test_recurrent_and_hybrid_layers(arch, layers, keys, parallel, unified, per_layer):
    meta = small(arch, layers, **keys).metadata
    if arch in ("mamba", "rwkv6") and "attention__head_count" not in keys:
        del meta[f"{arch}.attention.head_count"]

    need = need_of_header(GGUFHeader(3, meta, (), 0), 256, parallel=parallel, unified=unified)
    assert need.layer_bytes == per_layer and need.kv == sum(per_layer)


class FileHost:
    """A pyinfra host stand-in: ModelBytes facts answered from local files, each call recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def get_fact(self, fact, path, offset, length):
        from halofleet.facts.model_header import ModelBytes

        assert fact is ModelBytes
        self.calls.append((path, offset, length))
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                return handle.read(length)
        except OSError:
            return None


def test_need_on_host_reads_the_header_through_facts(llama_path):
    host = FileHost()
    need = need_on_host(host, llama_path, 8192, "f16", parallel=2, name="on-host")
    assert host.calls[0] == (llama_path, 0, 4 << 20)  # the gguf reader's first slice
    assert need.name == "on-host" and need.kv == 8192 * LLAMA_KV_PER_CELL and need.parallel == 2
    assert need == need_of_file(llama_path, 8192, "f16", parallel=2, name="on-host")
    with pytest.raises(KVError, match=exact("/nonexistent.gguf: model file not readable")):
        need_on_host(FileHost(), "/nonexistent.gguf", 512)


def test_split_gguf_weights_add_up_over_every_shard(tmp_path):
    meta = {".context_length": 512, ".embedding_length": 64, ".block_count": 2, ".attention.head_count": 4,
            "split.count": 2}
    gh.write_header(tmp_path / "m-00001-of-00002.gguf", "llama", meta,
                    [("token_embd.weight", (100, 64), gh.F16), ("blk.0.attn_q.weight", (64, 64), gh.F16)])
    gh.write_header(tmp_path / "m-00002-of-00002.gguf", "llama", {"split.count": 2},
                    [("blk.1.attn_q.weight", (64, 64), gh.Q8_0), ("output.weight", (100, 64), gh.F32)])
    need = need_of_file(str(tmp_path / "m-00001-of-00002.gguf"), 512)
    assert need.name == "m-00001-of-00002.gguf"
    assert need.weights == 100 * 64 * 2 + 64 * 64 * 2 + 64 * 64 // 32 * 34 + 100 * 64 * 4
    assert need.layer_bytes == (64 * 64 * 2 + 2 * 64 * 2 * 512, 64 * 64 // 32 * 34 + 2 * 64 * 2 * 512)
    assert need.output_bytes == 100 * 64 * 4 and need.input_bytes == 100 * 64 * 2
    (tmp_path / "m-00002-of-00002.gguf").unlink()
    with pytest.raises(KVError, match=exact(f"{tmp_path}/m-00001-of-00002.gguf: model file not readable")):
        need_of_file(str(tmp_path / "m-00001-of-00002.gguf"), 512)


def test_need_fields_and_gib():
    need = need_of_header(small("gemma2", 4, attention__sliding_window=64), 1000, "f16", parallel=1, name="g")
    assert (need.name, need.ctx, need.kv_type, need.parallel, need.architecture) == ("g", 1000, "f16", 1, "gemma2")
    assert need.weights == 0 and need.total == need.kv and need.cells == 1024 and need.swa_cells == 768
    assert kvcache.gib(3 << 30) == 3.0 and kvcache.pad(1) == 256 and kvcache.pad(512, 32) == 512
    assert kvcache.pad(513, 32) == 544


def test_sizes_are_whole_bytes(headers):
    for need in (need_of_header(headers["gpt-oss-20b"], 10000, parallel=3),
                 need_of_header(headers["gpt-oss-20b"], 10000, parallel=3, unified=True),
                 need_of_header(headers["llama8b"], 1000, "q8_0", parallel=3)):
        assert all(type(value) is int for value in (need.kv, need.weights, need.cells, need.swa_cells,
                                                    *need.layer_bytes))
    assert all(type(value) is int for value in kvcache.cache_cells(1000, 3))
    assert type(kvcache.kv_row_bytes("q8_0", 1024)) is int


def test_window_cache_with_unified_slots_and_a_small_batch(headers):
    # --kv-unified -np 3: window 128 x 3 slots + ubatch 512 = 896 -> 1024 cells
    assert need_of_header(headers["gpt-oss-20b"], 8192, parallel=3, unified=True).swa_cells == 1024
    # -b 256: the ubatch is at most the batch: 128 + 256 = 384 -> 512
    assert need_of_header(headers["gpt-oss-20b"], 8192, batch=256).swa_cells == 512
    # -ub 128: 128 + 128 = 256
    assert need_of_header(headers["gpt-oss-20b"], 8192, ubatch=128).swa_cells == 256


def test_header_values_that_are_not_counts_are_refused():

    for bad in (True, 2.5, "2"):
        meta = {"general.architecture": "llama", "llama.block_count": bad, "llama.embedding_length": 64}
        with pytest.raises(KVError, match=exact(f"llama.block_count is {bad!r}, not a non-negative integer")):
            need_of_header(GGUFHeader(3, meta, (), 0), 256)
    meta = {"general.architecture": "llama", "llama.block_count": 2}
    with pytest.raises(KVError, match=exact("llama.block_count and llama.embedding_length are needed")):
        need_of_header(GGUFHeader(3, meta, (), 0), 256)
    meta = {"general.architecture": "llama", "llama.block_count": 512, "llama.embedding_length": 64}
    assert need_of_header(GGUFHeader(3, meta, (), 0), 256).kv == 0  # 512 layers is allowed; no heads, no KV
    meta = {"general.architecture": "llama", "llama.block_count": 1, "llama.embedding_length": 64, "split.count": 2}
    with pytest.raises(KVError, match=exact("split GGUF of 2 files: 1 headers given")):
        need_of_header(GGUFHeader(3, meta, (), 0), 256)
    meta["split.count"] = 1
    assert need_of_header(GGUFHeader(3, meta, (), 0), 256).name == ""


def test_tensors_outside_the_blocks_count_on_the_head():

    meta = {"general.architecture": "llama", "llama.block_count": 2, "llama.embedding_length": 64}
    tensors = (TensorInfo("token_embd.weight", (64, 10), 1, 0), TensorInfo("rope_freqs.weight", (32,), 0, 0),
               TensorInfo("blk.2.attn_q.weight", (64, 64), 1, 0), TensorInfo("blk.1.attn_q.weight", (64, 64), 1, 0),
               TensorInfo("output_norm.weight", (64,), 0, 0))
    need = need_of_header(GGUFHeader(3, meta, tensors, 0), 256)
    # blk.2 of a 2-block model is not a block llama.cpp places: it counts with the embeddings
    assert need.input_bytes == 64 * 10 * 2 + 32 * 4 + 64 * 64 * 2
    assert need.layer_bytes == (0, 64 * 64 * 2) and need.output_bytes == 64 * 4


def test_need_on_host_defaults_to_f16(llama_path):
    assert need_on_host(FileHost(), llama_path, 8192).kv_type == "f16"


def test_smallthinker_windows_all_but_every_fourth_layer_from_the_first():
    need = need_of_header(small("smallthinker", 8, attention__sliding_window=100), 8192)
    full, window = 8192 * CELL, 4608 * CELL
    assert need.layer_bytes == (full, window, window, window, full, window, window, window)


def test_only_block_tensors_count_as_blocks():
    meta = {"general.architecture": "llama", "llama.block_count": 2, "llama.embedding_length": 64}
    tensors = (TensorInfo("mm.0.weight", (64, 64), 1, 0), TensorInfo("blk.1", (64,), 0, 0),
               TensorInfo("blk.0.x.weight", (64,), 0, 0))
    need = need_of_header(GGUFHeader(3, meta, tensors, 0), 256)
    assert need.layer_bytes == (64 * 4, 0) and need.input_bytes == 64 * 64 * 2 + 64 * 4


def test_later_shards_of_a_split_model_are_read_in_small_chunks(tmp_path):
    from halofleet.testing.tinymodel import write_tiny_llama

    first = write_tiny_llama(tmp_path / "split.gguf", split_max_tensors=5)
    asked: dict[str, list[int]] = {}

    def reader(path: str):
        def read(offset: int, length: int) -> bytes | None:
            asked.setdefault(Path(path).name, []).append(length)
            with open(path, "rb") as handle:
                handle.seek(offset)
                return handle.read(length)
        return read

    need = kvcache.need_from_reader(reader, str(first), 512, "f16")
    assert need.weights == need_of_file(str(first), 512).weights
    names = sorted(asked)
    assert len(names) == 5 and asked[names[0]] == [kvcache.FIRST_READ]
    assert all(asked[name] == [kvcache.SHARD_FIRST_READ] for name in names[1:])


# -- rules found with the oracle (tests/nspawn/test_kvcache_oracle.py); each figure is llama.cpp's arithmetic --

def test_mla_keeps_one_k_row_of_key_length_mla_and_no_v():
    header = small("deepseek2", 2, attention__kv_lora_rank=32, attention__key_length_mla=48,
                   attention__value_length_mla=32, attention__head_count_kv=4)
    need = need_of_header(header, 256)
    (cache,) = need.caches
    assert (cache.layers, cache.k_bytes, cache.v_bytes) == (2, 2 * 48 * 2 * 256, 0)
    assert "MLA: compressed K cache, no V cache" in need.notes
    with pytest.raises(KVError, match=exact("deepseek2 keeps MLA's V inside its K cache: K and V cache types must "
                                            "be the same")):
        need_of_header(header, 256, "bf16", kv_type_v="f16")
    # without the MLA keys (older files) K and V are ordinary per-head rows
    plain = need_of_header(small("deepseek2", 2, attention__kv_lora_rank=32), 256)
    assert plain.kv == 2 * 256 * CELL


@pytest.mark.parametrize("pattern, swa_layers", [(3, 4), ([True, False, True, True, True, False], 4)])
def test_the_headers_sliding_window_pattern_wins(pattern, swa_layers):
    need = need_of_header(small("gemma3", 6, attention__sliding_window=64,
                                attention__sliding_window_pattern=pattern), 4096)
    by_kind = {cache.kind: cache for cache in need.caches}
    assert (by_kind["swa"].layers if "swa" in by_kind else 0) == swa_layers
    assert by_kind["kv"].layers == 6 - swa_layers
    with pytest.raises(KVError, match=exact("gemma3.attention.sliding_window_pattern has 2 entries for 6 layers")):
        need_of_header(small("gemma3", 6, attention__sliding_window=64,
                             attention__sliding_window_pattern=[True, False]), 4096)
    with pytest.raises(KVError, match=exact("gemma3.attention.sliding_window_pattern holds something other than "
                                            "flags")):
        need_of_header(small("gemma3", 6, attention__sliding_window=64,
                             attention__sliding_window_pattern=["yes"] * 6), 4096)


def test_qwen3next_layer_layout_comes_from_the_header():
    def kinds(**keys):
        need = need_of_header(small("qwen3next", 4, **keys), 256)
        return {cache.kind: cache.layers for cache in need.caches if cache.kind == "kv"}

    assert kinds() == {"kv": 1}  # every 4th layer, the default
    assert kinds(full_attention_interval=2) == {"kv": 2}
    assert kinds(attention__recurrent_layers=[True, False, False, True]) == {"kv": 2}
    with pytest.raises(KVError, match=exact("qwen3next.full_attention_interval is a list (llama.cpp reads one "
                                            "number)")):
        kinds(full_attention_interval=[0, 1, 0, 1])
    assert need_of_header(small("qwen35", 4), 256).caches[0].layers == 1  # Qwen3.5: the same hybrid


def test_gemma4_window_layers_have_their_own_head_size_and_the_tied_embedding_is_loaded_twice():
    embd = TensorInfo("token_embd.weight", (64, 100), 0, 0)
    meta = small("gemma4", 3, attention__sliding_window=64, attention__sliding_window_pattern=[True, True, False],
                 attention__head_count_kv=1, attention__key_length=64, attention__value_length=64,
                 attention__key_length_swa=32, attention__value_length_swa=32).metadata
    need = need_of_header(GGUFHeader(3, meta, (embd,), 0), 4096)
    by_kind = {cache.kind: cache for cache in need.caches}
    assert by_kind["kv"].k_bytes == 1 * 64 * 2 * 4096 and by_kind["swa"].k_bytes == 2 * 32 * 2 * 768
    assert need.weights == 2 * 64 * 100 * 4


def test_mtp_blocks_are_not_loaded():
    meta = small("glm4moe", 3, nextn_predict_layers=1).metadata
    tensors = tuple(TensorInfo(f"blk.{il}.ffn_up.weight", (64, 64), 0, 0) for il in range(3))
    need = need_of_header(GGUFHeader(3, meta, tensors, 0), 256)
    assert need.weights == 2 * 64 * 64 * 4 and need.layer_bytes[2] == 0
    assert "1 MTP block(s) not loaded" in need.notes


def test_the_unit_passes_what_the_plan_sizes():
    flags = kvcache.EngineFlags(parallel=3, batch=1024, ubatch=256, kv_type="q8_0", kv_type_v="q4_0", unified=True,
                                swa_full=True, flash_attn=False)
    assert flags.args(4096) == ["-fa", "off", "-c", "4096", "-b", "1024", "-ub", "256", "-np", "3",
                                "--cache-type-k", "q8_0", "--cache-type-v", "q4_0", "--kv-unified", "--swa-full"]
    assert kvcache.EngineFlags().args() == ["-fa", "on", "-b", "2048", "-ub", "512", "-np", "1"]
    assert flags.sizing() == {"kv_type": "q8_0", "kv_type_v": "q4_0", "parallel": 3, "batch": 1024, "ubatch": 256,
                              "unified": True, "swa_full": True, "flash_attn": False}


def test_every_architecture_called_checked_is_in_the_oracle():
    from halofleet.testing.tinyarch import ARCHS

    assert set(ARCHS) == set(kvcache.CHECKED_ARCHS)
    assert not kvcache.CHECKED_ARCHS & archrules.UNCHECKED_ARCHS
