"""
A small, dependency-free GGUF header reader, and from it the bytes a generated token reads (the memory roofline's
denominator). Pure Python over ``struct``: the ``gguf`` package is only a test/demo extra.

Layout (llama.cpp ``ggml/docs/gguf.md``, versions 2 and 3): magic ``GGUF``, uint32 version, uint64 tensor count,
uint64 metadata count, the metadata key/values, then per tensor: name, uint32 n_dims, n_dims uint64 dims, uint32
ggml type, uint64 offset. Strings are a uint64 length and UTF-8 bytes. Little-endian, or big-endian throughout
(a byte-swapped version field tells).

Every length field is checked against what is left of the buffer and against a sane limit before anything is
sliced or looped, so a truncated or hostile header is a :class:`GGUFError` (a ``ValueError``), never a huge
allocation. :class:`Truncated` means "the buffer ended": the caller may read more of the file and try again.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Callable

MAGIC = b"GGUF"
MAX_KEY_BYTES = 65535          # gguf.md: keys are at most 2^16 - 1 bytes
MAX_STRING_BYTES = 16 << 20    # chat templates are tens of KB; a longer string is a broken or hostile file
MAX_ARRAY_ITEMS = 1 << 24      # vocabularies and merges are < 1M entries
MAX_KV = 1 << 20
MAX_TENSORS = 1 << 20          # large models have a few thousand tensors
MAX_DIMS = 4                   # GGML_MAX_DIMS (ggml.h)
MAX_ARRAY_DEPTH = 4
FIRST_READ = 4 << 20          # most headers fit; gpt-oss's (o200k vocabulary and merges) is ~11 MB [U: estimate]
MAX_HEADER_READ = 64 << 20     # the largest tokenizers in use are a fraction of this
KEPT_ARRAY_ITEMS = 256         # small numeric arrays (per-layer values) are kept; vocabularies are only skipped

# GGUF metadata value types -> struct code of the scalars (gguf.md: gguf_metadata_value_type)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9

# ggml type id -> (name, elements per block, bytes per block). Ids from the ggml_type enum in ggml/include/ggml.h;
# sizes from type_traits in llama.cpp ggml/src/ggml.c (blck_size, type_size = sizeof(block_*)), the block sizes
# worked out from the static_asserts beside each block_* struct in ggml/src/ggml-common.h (ggml_half = 2 bytes,
# QK_K = 256, K_SCALE_SIZE = 12). Left out on purpose: Q8_1 (a dot-product intermediate, not stored in model files;
# ggml-common.h gives 36 bytes, gguf-py 0.19's table 40), removed ids 4, 5, 31-33, 36-38, and ids after 41: an
# unknown type makes the estimate unknown.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),      # d + 16 nibble bytes
    3: ("Q4_1", 32, 20),      # d, m + 16
    6: ("Q5_0", 32, 22),      # d + qh[4] + 16
    7: ("Q5_1", 32, 24),      # d, m + qh[4] + 16
    8: ("Q8_0", 32, 34),      # d + 32
    10: ("Q2_K", 256, 84),    # 2*2 + 16 + 64
    11: ("Q3_K", 256, 110),   # 2 + 64 + 32 + 12
    12: ("Q4_K", 256, 144),   # 2*2 + 12 + 128
    13: ("Q5_K", 256, 176),   # 2*2 + 12 + 128 + 32
    14: ("Q6_K", 256, 210),   # 2 + 16 + 192
    15: ("Q8_K", 256, 292),   # float d + 256 + 16*2
    16: ("IQ2_XXS", 256, 66),  # 2 + 32*2
    17: ("IQ2_XS", 256, 74),   # 2 + 32*2 + 8
    18: ("IQ3_XXS", 256, 98),  # 2 + 3*32
    19: ("IQ1_S", 256, 50),    # 2 + 32 + 16
    20: ("IQ4_NL", 32, 18),    # 2 + 16
    21: ("IQ3_S", 256, 110),   # 2 + 13*8 + 4
    22: ("IQ2_S", 256, 82),    # 2 + 64 + 16
    23: ("IQ4_XS", 256, 136),  # 2 + 2 + 4 + 128
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),    # 32 + 16 + 8
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),    # 48 + 4 + 2
    35: ("TQ2_0", 256, 66),    # 64 + 2
    39: ("MXFP4", 32, 17),     # E8M0 scale byte + 16 (gpt-oss)
    40: ("NVFP4", 64, 36),     # 4 scale bytes + 32
    41: ("Q1_0", 128, 18),     # 2 + 16
}


class GGUFError(ValueError):
    """Not a GGUF header this reader can trust."""


class Truncated(GGUFError):
    """The buffer ended inside the header (a longer read of the same file may succeed)."""


@dataclass(frozen=True)
class SkippedArray:
    """A metadata array not kept (strings, or too long to be useful here): its element type and length."""
    item_type: int
    count: int


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dims: tuple[int, ...]  # ggml order: dims[0] is the row length
    ggml_type: int
    offset: int

    @property
    def type_name(self) -> str:
        return GGML_TYPES[self.ggml_type][0] if self.ggml_type in GGML_TYPES else f"type {self.ggml_type}"

    def row_bytes(self) -> int | None:
        """Bytes of one row (dims[0] elements), or None for a ggml type not in the table."""
        if self.ggml_type not in GGML_TYPES:
            return None
        _, block, size = GGML_TYPES[self.ggml_type]
        row = self.dims[0] if self.dims else 1
        if row % block:
            raise GGUFError(f"tensor {self.name!r}: row of {row} is not a multiple of the {self.type_name} "
                            f"block of {block}")
        return row // block * size

    def nbytes(self) -> int | None:
        """Bytes the tensor's data takes in the file (ggml_nbytes of a contiguous tensor), None if unknown."""
        row = self.row_bytes()
        if row is None:
            return None
        rows = 1
        for dim in self.dims[1:]:
            rows *= dim
        return row * rows


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    metadata: dict[str, Any]
    tensors: tuple[TensorInfo, ...]
    header_bytes: int  # where the tensor infos end (tensor data starts at the next alignment boundary)
    byte_order: str = "<"

    @property
    def architecture(self) -> str | None:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    def arch_int(self, key: str) -> int | None:
        """``{arch}.key`` as a non-negative int, or None when absent or not an integer."""
        value = self.metadata.get(f"{self.architecture}.{key}") if self.architecture else None
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class _Reader:
    def __init__(self, data: bytes, order: str) -> None:
        self.data, self.pos, self.order = memoryview(data), 0, order

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise Truncated(f"GGUF header truncated in {what} at byte {self.pos}: needs {n} bytes, "
                            f"{len(self.data) - self.pos} left")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def scalar(self, code: str, what: str) -> Any:
        fmt = self.order + code
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str, limit: int = MAX_STRING_BYTES) -> str:
        length = self.scalar("Q", what)
        if length > limit:
            raise GGUFError(f"GGUF {what} at byte {self.pos - 8} claims {length} bytes (limit {limit})")
        raw = self.take(length, what)
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as error:
            raise GGUFError(f"GGUF {what} at byte {self.pos - length} is not UTF-8") from error

    def skip_strings(self, count: int, what: str) -> None:
        """Step over ``count`` strings (vocabularies, merges: ~10^5 of them, so a tight loop)."""
        unpack, data, pos, end = struct.Struct(self.order + "Q").unpack_from, self.data, self.pos, len(self.data)
        for _ in range(count):
            if pos + 8 > end:
                self.pos = pos
                self.take(8, what)  # raises Truncated with the position
            (length,) = unpack(data, pos)
            if length > MAX_STRING_BYTES:
                raise GGUFError(f"GGUF {what} at byte {pos} claims {length} bytes (limit {MAX_STRING_BYTES})")
            pos += 8 + length
            if pos > end:
                self.pos = pos - length
                self.take(length, what)
        self.pos = pos

    def value(self, value_type: int, what: str, depth: int = 0) -> Any:
        if value_type in _SCALARS:
            value = self.scalar(_SCALARS[value_type], what)
            return bool(value) if value_type == 7 else value
        if value_type == _STRING:
            return self.string(what)
        if value_type == _ARRAY:
            return self.array(what, depth)
        raise GGUFError(f"GGUF {what}: unknown value type {value_type} at byte {self.pos - 4}")

    def array(self, what: str, depth: int) -> Any:
        if depth >= MAX_ARRAY_DEPTH:
            raise GGUFError(f"GGUF {what}: arrays nested deeper than {MAX_ARRAY_DEPTH}")
        item_type = self.scalar("I", what)
        count = self.scalar("Q", what)
        if count > MAX_ARRAY_ITEMS:
            raise GGUFError(f"GGUF {what}: array of {count} items (limit {MAX_ARRAY_ITEMS})")
        if item_type in _SCALARS:
            size = struct.calcsize(self.order + _SCALARS[item_type])
            raw = self.take(size * count, what)  # bounded by the buffer: take() checks before slicing
            if count > KEPT_ARRAY_ITEMS:
                return SkippedArray(item_type, count)
            values = list(struct.unpack(f"{self.order}{count}{_SCALARS[item_type]}", raw))
            return [bool(v) for v in values] if item_type == 7 else values
        if item_type == _STRING:
            self.skip_strings(count, what)
            return SkippedArray(item_type, count)
        if item_type == _ARRAY:
            for _ in range(count):
                self.array(what, depth + 1)
            return SkippedArray(item_type, count)
        raise GGUFError(f"GGUF {what}: unknown array item type {item_type}")


