"""
The GGUF header reader and the bytes a token reads. The headers are written here with llama.cpp's own ``gguf``
writer (tensor infos only: the reader never needs the data); every expected byte count is worked out by hand from
the block sizes in ggml-common.h, not by the reader.
"""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pytest

from halofleet.models.gguf import GGML_TYPES, GGUFError, Truncated, read_header, token_cost
from halofleet.testing.tinymodel import write_tiny_llama

Q = gguf.GGMLQuantizationType
F32 = Q.F32


def write_header(path: Path, arch: str, tensors: list[tuple[str, tuple[int, ...], Q, int]],
                 kv: dict[str, tuple[str, object]] | None = None,
                 endian: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE) -> bytes:
    """A GGUF file with the header only. ``tensors``: (name, ggml dims, type, bytes) with dims in ggml order."""
    writer = gguf.GGUFWriter(str(path), arch, endianess=endian)
    for key, (kind, value) in (kv or {}).items():
        getattr(writer, f"add_{kind}")(key, value)
    for name, dims, qtype, nbytes in tensors:
        # the writer takes numpy order (reversed) and, with a raw type, element shapes as they are
        writer.add_tensor_info(name, tuple(reversed(dims)), np.dtype(np.float32), nbytes, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    return path.read_bytes()


# -- a dense model: 2 blocks, n_embd 256, n_ff 512, vocab 1000 ------------------------------------------------
# Q4_0 row of 256 = 8 blocks x 18 B = 144; Q6_K row of 256 = 210; Q8_0 row of 256 = 8 x 34 = 272;
# Q4_K row of 256 = 144, of 512 = 288.
DENSE_BLOCK = [
    ("attn_norm.weight", (256,), F32, 1024),
    ("ffn_norm.weight", (256,), F32, 1024),
    *[(f"attn_{name}.weight", (256, 256), Q.Q8_0, 272 * 256) for name in ("q", "k", "v", "output")],  # 69632 each
    ("ffn_gate.weight", (256, 512), Q.Q4_K, 144 * 512),   # 73728
    ("ffn_up.weight", (256, 512), Q.Q4_K, 144 * 512),     # 73728
    ("ffn_down.weight", (512, 256), Q.Q4_K, 288 * 256),   # 73728
]  # 1024 + 1024 + 4 * 69632 + 3 * 73728 = 501760 per block


def dense_tensors(tied: bool = False) -> list[tuple[str, tuple[int, ...], Q, int]]:
    tensors = [("token_embd.weight", (256, 1000), Q.Q4_0, 144 * 1000)]  # 144000
    for block in range(2):
        tensors += [(f"blk.{block}.{name}", dims, qtype, size) for name, dims, qtype, size in DENSE_BLOCK]
    tensors.append(("output_norm.weight", (256,), F32, 1024))
    if not tied:
        tensors.append(("output.weight", (256, 1000), Q.Q6_K, 210 * 1000))  # 210000
    return tensors


DENSE_KV = {"llama.block_count": ("uint32", 2), "llama.embedding_length": ("uint32", 256)}


def test_dense_model_reads_every_weight_once_and_one_embedding_row(tmp_path):
    header = read_header(write_header(tmp_path / "d.gguf", "llama", dense_tensors(), DENSE_KV))
    assert (header.version, header.architecture, len(header.tensors)) == (3, "llama", 21)
    cost = token_cost(header)
    # tensors: 144000 + 2 * 501760 + 1024 + 210000; per token the embedding is one 144-byte row
    assert cost.tensor_bytes == 1_358_544
    assert cost.bytes_per_token == 144 + 2 * 501_760 + 1024 + 210_000 == 1_214_688
    assert (cost.moe, cost.expert_count, cost.block_count) == (False, None, 2)


def test_tied_embeddings_are_the_output_matrix_and_read_whole(tmp_path):
    header = read_header(write_header(tmp_path / "t.gguf", "llama", dense_tensors(tied=True), DENSE_KV))
    assert token_cost(header).bytes_per_token == 144_000 + 2 * 501_760 + 1024 == 1_148_544


# -- an MoE model: 2 blocks, 8 experts of which 2 are used, gpt-oss-like MXFP4 experts with a bias --------------
# MXFP4 row of 256 = 8 blocks x 17 B = 136; Q5_0 row of 512 = 16 x 22 = 352; Q4_K row of 256 = 144.
MOE_BLOCK = [
    ("attn_norm.weight", (256,), F32, 1024),
    *[(f"attn_{name}.weight", (256, 256), Q.Q4_K, 144 * 256) for name in ("q", "k", "v", "output")],  # 36864
    ("ffn_gate_inp.weight", (256, 8), F32, 256 * 8 * 4),          # router, 8192, always read
    ("ffn_gate_exps.weight", (256, 512, 8), Q.MXFP4, 136 * 512 * 8),  # 557056
    ("ffn_up_exps.weight", (256, 512, 8), Q.MXFP4, 136 * 512 * 8),    # 557056
    ("ffn_down_exps.weight", (512, 256, 8), Q.Q5_0, 352 * 256 * 8),   # 720896
    ("ffn_gate_exps.bias", (512, 8), F32, 512 * 8 * 4),               # 16384
]  # dense part 1024 + 4 * 36864 + 8192 = 156672; experts 2 * 557056 + 720896 + 16384 = 1851392


def moe_tensors() -> list[tuple[str, tuple[int, ...], Q, int]]:
    tensors = [("token_embd.weight", (256, 1000), Q.Q8_0, 272 * 1000)]  # 272000, one row 272
    for block in range(2):
        tensors += [(f"blk.{block}.{name}", dims, qtype, size) for name, dims, qtype, size in MOE_BLOCK]
    tensors += [("output_norm.weight", (256,), F32, 1024), ("output.weight", (256, 1000), Q.Q6_K, 210_000)]
    return tensors


MOE_KV = {"testmoe.block_count": ("uint32", 2), "testmoe.expert_count": ("uint32", 8),
          "testmoe.expert_used_count": ("uint32", 2)}


def test_moe_model_reads_the_used_share_of_the_experts(tmp_path):
    cost = token_cost(read_header(write_header(tmp_path / "m.gguf", "testmoe", moe_tensors(), MOE_KV)))
    assert (cost.moe, cost.expert_count, cost.expert_used_count, cost.block_count) == (True, 8, 2, 2)
    assert cost.tensor_bytes == 272_000 + 2 * (156_672 + 1_851_392) + 1024 + 210_000 == 4_499_152
    # always read: 2 dense parts + embedding row + output norm + output; experts: 2 of 8
    assert cost.bytes_per_token == 2 * 156_672 + 272 + 1024 + 210_000 + 2 * 1_851_392 * 2 // 8 == 1_450_336


def test_moe_without_used_count_is_unknown_not_guessed(tmp_path):
    kv = {key: value for key, value in MOE_KV.items() if "used" not in key}
    cost = token_cost(read_header(write_header(tmp_path / "m.gguf", "testmoe", moe_tensors(), kv)))
    assert cost.bytes_per_token is None and "expert_used_count" in cost.reason


def test_expert_tensor_not_matching_expert_count_is_unknown(tmp_path):
    kv = {**MOE_KV, "testmoe.expert_count": ("uint32", 16)}
    cost = token_cost(read_header(write_header(tmp_path / "m.gguf", "testmoe", moe_tensors(), kv)))
    assert cost.bytes_per_token is None and "_exps" in cost.reason


def test_an_unknown_ggml_type_makes_the_estimate_unknown(tmp_path):
    data = bytearray(write_header(tmp_path / "d.gguf", "llama", dense_tensors(), DENSE_KV))
    header = read_header(bytes(data))
    last = header.tensors[-1]  # output.weight: its type field sits 12 bytes before the end of the tensor infos
    assert struct.unpack_from("<I", data, header.header_bytes - 12)[0] == last.ggml_type == Q.Q6_K
    struct.pack_into("<I", data, header.header_bytes - 12, 42)  # newer than this reader's table
    cost = token_cost(read_header(bytes(data)))
    assert cost.bytes_per_token is None and "output.weight (type 42)" in cost.reason


def test_the_tiny_test_model_from_its_file(tmp_path):
    # halofleet's tiny llama, all F32: vocab 312, n_embd 64, n_ff 128, 2 layers.
    # per layer 2 norms (2 * 256) + 4 attn (4 * 16384) + 3 ffn (3 * 32768) = 164352; embedding/output 79872 each
    data = write_tiny_llama(tmp_path / "tiny.gguf").read_bytes()
    cost = token_cost(read_header(data))
    assert cost.tensor_bytes == 2 * 164_352 + 2 * 79_872 + 256 == 488_704
    assert cost.bytes_per_token == 488_704 - 79_872 + 64 * 4 == 409_088


def test_every_metadata_value_type_and_big_endian(tmp_path):
    kv = {"t.u8": ("uint8", 200), "t.i8": ("int8", -5), "t.u16": ("uint16", 60000), "t.i16": ("int16", -300),
          "t.u32": ("uint32", 4_000_000_000), "t.i32": ("int32", -7), "t.f32": ("float32", 0.5),
          "t.bool": ("bool", True), "t.str": ("string", "héllo"), "t.u64": ("uint64", 2**40),
          "t.i64": ("int64", -(2**40)), "t.f64": ("float64", 0.25), "t.ints": ("array", [1, 2, 3]),
          "t.strs": ("array", ["a", "bc", ""]), "t.long": ("array", list(range(1000)))}
    for endian in (gguf.GGUFEndian.LITTLE, gguf.GGUFEndian.BIG):
        header = read_header(write_header(tmp_path / "kv.gguf", "t", dense_tensors(), kv, endian))
        meta = header.metadata
        assert [meta[f"t.{k}"] for k in ("u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "u64",
                                          "i64", "f64", "ints")] == \
            [200, -5, 60000, -300, 4_000_000_000, -7, 0.5, True, "héllo", 2**40, -(2**40), 0.25, [1, 2, 3]]
        assert meta["t.strs"].count == 3 and meta["t.long"].count == 1000  # skipped, but parsed past
        assert token_cost(header).bytes_per_token == 1_214_688


def test_type_table_agrees_with_gguf_py_where_both_know_the_type():
    # gguf-py's GGML_QUANT_SIZES is a second, independent copy; Q8_1 is left out (the two disagree, see gguf.py)
    for type_id, (_, block, size) in GGML_TYPES.items():
        assert gguf.GGML_QUANT_SIZES[Q(type_id)] == (block, size), Q(type_id).name


# -- truncated and hostile headers -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def moe_file(tmp_path_factory) -> bytes:
    return write_header(tmp_path_factory.mktemp("h") / "m.gguf", "testmoe", moe_tensors(), MOE_KV)


def test_every_truncation_is_a_clear_truncated_error(moe_file):
    end = read_header(moe_file).header_bytes
    for cut in [0, 3, 4, 8, 20, 24, 40, *range(41, end, 97), end - 1]:
        with pytest.raises(Truncated, match="truncated"):
            read_header(moe_file[:cut])
    read_header(moe_file[:end])  # the tensor infos' end is enough


@pytest.mark.parametrize("patch, message", [
    ((0, b"GGML"), "not a GGUF file"),
    ((4, struct.pack("<I", 1)), "version 1 is not supported"),
    ((8, struct.pack("<Q", 2**60)), "tensors"),      # tensor count
    ((16, struct.pack("<Q", 2**60)), "metadata keys"),  # kv count
    ((24, struct.pack("<Q", 2**62)), "claims"),       # first key's length: no 4 EiB allocation
])
def test_hostile_length_fields_are_refused_without_allocating(moe_file, patch, message):
    offset, raw = patch
    data = bytearray(moe_file)
    data[offset:offset + len(raw)] = raw
    with pytest.raises(GGUFError, match=message):
        read_header(bytes(data))


def test_bad_value_type_array_count_and_dims_are_refused(moe_file):
    # first key is general.architecture (24 + 8 + 20 bytes), its value type follows
    key_end = 24 + 8 + len("general.architecture")
    data = bytearray(moe_file)
    struct.pack_into("<I", data, key_end, 99)
    with pytest.raises(GGUFError, match="unknown value type 99"):
        read_header(bytes(data))
    data = bytearray(moe_file)
    struct.pack_into("<IIQ", data, key_end, 9, 4, 2**40)  # an array of 2^40 uint32
    with pytest.raises(GGUFError, match="array of 1099511627776 items"):
        read_header(bytes(data))
    header = read_header(moe_file)
    first = header.tensors[0]  # token_embd.weight: its n_dims follows the name after the metadata
    at = bytes(moe_file).index(b"token_embd.weight") + len("token_embd.weight")
    assert struct.unpack_from("<I", moe_file, at)[0] == len(first.dims)
    data = bytearray(moe_file)
    struct.pack_into("<I", data, at, 9)
    with pytest.raises(GGUFError, match="9 dimensions"):
        read_header(bytes(data))


def test_row_not_a_multiple_of_the_block_is_refused(tmp_path):
    data = write_header(tmp_path / "b.gguf", "llama", [("x.weight", (48, 2), Q.F32, 384)])
    data = bytearray(data)
    header = read_header(bytes(data))
    struct.pack_into("<I", data, header.header_bytes - 12, Q.Q4_0)  # 48 is not a multiple of 32
    with pytest.raises(GGUFError, match="not a multiple"):
        token_cost(read_header(bytes(data)))


def test_a_wrong_size_shows_in_the_next_tensors_offset(tmp_path):
    # the offsets the writer laid out follow ggml's sizes; claim Q5_K (176 B/block) for blk.0.ffn_down's Q4_K
    # (144): the next tensor's offset no longer adds up, so the estimate is unknown rather than wrong
    data = bytearray(write_header(tmp_path / "d.gguf", "llama", dense_tensors(), DENSE_KV))
    at = bytes(data).index(b"blk.0.ffn_down.weight") + len("blk.0.ffn_down.weight") + 4 + 2 * 8
    assert struct.unpack_from("<I", data, at)[0] == Q.Q4_K
    struct.pack_into("<I", data, at, Q.Q5_K)
    cost = token_cost(read_header(bytes(data)))
    assert cost.bytes_per_token is None
    # token_embd 144000 + block 0 501760 = 645760; with 176-byte blocks ffn_down is 352 * 256 = 90112, 16384 more
    assert cost.reason == ("tensor blk.1.attn_norm.weight is at data offset 645760 but the sizes before it add up "
                           "to 662144")


def test_multi_token_prediction_layers_are_not_read(tmp_path):
    # GLM-4.5 style: block_count 3 includes 1 nextn layer (blk.2), which llama.cpp does not load
    tensors = moe_tensors() + [(f"blk.2.{name}", dims, qtype, size) for name, dims, qtype, size in MOE_BLOCK]
    kv = {**MOE_KV, "testmoe.block_count": ("uint32", 3), "testmoe.nextn_predict_layers": ("uint32", 1)}
    cost = token_cost(read_header(write_header(tmp_path / "m.gguf", "testmoe", tensors, kv)))
    assert cost.tensor_bytes == 4_499_152 + 156_672 + 1_851_392
    assert cost.bytes_per_token == 1_450_336  # as without blk.2


def test_truncation_inside_a_vocabulary_and_a_hostile_token_length(tmp_path):
    vocab = {"tokenizer.ggml.tokens": ("array", ["a", "bb", "ccc"] * 100)}
    data = write_header(tmp_path / "v.gguf", "llama", dense_tensors(), {**DENSE_KV, **vocab})
    start = data.index(b"tokenizer.ggml.tokens") + len("tokenizer.ggml.tokens") + 4 + 4 + 8  # first token's length
    for cut in range(start, start + 40):
        with pytest.raises(Truncated, match="tokenizer.ggml.tokens"):
            read_header(data[:cut])
    hostile = bytearray(data)
    struct.pack_into("<Q", hostile, start + 8 + 1, 2**63)  # the second token claims 8 EiB
    with pytest.raises(GGUFError, match="claims 9223372036854775808 bytes"):
        read_header(bytes(hostile))


def test_a_split_gguf_shard_is_unknown_not_a_fraction(tmp_path):
    kv = {**DENSE_KV, "split.no": ("uint16", 0), "split.count": ("uint16", 3)}
    cost = token_cost(read_header(write_header(tmp_path / "s.gguf", "llama", dense_tensors(), kv)))
    assert cost.bytes_per_token is None and cost.reason.startswith("split GGUF (3 files)")


def test_experts_stored_one_tensor_each_are_not_recognised_so_unknown(tmp_path):
    # early Mixtral GGUFs: blk.N.ffn_gate.E.weight per expert; counting them all would be 4x too many bytes
    tensors = [("token_embd.weight", (256, 1000), Q.Q8_0, 272_000)]
    tensors += [(f"blk.0.ffn_gate.{e}.weight", (256, 512), Q.Q4_K, 144 * 512) for e in range(8)]
    cost = token_cost(read_header(write_header(tmp_path / "x.gguf", "testmoe", tensors, MOE_KV)))
    assert cost.bytes_per_token is None and "no expert tensors" in cost.reason
