"""
What a GGUF model needs in memory when llama-server loads it: the weights as the file holds them plus the KV cache
(and the recurrent state of Mamba/RWKV-style layers) at a context length, from the header alone. Pure functions over
:class:`halofleet.models.gguf.GGUFHeader`; :func:`need_of_file` and :func:`need_from_reader` (on a host: :func:`halofleet.facts.model_header.need_on_host`) read the header first.

How llama.cpp sizes its memory (llama.cpp ``src/``, read at the upstream commit vendored by ollama, ec98e2002,
and checked against Debian forky's llama-server 0.7.0 in tests/nspawn):

- ``llama-context.cpp``: ``n_ctx`` is padded up to a multiple of 256. With ``-np N`` slots and no ``--kv-unified``
  (llama-server's default when ``-np`` is given), each slot gets ``pad(n_ctx / N, 256)`` cells and the cache holds
  N of those streams; with ``--kv-unified`` one stream of ``n_ctx`` cells is shared by all slots.
- ``llama-kv-cache.cpp``: per layer that has KV, one K tensor of ``n_embd_k_gqa`` x cells x streams and one V
  tensor of ``n_embd_v_gqa`` x cells x streams, in the KV type (``-ctk``/``-ctv``); without flash attention the
  V rows are padded to the widest layer's when layers differ.
- ``llama-hparams.cpp``: ``n_embd_k_gqa(il) = key_length * head_count_kv(il)`` (``value_length`` for V);
  ``key_length``/``value_length`` default to ``embedding_length / head_count``; ``head_count_kv`` defaults to
  ``head_count`` and may be a per-layer array.
- ``llama-kv-cache-iswa.cpp``: sliding-window layers get their own cache of
  ``pad(min(cells, window * (unified ? slots : 1) + ubatch), 256)`` cells (``--swa-full``: the full size).
- ``llama-memory-recurrent.cpp``: recurrent layers keep F32 states, ``n_embd_r + n_embd_s`` floats per slot.

Not counted: compute buffers, the output buffer and llama-server's prompt cache (host RAM) [U: their size depends
on the backend and batch; leave headroom].
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..contract import localfiles
from .gguf import GGML_TYPES, GGUFError, GGUFHeader, read_header_in_chunks

GIB = 1 << 30
CELL_PAD = 256  # llama_context pads n_ctx and n_ctx_seq to 256; llama_kv_cache_iswa pads the SWA cache to 256
MAX_LAYERS = 512  # LLAMA_MAX_LAYERS (llama-hparams.h): a header claiming more is refused, never looped over
STATE_BYTES = 4  # recurrent states are GGML_TYPE_F32 (llama_model::create_memory)

# -ctk/-ctv values llama-server accepts (common/arg.cpp kv_cache_types) -> ggml type id (gguf.GGML_TYPES)
KV_TYPES: dict[str, int] = {"f32": 0, "f16": 1, "bf16": 30, "q8_0": 8, "q4_0": 2, "q4_1": 3, "iq4_nl": 20,
                            "q5_0": 6, "q5_1": 7}

# Sliding-window layers, per architecture, as llama_model::load_hparams sets them (hard-coded there, not in the
# header): (pattern, dense_first, window). With pattern n a layer il is SWA when il % n < n - 1 (dense_first: when
# il % n != 0) -- llama_hparams::set_swa_pattern. window: "header" (the header's sliding_window, required),
# "positive" (SWA only when the header's sliding_window is > 0), an int (the default, the header's value wins), or
# ("positive", n) (SWA only when the header's is > 0, and then n whatever it says).
SWA_ARCHS: dict[str, tuple[int, bool, Any]] = {
    "gemma2": (2, False, 4096),
    "gemma3": (6, False, "positive"),
    "gemma3n": (5, False, "header"),
    "cohere2": (4, False, "header"),
    "olmo2": (4, False, "positive"),
    "gpt-oss": (2, False, "header"),
    "afmoe": (4, False, "positive"),
    "smallthinker": (4, True, ("positive", 4096)),
}
LLAMA4_CHUNK = 8192  # llama4: chunked attention of 8192 on 3 of 4 layers unless sliding_window is 0
KV_FROM_START = {"gemma3n": 20}  # only the first 20 layers hold KV; later ones reuse them
RECURRENT_ARCHS = {"mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7"}
# hybrid archs whose recurrent layers are the ones with head_count_kv 0 (load_hparams)
HYBRID_KV0_ARCHS = {"jamba", "plamo2", "granitehybrid", "lfm2", "lfm2moe"}
SPLIT_NAME = re.compile(r"^(?P<stem>.*)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")


class KVError(ValueError):
    """The header does not say enough (or says something llama.cpp would refuse) to size the model."""


@dataclass(frozen=True)
class Need:
    """
    Bytes one model needs loaded by llama-server: ``weights`` (tensor data as the file holds it) + ``kv`` (the
    attention KV cache and any recurrent state) = ``total``; with the inputs that decided them. ``layer_bytes[i]``
    is block i's weights and KV, ``output_bytes`` the output layer's weights and ``input_bytes`` the rest (token
    embeddings: llama.cpp keeps them on the head's CPU), so a split across devices can place them.
    """
    name: str
    ctx: int
    kv_type: str
    parallel: int
    weights: int
    kv: int
    cells: int  # cells of the full-attention cache, all streams
    swa_cells: int  # cells of the sliding-window cache, all streams (0: none)
    architecture: str = ""
    layer_bytes: tuple[int, ...] = ()
    output_bytes: int = 0
    input_bytes: int = 0
    notes: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return self.weights + self.kv


def gib(value: int) -> float:
    return value / GIB


def pad(value: int, to: int = CELL_PAD) -> int:
    return -(-value // to) * to


def kv_row_bytes(kv_type: str, width: int) -> int:
    """Bytes of ``width`` elements in ``kv_type`` (ggml_row_size); the width must fill whole blocks."""
    if kv_type not in KV_TYPES:
        raise KVError(f"KV type {kv_type!r} is not one of {', '.join(KV_TYPES)}")
    _, block, size = GGML_TYPES[KV_TYPES[kv_type]]
    if width % block:
        raise KVError(f"KV type {kv_type} (blocks of {block}) does not divide a row of {width}")
    return width // block * size


def cache_cells(ctx: int, parallel: int = 1, unified: bool = False) -> tuple[int, int]:
    """(cells per stream, streams) of the full-attention cache llama_context makes for ``-c ctx -np parallel``."""
    if ctx < 1 or parallel < 1:
        raise KVError(f"ctx {ctx} and parallel {parallel} must be positive")
    n_ctx = pad(ctx)
    if unified or parallel == 1:
        return n_ctx, 1
    return pad(n_ctx // parallel), parallel


def _arch_value(header: GGUFHeader, key: str) -> Any:
    return header.metadata.get(f"{header.architecture}.{key}")


def _uint(header: GGUFHeader, key: str, default: int | None = None) -> int | None:
    value = _arch_value(header, key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise KVError(f"{header.architecture}.{key} is {value!r}, not a non-negative integer")
    return value


def _per_layer(header: GGUFHeader, key: str, layers: int, default: list[int]) -> list[int]:
    """``{arch}.key`` as one value per layer: a scalar for all, or an array of exactly ``layers`` values."""
    value = _arch_value(header, key)
    if value is None:
        return default
    if isinstance(value, list):
        if len(value) != layers or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                           for v in value):
            raise KVError(f"{header.architecture}.{key} has {len(value)} entries for {layers} layers, or one that "
                          f"is not a count")
        return list(value)
    return [_uint(header, key)] * layers


def _swa_layers(header: GGUFHeader, layers: int) -> tuple[list[bool], int]:
    """Which layers use the sliding-window cache, and the window (0: none)."""
    arch = header.architecture
    window = _uint(header, "attention.sliding_window")
    if arch == "llama4":
        if window == 0:
            return [False] * layers, 0
        return [il % 4 < 3 for il in range(layers)], LLAMA4_CHUNK
    if arch == "exaone4":  # only the 64-layer (32B) model gets SWA by default; a header window overrides
        if layers != 64:
            return [False] * layers, 0
        return [il % 4 < 3 for il in range(layers)], window if window is not None else 4096
    if arch not in SWA_ARCHS:
        return [False] * layers, 0
    pattern, dense_first, rule = SWA_ARCHS[arch]
    if rule == "header" and window is None:
        raise KVError(f"{arch}.attention.sliding_window is missing")
    if isinstance(rule, int):
        window = rule if window is None else window
    elif rule != "header":
        if not window:  # "positive" rules: no window in the header, no SWA
            return [False] * layers, 0
        window = window if rule == "positive" else rule[1]
    if dense_first:
        return [il % pattern != 0 for il in range(layers)], window
    return [il % pattern < pattern - 1 for il in range(layers)], window


def _recurrent_layers(header: GGUFHeader, layers: int, kv_heads: list[int], ff: list[int]) -> tuple[list[bool],
                                                                                                    list[bool]]:
    """(has attention KV, has recurrent state) per layer (llm_arch_is_recurrent / is_hybrid and their filters)."""
    arch = header.architecture
    if arch in RECURRENT_ARCHS:
        return [False] * layers, [True] * layers
    if arch in HYBRID_KV0_ARCHS:
        return [h != 0 for h in kv_heads], [h == 0 for h in kv_heads]
    if arch in ("nemotron_h", "nemotron_h_moe"):  # MLP layers (n_ff != 0) hold neither
        recurrent = [h == 0 and f == 0 for h, f in zip(kv_heads, ff)]
        return [not r and f == 0 for r, f in zip(recurrent, ff)], recurrent
    if arch == "qwen3next":  # every 4th layer is full attention [U: hard-coded in llama.cpp, not in the header]
        return [(il + 1) % 4 == 0 for il in range(layers)], [(il + 1) % 4 != 0 for il in range(layers)]
    if arch == "falcon-h1":  # every layer has both
        return [True] * layers, [True] * layers
    start = KV_FROM_START.get(arch)
    if start is None and arch in ("glm4moe", "bailingmoe2"):  # MTP (nextn) layers have no KV
        start = layers - _uint(header, "nextn_predict_layers", 0)
    return [start is None or il < start for il in range(layers)], [False] * layers


def _state_floats(header: GGUFHeader, embd: int) -> int:
    """n_embd_r + n_embd_s of a recurrent layer (llama_hparams), in floats per slot."""
    wkv = _uint(header, "wkv.head_size", 0)
    if wkv:
        return _uint(header, "token_shift_count", 2) * embd + embd * wkv
    conv = _uint(header, "shortconv.l_cache", 0)
    d_conv, d_inner, d_state, groups = (_uint(header, f"ssm.{key}", 0)
                                        for key in ("conv_kernel", "inner_size", "state_size", "group_count"))
    r = embd * (conv - 1) if conv else max(d_conv - 1, 0) * (d_inner + 2 * groups * d_state)
    return r + d_state * d_inner


def _layer_of(name: str) -> int | None:
    parts = name.split(".", 2)
    return int(parts[1]) if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() else None


def weights_by_layer(headers: list[GGUFHeader], layers: int) -> tuple[list[int], int, int]:
    """(bytes per block, output layer bytes, other bytes) of every tensor of the file (or of all its shards)."""
    per_layer, output, other = [0] * layers, 0, 0
    for header in headers:
        for tensor in header.tensors:
            try:
                size = tensor.nbytes()
            except GGUFError as error:  # a row that does not fill its type's blocks
                raise KVError(str(error)) from None
            if size is None:
                raise KVError(f"tensor {tensor.name} has ggml type {tensor.ggml_type}, unknown here")
            block = _layer_of(tensor.name)
            if block is not None and block < layers:
                per_layer[block] += size
            elif tensor.name.startswith("output"):  # output.weight, output_norm.*: llama.cpp's output layer
                output += size
            else:
                other += size
    return per_layer, output, other


def need_of_header(header: GGUFHeader, ctx: int, kv_type: str = "f16", *, parallel: int = 1, ubatch: int = 512,
                   batch: int = 2048, unified: bool = False, swa_full: bool = False, flash_attn: bool = True,
                   name: str = "", shards: tuple[GGUFHeader, ...] = ()) -> Need:
    """
    The :class:`Need` of the model behind ``header`` served with ``-c ctx -np parallel -b batch -ub ubatch``,
    ``--cache-type-k/v kv_type`` (llama-server's flags; ``unified``: ``--kv-unified``, ``swa_full``:
    ``--swa-full``, ``flash_attn``: ``-fa on``). ``shards``: the other files' headers of a split GGUF.
    Raises :class:`KVError` when the header cannot be sized.
    """
    arch = header.architecture
    if not arch:
        raise KVError("the header has no general.architecture")
    layers = _uint(header, "block_count")
    embd = _uint(header, "embedding_length")
    if not layers or embd is None:
        raise KVError(f"{arch}.block_count and {arch}.embedding_length are needed")
    if layers > MAX_LAYERS:
        raise KVError(f"{arch}.block_count {layers} is more than llama.cpp's {MAX_LAYERS} layers")
    split = header.metadata.get("split.count")
    if isinstance(split, int) and split > 1 and len(shards) != split - 1:
        raise KVError(f"split GGUF of {split} files: {len(shards) + 1} headers given")
    heads = _per_layer(header, "attention.head_count", layers, [0] * layers)
    kv_heads = _per_layer(header, "attention.head_count_kv", layers, heads)
    ff = _per_layer(header, "feed_forward_length", layers, [0] * layers)
    # load_hparams: head dims only when layer 0 has heads (n_head() is layer 0's), else 0 whatever the keys say
    key = value = 0
    if heads[0]:
        key = _uint(header, "attention.key_length", embd // heads[0])
        value = _uint(header, "attention.value_length", embd // heads[0])
    attention, recurrent = _recurrent_layers(header, layers, kv_heads, ff)
    swa, window = _swa_layers(header, layers)
    kv_row = [(key * h, value * h) for h in kv_heads]
    if not flash_attn and len({v for (_, v), a in zip(kv_row, attention) if a}) > 1:
        widest = max(v for (_, v), a in zip(kv_row, attention) if a)
        kv_row = [(k, widest) for k, _ in kv_row]  # [TAG_V_CACHE_VARIABLE]: V padded without flash attention
    for width in {key, value} if any(attention) else ():
        if width:
            kv_row_bytes(kv_type, width)  # llama_init_from_model refuses a KV type that does not divide a head
    cells, streams = cache_cells(ctx, parallel, unified)
    hybrid = any(recurrent) and any(attention)
    if hybrid:  # llama_memory_hybrid sizes its attention cache with n_ctx, not n_ctx_seq [U: upstream quirk]
        cells = pad(ctx) if unified or parallel == 1 else cells * parallel
    ub = min(batch, ubatch)  # n_ubatch <= n_batch; capping by ctx too changes nothing once padded to 256
    swa_cells = cells if swa_full or hybrid else pad(min(cells, window * (parallel if unified else 1) + ub))
    state = _state_floats(header, embd) * STATE_BYTES * parallel
    weights, output, other = weights_by_layer([header, *shards], layers)
    layer_bytes, kv_total = [], 0
    for il in range(layers):
        k_width, v_width = kv_row[il]
        rows = (swa_cells if swa[il] and not hybrid else cells) * streams
        size = (kv_row_bytes(kv_type, k_width) + kv_row_bytes(kv_type, v_width)) * rows if attention[il] else 0
        if recurrent[il]:
            size += state
        kv_total += size
        layer_bytes.append(weights[il] + size)
    notes = []
    if any(swa):
        notes.append(f"{sum(swa)} of {layers} layers use a sliding window of {window}")
    if any(recurrent):
        notes.append(f"{sum(recurrent)} recurrent layers")
    if _uint(header, "attention.sliding_window") and not any(swa) and not hybrid:
        notes.append(f"sliding_window in the header, but {arch} is sized as full attention here [U]")
    return Need(name=name, ctx=ctx, kv_type=kv_type, parallel=parallel, weights=sum(weights) + output + other,
                kv=kv_total, cells=cells * streams if any(attention) else 0,
                swa_cells=swa_cells * streams if any(s and a for s, a in zip(swa, attention)) and not hybrid else 0,
                architecture=arch, layer_bytes=tuple(layer_bytes), output_bytes=output, input_bytes=other,
                notes=tuple(notes))


def shard_paths(path: str) -> list[str]:
    """Every file of a split GGUF named like ``x-00001-of-00003.gguf`` (``[path]`` for a single file)."""
    match = SPLIT_NAME.match(path)
    if not match:
        return [path]
    count = int(match["count"])
    return [f"{match['stem']}-{index:05d}-of-{count:05d}.gguf" for index in range(1, count + 1)]


def need_from_reader(reader: Callable[[str], Callable[[int, int], bytes | None]], path: str, ctx: int,
                     kv_type: str, **options: Any) -> Need:
    """The need of the (split) GGUF at ``path``, each shard's header read through ``reader(shard)(offset, length)``."""
    try:
        headers = [read_header_in_chunks(reader(shard)) for shard in shard_paths(path)]
    except GGUFError as error:
        raise KVError(f"{path}: {error}") from None
    options.setdefault("name", Path(path).name)
    return need_of_header(headers[0], ctx, kv_type, shards=tuple(headers[1:]), **options)


def _local_reader(path: str) -> Callable[[int, int], bytes | None]:
    """Slices of a regular file on this machine (a FIFO, a device or a directory is refused, never read)."""
    def read(offset: int, length: int) -> bytes | None:
        try:
            return localfiles.read_at(path, offset, length)
        except localfiles.LocalFileMissing:
            return None  # "not readable", as a missing shard over SSH or HTTP
        except localfiles.LocalFileRefused as error:
            raise KVError(f"{path}: {error}") from None
    return read


def need_of_file(path: str, ctx: int, kv_type: str = "f16", **options: Any) -> Need:
    """:func:`need_of_header` of a local GGUF file (every shard of a split one); ``options`` as there."""
    return need_from_reader(_local_reader, path, ctx, kv_type, **options)