def read_header(data: bytes) -> GGUFHeader:
    """Parse the GGUF header at the start of ``data`` (the file's first bytes; the tensor data may be absent)."""
    if len(data) < 8:
        raise Truncated(f"GGUF header truncated: {len(data)} bytes")
    if bytes(data[:4]) != MAGIC:
        raise GGUFError(f"not a GGUF file (magic {bytes(data[:4])!r})")
    order = "<"
    version = struct.unpack("<I", data[4:8])[0]
    if version & 0xFFFF == 0 and version >> 16:  # byte-swapped: a big-endian file
        order, version = ">", struct.unpack(">I", data[4:8])[0]
    if version not in (2, 3):  # version 1 used 32-bit counts; it predates every model served today
        raise GGUFError(f"GGUF version {version} is not supported (2 and 3 are)")
    reader = _Reader(data, order)
    reader.take(8, "magic and version")
    tensor_count = reader.scalar("Q", "tensor count")
    kv_count = reader.scalar("Q", "metadata count")
    if tensor_count > MAX_TENSORS or kv_count > MAX_KV:
        raise GGUFError(f"GGUF header claims {tensor_count} tensors and {kv_count} metadata keys (limits "
                        f"{MAX_TENSORS}, {MAX_KV})")
    metadata: dict[str, Any] = {}
    for index in range(kv_count):
        key = reader.string(f"metadata key {index}", MAX_KEY_BYTES)
        value_type = reader.scalar("I", f"type of {key!r}")
        metadata[key] = reader.value(value_type, f"value of {key!r}")
    tensors = []
    for index in range(tensor_count):
        name = reader.string(f"tensor name {index}", MAX_KEY_BYTES)
        n_dims = reader.scalar("I", f"dims of {name!r}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise GGUFError(f"GGUF tensor {name!r}: {n_dims} dimensions (1 to {MAX_DIMS} allowed)")
        dims = tuple(reader.scalar("Q", f"dims of {name!r}") for _ in range(n_dims))
        elements = 1
        for dim in dims:
            elements *= dim
        if elements >= 1 << 62:  # ggml's int64 element counts; a larger product is a broken header
            raise GGUFError(f"GGUF tensor {name!r}: dims {dims} are too large")
        ggml_type = reader.scalar("I", f"type of {name!r}")
        offset = reader.scalar("Q", f"offset of {name!r}")
        tensors.append(TensorInfo(name, dims, ggml_type, offset))
    return GGUFHeader(version, metadata, tuple(tensors), reader.pos, order)


def read_header_in_chunks(read: Callable[[int, int], bytes | None], first: int = FIRST_READ,
                          limit: int = MAX_HEADER_READ) -> GGUFHeader:
    """
    Read a header through ``read(offset, length)`` (the file's bytes there, fewer at its end; None: unreadable),
    doubling what is read until the header parses: a few round trips, never more than ``limit`` bytes.
    """
    data, want = b"", min(first, limit)
    while True:
        chunk = read(len(data), want - len(data))
        if chunk is None:
            raise GGUFError("model file not readable")
        asked = want - len(data)
        data += chunk
        try:
            return read_header(data)
        except Truncated as error:
            if len(chunk) < asked:
                raise GGUFError(f"file ends inside its GGUF header ({len(data)} bytes): {error}") from None
            if want >= limit:
                raise GGUFError(f"GGUF header longer than {limit} bytes read") from None
            want = min(want * 2, limit)


@dataclass(frozen=True)
class TokenCost:
    """
    What generating one token reads from memory, from the header. ``bytes_per_token`` None: unknown (``reason``
    says why); ``expert_count`` None: a dense model.
    """
    bytes_per_token: int | None
    tensor_bytes: int | None
    expert_count: int | None = None
    expert_used_count: int | None = None
    block_count: int | None = None
    reason: str = ""

    @property
    def moe(self) -> bool:
        return self.expert_count is not None

    @property
    def experts(self) -> tuple[int, int] | None:
        """(used, count) experts per token of an MoE model whose estimate is known."""
        if self.expert_count is None or self.expert_used_count is None or self.bytes_per_token is None:
            return None
        return self.expert_used_count, self.expert_count


def _block_index(name: str) -> int | None:
    """N of a ``blk.N.`` tensor name, else None."""
    parts = name.split(".", 2)
    return int(parts[1]) if len(parts) == 3 and parts[0] == "blk" and parts[1].isascii() \
        and parts[1].isdigit() else None


def _is_expert_tensor(tensor: TensorInfo, expert_count: int | None) -> bool:
    # llama.cpp names the stacked expert weights blk.N.ffn_{gate,up,down}_exps.weight (gpt-oss also has
    # ..._exps.bias), experts as the last dim; shared experts (_shexp) and the router (ffn_gate_inp) are always read.
    return "_exps." in tensor.name and expert_count is not None and len(tensor.dims) >= 2 \
        and tensor.dims[-1] == expert_count


def _layout_mismatch(header: GGUFHeader) -> str:
    """
    The file checks the type table: llama.cpp's loader (gguf.cpp) requires each tensor's offset to be the sum of
    the earlier tensors' ggml_nbytes, each padded to ``general.alignment`` (default 32). A wrong block size shows
    here as a wrong offset ("" when consistent; the last tensor's size is checked by nothing but the file's end).
    """
    alignment = header.metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0:
        return f"general.alignment {alignment!r} is not a positive integer"
    expected = 0
    for tensor in header.tensors:
        if tensor.offset != expected:
            return (f"tensor {tensor.name} is at data offset {tensor.offset} but the sizes before it add up to "
                    f"{expected}")
        expected += -(-(tensor.nbytes() or 0) // alignment) * alignment
    return ""


def token_cost(header: GGUFHeader) -> TokenCost:
    """
    Bytes read per generated token (batch of one): every tensor once, except that

    - the token embedding ``token_embd.weight`` is a row lookup (ggml_get_rows): one row, unless there is no
      ``output.weight`` (tied embeddings), where it is also the output matrix and is read whole;
    - stacked expert tensors are read for ``expert_used_count`` of ``expert_count`` experts per layer, and the
      experts of one tensor are equal slices, so those bytes scale by used/count exactly;
    - the last ``{arch}.nextn_predict_layers`` blocks (GLM-4.5, DeepSeek-style multi-token-prediction layers)
      are not read at all: llama.cpp loads them with TENSOR_SKIP unless MTP drafting is asked for.
    """
    expert_count, used = header.arch_int("expert_count"), header.arch_int("expert_used_count")
    blocks = header.arch_int("block_count")
    shards = header.metadata.get("split.count")
    if isinstance(shards, int) and shards > 1:  # each shard's header lists only its own tensors
        return TokenCost(None, None, reason=f"split GGUF ({shards} files): this header lists one file's tensors")
    first_skipped = blocks - (header.arch_int("nextn_predict_layers") or 0) if blocks is not None else None
    moe = expert_count is not None and expert_count > 1
    names = {tensor.name for tensor in header.tensors}
    dense = experts = total = 0
    unknown: list[str] = []
    for tensor in header.tensors:
        size = tensor.nbytes()
        if size is None:
            unknown.append(f"{tensor.name} ({tensor.type_name})")
            continue
        total += size
        block = _block_index(tensor.name)
        if block is not None and first_skipped is not None and block >= first_skipped:
            continue
        if tensor.name == "token_embd.weight" and "output.weight" in names:
            dense += tensor.row_bytes() or 0
        elif moe and _is_expert_tensor(tensor, expert_count):
            experts += size
        elif "_exps." in tensor.name:
            return TokenCost(None, None, expert_count, used, blocks,
                             f"expert tensor {tensor.name} has dims {tensor.dims}, expert_count {expert_count}")
        else:
            dense += size
    if unknown:
        return TokenCost(None, None, expert_count if moe else None, used, blocks,
                         f"{len(unknown)} tensors of unknown ggml type, e.g. {unknown[0]}")
    layout = _layout_mismatch(header)
    if layout:
        return TokenCost(None, None, expert_count if moe else None, used, blocks, layout)
    if not moe:
        return TokenCost(dense, total, block_count=blocks)
    if not experts:
        return TokenCost(None, total, expert_count, used, blocks,
                         f"expert_count {expert_count} but no expert tensors (blk.N.*_exps.*)")
    if used is None or not 1 <= used <= expert_count:
        return TokenCost(None, total, expert_count, used, blocks,
                         f"expert_used_count {used} of expert_count {expert_count}")
    # experts split evenly: bytes of `used` experts = experts * used / count (exact when count divides)
    return TokenCost(dense + experts * used // expert_count, total, expert_count, used, blocks)
