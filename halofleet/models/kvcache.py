"""
What a GGUF model needs in memory when llama-server loads it: the weights as the file holds them plus the KV cache
(and the recurrent state of Mamba/RWKV-style layers) at a context length, from the header alone. Pure functions over
:class:`halofleet.models.gguf.GGUFHeader`; :func:`need_of_file` and :func:`need_from_reader` (on a host:
:func:`halofleet.facts.model_header.need_on_host`) read the header first.

How llama.cpp sizes its memory (llama.cpp ``src/``, read at the upstream commit vendored by ollama, ec98e2002,
and checked against Debian forky's llama-server 0.7.0 in tests/nspawn, byte for byte in the oracle below):

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
- ``llama-memory-recurrent.cpp``: recurrent layers keep F32 states, ``n_embd_r + n_embd_s`` floats per slot
  (one cell per slot); its log line counts every layer, recurrent or not.
- ``llama-memory-hybrid.cpp``: a hybrid's attention layers get the same cache as any model's (per-slot streams
  without ``--kv-unified``), its recurrent layers the recurrent memory above.

Established by the oracle (tests/nspawn/test_kvcache_oracle.py, llama-server 0.7.0 build 11669; the source of that
build was not available to read here [U: the names of the llama.cpp functions above are from older sources]):

- MLA (``attention.kv_lora_rank`` with ``attention.key_length_mla``): one K row of ``key_length_mla`` per layer
  and token, no V cache.
- ``attention.sliding_window_pattern`` in the header (a period n: SWA when ``il % n < n - 1``; or one flag per
  layer, true = SWA) wins over the per-architecture pattern (:mod:`.archrules`).
- Qwen3-Next / Qwen3.5: attention every ``full_attention_interval`` (a number; default 4) layers, or where
  ``attention.recurrent_layers`` says false; Gemma 4: SWA layers use ``key/value_length_swa``, and its tied
  token embedding is loaded a second time as the output; the last ``nextn_predict_layers`` blocks of GLM-4.5
  style models (multi-token prediction) hold no KV and their tensors are not loaded.
- Per-layer ``head_count_kv`` that differs between attention layers: llama refuses the file (llama arch); only
  :data:`.archrules.PER_LAYER_KV_ARCHS` are sized per layer. An architecture in neither
  :data:`.archrules.CHECKED_ARCHS` nor ``UNCHECKED_ARCHS`` is refused ("not sized: ARCH").
- A quantized V cache with ``-fa off`` is refused by llama.cpp, whatever the architecture.

Not counted: compute buffers, the output buffer and llama-server's prompt cache (host RAM) [U: their size depends
on the backend and batch; leave headroom].
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..contract import localfiles
from ..contract.options import KV_CACHE_TYPES
from .archrules import (
    CHECKED_ARCHS,
    COPIED_TIED_EMBEDDING,
    MTP_ARCHS,
    PER_LAYER_KV_ARCHS,
    UNCHECKED_ARCHS,
    KVError,
    per_layer,
    recurrent_layers,
    state_floats,
    swa_layers,
    uint,
)
from .gguf import FIRST_READ, GGML_TYPES, GGUFError, GGUFHeader, read_header_in_chunks

GIB = 1 << 30
CELL_PAD = 256  # llama_context pads n_ctx and n_ctx_seq to 256; llama_kv_cache_iswa pads the SWA cache to 256
MAX_LAYERS = 512  # LLAMA_MAX_LAYERS (llama-hparams.h): a header claiming more is refused, never looped over
STATE_BYTES = 4  # recurrent states are GGML_TYPE_F32 (llama_model::create_memory)
SHARD_FIRST_READ = 64 << 10  # a split GGUF's later files: split.* keys and their tensor infos [U: typical size]

# -ctk/-ctv values llama-server accepts (contract.options.KV_CACHE_TYPES) -> ggml type id (gguf.GGML_TYPES)
KV_TYPES: dict[str, int] = {"f32": 0, "f16": 1, "bf16": 30, "q8_0": 8, "q4_0": 2, "q4_1": 3, "iq4_nl": 20,
                            "q5_0": 6, "q5_1": 7}
assert set(KV_TYPES) == set(KV_CACHE_TYPES)

SPLIT_NAME = re.compile(r"^(?P<stem>.*)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")


@dataclass(frozen=True)
class Cache:
    """
    One memory llama.cpp allocates beside the weights, as its log line counts it: ``kind`` "kv" (attention),
    "swa" (the sliding-window layers' own KV cache) or "recurrent" (``k_bytes``: R states, ``v_bytes``: S
    states); ``cells`` per stream, ``streams`` (1 unless each slot has its own), ``layers`` it holds (recurrent:
    every layer, as llama.cpp counts them, though it allocates only the recurrent ones).
    """
    kind: str
    cells: int
    layers: int
    streams: int
    type_k: str
    type_v: str
    k_bytes: int
    v_bytes: int

    @property
    def total(self) -> int:
        return self.k_bytes + self.v_bytes


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
    caches: tuple[Cache, ...] = ()

    @property
    def total(self) -> int:
        return self.weights + self.kv


@dataclass(frozen=True)
class EngineFlags:
    """
    The llama-server flags that change what it allocates, from host data: the unit renders them
    (:meth:`args`, box/serving) and the plan sizes with the same values (:meth:`sizing`), so the two cannot drift.
    """
    parallel: int = 1
    batch: int = 2048
    ubatch: int = 512
    kv_type: str = "f16"
    kv_type_v: str = "f16"
    unified: bool = False
    swa_full: bool = False
    flash_attn: bool = True

    @classmethod
    def of(cls, config: Any) -> "EngineFlags":
        """The flags of a :class:`halofleet.contract.config.HaloConfig`."""
        return cls(parallel=config.llama_parallel, batch=config.llama_batch, ubatch=config.llama_ubatch,
                   kv_type=config.llama_kv_type, kv_type_v=config.llama_kv_type_v or config.llama_kv_type,
                   unified=config.llama_kv_unified, swa_full=config.llama_swa_full,
                   flash_attn=config.llama_flash_attn == "on")

    def args(self, ctx: int | None = None) -> list[str]:
        """
        llama-server's command-line words for these flags (and ``-c ctx`` when given). Defaults (f16 cache, no
        --kv-unified with -np given, no --swa-full) are left out, so a unit written before these keys existed stays
        byte-identical.
        """
        args = ["-fa", "on" if self.flash_attn else "off", *(["-c", str(ctx)] if ctx is not None else []),
                "-b", str(self.batch), "-ub", str(self.ubatch), "-np", str(self.parallel)]
        if (self.kv_type, self.kv_type_v) != ("f16", "f16"):
            args += ["--cache-type-k", self.kv_type, "--cache-type-v", self.kv_type_v]
        return args + (["--kv-unified"] if self.unified else []) + (["--swa-full"] if self.swa_full else [])

    def request_ctx(self, ctx: int) -> int:
        """The context one request can use: each of the ``-np`` slots gets ``ctx / np`` unless the KV is unified
        (llama-server refuses a longer prompt: "exceeds the available context size")."""
        return ctx if self.unified else ctx // self.parallel

    def sizing(self) -> dict[str, Any]:
        """Keyword arguments of :func:`need_of_header` (and the functions that call it)."""
        return {"kv_type": self.kv_type, "kv_type_v": self.kv_type_v, "parallel": self.parallel,
                "batch": self.batch, "ubatch": self.ubatch, "unified": self.unified, "swa_full": self.swa_full,
                "flash_attn": self.flash_attn}


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


def _layer_of(name: str) -> int | None:
    parts = name.split(".", 2)
    return int(parts[1]) if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() else None


def _has_tensor(headers: list[GGUFHeader], name: str) -> bool:
    return any(tensor.name == name for header in headers for tensor in header.tensors)


def _tensor_bytes(headers: list[GGUFHeader], name: str) -> int:
    return sum(tensor.nbytes() or 0 for header in headers for tensor in header.tensors if tensor.name == name)


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


def need_of_header(header: GGUFHeader, ctx: int, kv_type: str = "f16", *, kv_type_v: str | None = None,
                   parallel: int = 1, ubatch: int = 512, batch: int = 2048, unified: bool = False,
                   swa_full: bool = False, flash_attn: bool = True, name: str = "",
                   shards: tuple[GGUFHeader, ...] = ()) -> Need:
    """
    The :class:`Need` of the model behind ``header`` served with ``-c ctx -np parallel -b batch -ub ubatch``,
    ``--cache-type-k kv_type --cache-type-v kv_type_v`` (None: kv_type) (llama-server's flags; ``unified``:
    ``--kv-unified``, ``swa_full``: ``--swa-full``, ``flash_attn``: ``-fa on``; :meth:`EngineFlags.sizing` gives
    them as the unit passes them). ``shards``: the other files' headers of a split GGUF.
    Raises :class:`KVError` when the header cannot be sized.
    """
    arch = header.architecture
    if not arch:
        raise KVError("the header has no general.architecture")
    layers = uint(header, "block_count")
    embd = uint(header, "embedding_length")
    if not layers or embd is None:
        raise KVError(f"{arch}.block_count and {arch}.embedding_length are needed")
    if layers > MAX_LAYERS:
        raise KVError(f"{arch}.block_count {layers} is more than llama.cpp's {MAX_LAYERS} layers")
    split = header.metadata.get("split.count")
    if isinstance(split, int) and split > 1 and len(shards) != split - 1:
        raise KVError(f"split GGUF of {split} files: {len(shards) + 1} headers given")
    if arch not in CHECKED_ARCHS and arch not in UNCHECKED_ARCHS:
        raise KVError(f"not sized: {arch} (an architecture halofleet has no memory rules for)")
    heads = per_layer(header, "attention.head_count", layers, [0] * layers)
    kv_heads = per_layer(header, "attention.head_count_kv", layers, heads)
    if len({h for h in kv_heads if h}) > 1 and arch not in PER_LAYER_KV_ARCHS:
        raise KVError(f"{arch}.attention.head_count_kv differs between layers ({sorted(set(kv_heads))}): "
                      f"llama.cpp loads {arch} with layer 0's count in every layer and refuses the file")
    ff = per_layer(header, "feed_forward_length", layers, [0] * layers)
    # load_hparams: head dims only when layer 0 has heads (n_head() is layer 0's), else 0 whatever the keys say
    key = value = 0
    if heads[0]:
        key = uint(header, "attention.key_length", embd // heads[0])
        value = uint(header, "attention.value_length", embd // heads[0])
    attention, recurrent = recurrent_layers(header, layers, kv_heads, ff)
    swa, window = swa_layers(header, layers)
    kv_type_v = kv_type_v or kv_type
    if not flash_attn and KV_TYPES[kv_type_v] not in (0, 1, 30):
        raise KVError(f"a {kv_type_v} V cache needs flash attention (llama.cpp refuses it with -fa off)")
    mla = uint(header, "attention.kv_lora_rank", 0) and uint(header, "attention.key_length_mla") is not None
    if mla and kv_type_v != kv_type:  # the oracle: "model does not support different K and V cache types"
        raise KVError(f"{arch} keeps MLA's V inside its K cache: K and V cache types must be the same")
    if mla:  # MLA: the cache holds the compressed latent + rope part as K and no V (llama_model::create_memory)
        key, value = uint(header, "attention.key_length_mla"), 0
        kv_heads = [1 if a else 0 for a in attention]
    kv_row = [(key * h, value * h) for h in kv_heads]
    if arch == "gemma4":  # sliding-window layers have their own head sizes (attention.key/value_length_swa)
        key_swa = uint(header, "attention.key_length_swa", key)
        value_swa = uint(header, "attention.value_length_swa", value)
        kv_row = [(key_swa * h, value_swa * h) if s else row for h, s, row in zip(kv_heads, swa, kv_row)]
    if not flash_attn and len({v for (_, v), a in zip(kv_row, attention) if a}) > 1:
        widest = max(v for (_, v), a in zip(kv_row, attention) if a)
        kv_row = [(k, widest) for k, _ in kv_row]  # [TAG_V_CACHE_VARIABLE]: V padded without flash attention
    heads_k, heads_v = {key}, {value}
    if arch == "gemma4":
        heads_k.add(key_swa)
        heads_v.add(value_swa)
    for widths, cache_type in ((heads_k, kv_type), (heads_v, kv_type_v)) if any(attention) else ():
        for width in widths - {0}:  # llama_init_from_model refuses a cache type whose blocks do not fit a head
            kv_row_bytes(cache_type, width)
    cells, streams = cache_cells(ctx, parallel, unified)
    ub = min(batch, ubatch)  # n_ubatch <= n_batch; capping by ctx too changes nothing once padded to 256
    swa_cells = cells if swa_full else pad(min(cells, window * (parallel if unified else 1) + ub))
    weights, output, other = weights_by_layer([header, *shards], layers)
    mtp = uint(header, "nextn_predict_layers", 0) if arch in MTP_ARCHS else 0
    for il in range(max(layers - mtp, 0), layers):
        weights[il] = 0  # an MTP block's tensors stay in the file
    if arch in COPIED_TIED_EMBEDDING and not _has_tensor([header, *shards], "output.weight"):
        output += _tensor_bytes([header, *shards], "token_embd.weight")  # a copy of it is the output layer
    state_r, state_s = state_floats(header, embd)
    caches = []
    for kind, members, rows in (("kv", [a and not w for a, w in zip(attention, swa)], cells),
                                ("swa", [a and w for a, w in zip(attention, swa)], swa_cells)):
        if any(members):
            k_bytes = sum(kv_row_bytes(kv_type, kv_row[il][0]) for il in range(layers) if members[il])
            v_bytes = sum(kv_row_bytes(kv_type_v, kv_row[il][1]) for il in range(layers) if members[il])
            caches.append(Cache(kind, rows, sum(members), streams, kv_type, kv_type_v, k_bytes * rows * streams,
                                v_bytes * rows * streams))
    if any(recurrent):
        slots = max(1, parallel)
        caches.append(Cache("recurrent", slots, layers, 1, "f32", "f32",
                            state_r * STATE_BYTES * slots * sum(recurrent),
                            state_s * STATE_BYTES * slots * sum(recurrent)))
    layer_bytes = []
    for il in range(layers):
        rows = (swa_cells if swa[il] else cells) * streams
        size = (kv_row_bytes(kv_type, kv_row[il][0]) + kv_row_bytes(kv_type_v, kv_row[il][1])) * rows \
            if attention[il] else 0
        if recurrent[il]:
            size += (state_r + state_s) * STATE_BYTES * max(1, parallel)
        layer_bytes.append(weights[il] + size)
    notes = []
    if any(swa):
        notes.append(f"{sum(s and a for s, a in zip(swa, attention))} of {layers} layers use a sliding window of "
                     f"{window}")
    if any(recurrent):
        notes.append(f"{sum(recurrent)} recurrent layers")
    if mla:
        notes.append("MLA: compressed K cache, no V cache")
    if mtp:
        notes.append(f"{min(mtp, layers)} MTP block(s) not loaded")
    if uint(header, "attention.sliding_window") and not any(swa):
        notes.append(f"sliding_window in the header, but {arch} is sized as full attention here [U]")
    if arch not in CHECKED_ARCHS:
        notes.append(f"{arch}: sized by the rules of llama.cpp's source, not checked against llama-server [U]")
    by_kind = {cache.kind: cache for cache in caches}
    return Need(name=name, ctx=ctx, kv_type=kv_type, parallel=parallel, weights=sum(weights) + output + other,
                kv=sum(cache.total for cache in caches),
                cells=by_kind["kv"].cells * streams if "kv" in by_kind else 0,
                swa_cells=by_kind["swa"].cells * streams if "swa" in by_kind else 0,
                architecture=arch, layer_bytes=tuple(layer_bytes), output_bytes=output, input_bytes=other,
                notes=tuple(notes), caches=tuple(caches))


def shard_paths(path: str) -> list[str]:
    """Every file of a split GGUF named like ``x-00001-of-00003.gguf`` (``[path]`` for a single file)."""
    match = SPLIT_NAME.match(path)
    if not match:
        return [path]
    count = int(match["count"])
    return [f"{match['stem']}-{index:05d}-of-{count:05d}.gguf" for index in range(1, count + 1)]


def need_from_reader(reader: Callable[[str], Callable[[int, int], bytes | None]], path: str, ctx: int,
                     kv_type: str, **options: Any) -> Need:
    """
    The need of the (split) GGUF at ``path``, each shard's header read through ``reader(shard)(offset, length)``.
    Only the first file carries the vocabulary; the others start with a small read (doubled while short), so a
    60-file model costs a few MiB of range requests, not 4 MiB a file (benchmarks/plan_http.py).
    """
    try:
        headers = [read_header_in_chunks(reader(shard), first=FIRST_READ if index == 0 else SHARD_FIRST_READ)
                   for index, shard in enumerate(shard_paths(path))]
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
