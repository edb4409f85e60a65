"""
Per-architecture memory rules of llama.cpp 0.7.0 (llama_model::load_hparams and create_memory), as header reads:
which layers keep attention KV, which a sliding window, which recurrent state and how big it is. Used by
:mod:`.kvcache`; every rule here is checked against llama-server in tests/nspawn/test_kvcache_oracle.py for the
architectures of :data:`CHECKED_ARCHS`.
"""

from __future__ import annotations

from typing import Any

from .gguf import GGUFHeader


class KVError(ValueError):
    """The header does not say enough (or says something llama.cpp would refuse) to size the model."""


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
# Qwen3-Next style hybrids: a layer is recurrent unless (il + 1) % full_attention_interval == 0 (default 4), or
# as the header's attention.recurrent_layers list says (a full_attention_interval array is refused by llama.cpp)
INTERVAL_HYBRID_ARCHS = {"qwen3next", "qwen35", "qwen35moe"}
# Compared byte for byte with llama-server 0.7.0 in tests/nspawn/test_kvcache_oracle.py (tiny models of each)
CHECKED_ARCHS = frozenset({
    "afmoe", "arcee", "bailingmoe2", "cohere2", "command-r", "deepseek2", "ernie4_5", "ernie4_5-moe", "exaone",
    "exaone4", "falcon-h1", "gemma", "gemma2", "gemma3", "gemma3n", "gemma4", "glm4", "glm4moe", "gpt-oss",
    "granite", "granitehybrid", "granitemoe", "hunyuan-dense", "internlm2", "jamba", "lfm2", "lfm2moe", "llama",
    "llama4", "mamba", "mamba2", "mistral3", "nemotron_h", "olmo2", "olmoe", "phi2", "phi3", "plamo2", "qwen2",
    "qwen2moe", "qwen3", "qwen35", "qwen35moe", "qwen3moe", "qwen3next", "rwkv6", "rwkv7", "seed_oss", "smollm3",
    "stablelm", "starcoder2",
})
# Architectures llama.cpp 0.7.0 knows whose memory follows the same rules (plain attention, or a rule above)
# but that no tiny model here has loaded yet: sized, with a note saying so [U]. Any other is refused by name.
UNCHECKED_ARCHS = frozenset({
    "apertus", "arctic", "arwkv7", "baichuan", "bailingmoe", "bitnet", "bloom", "chameleon", "chatglm", "codeshell",
    "deci", "deepseek", "dots1", "falcon", "gpt2", "gptj", "gptneox", "grok", "grovemoe", "hunyuan-moe", "jais",
    "minicpm", "minicpm3", "minimax-m2", "mpt", "nemotron", "nemotron_h_moe", "olmo", "openelm", "orion", "phimoe",
    "plamo", "qwen", "qwen2vl", "qwen3vl", "qwen3vlmoe", "refact", "rwkv6qwen2", "smallthinker", "starcoder",
    "xverse",
})
# Per-layer KV head counts that differ between attention layers: llama.cpp's loaders of these take each layer's
# own count; the others check every layer's K/V tensors against layer 0's (the oracle: llama refuses) [U: list]
PER_LAYER_KV_ARCHS = {"deci", "openelm"}
# Tied embeddings: llama.cpp loads token_embd.weight a second time as the output layer (the oracle: gemma3n's and
# gemma4's model buffer is the file's tensors plus token_embd once more, on the CPU backend; the other tied models
# share it there) [U: on a GPU backend]
COPIED_TIED_EMBEDDING = {"gemma3n", "gemma4"}
# hybrid archs whose recurrent layers are the ones with head_count_kv 0 (load_hparams)
# The last nextn_predict_layers blocks are multi-token-prediction blocks: no KV, and llama.cpp does not load their
# tensors (the oracle: glm4moe's and bailingmoe2's model buffers are the file's tensors minus those blocks')
MTP_ARCHS = {"glm4moe", "bailingmoe2"}
HYBRID_KV0_ARCHS = {"jamba", "plamo2", "granitehybrid", "lfm2", "lfm2moe"}


def arch_value(header: GGUFHeader, key: str) -> Any:
    return header.metadata.get(f"{header.architecture}.{key}")


def uint(header: GGUFHeader, key: str, default: int | None = None) -> int | None:
    value = arch_value(header, key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise KVError(f"{header.architecture}.{key} is {value!r}, not a non-negative integer")
    return value


def per_layer(header: GGUFHeader, key: str, layers: int, default: list[int]) -> list[int]:
    """``{arch}.key`` as one value per layer: a scalar for all, or an array of exactly ``layers`` values."""
    value = arch_value(header, key)
    if value is None:
        return default
    if isinstance(value, list):
        if len(value) != layers or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                           for v in value):
            raise KVError(f"{header.architecture}.{key} has {len(value)} entries for {layers} layers, or one that "
                          f"is not a count")
        return list(value)
    return [uint(header, key)] * layers


def flags(header: GGUFHeader, key: str, value: list, layers: int) -> list[bool]:
    """A per-layer flag array of the header: exactly one bool (or 0/1) per layer."""
    if len(value) != layers:
        raise KVError(f"{header.architecture}.{key} has {len(value)} entries for {layers} layers")
    if not all(isinstance(flag, bool) or flag in (0, 1) for flag in value):
        raise KVError(f"{header.architecture}.{key} holds something other than flags")
    return [bool(flag) for flag in value]


def swa_pattern(header: GGUFHeader, layers: int) -> list[bool] | None:
    """The header's attention.sliding_window_pattern: a period n (SWA when il % n < n - 1) or one flag per layer."""
    value = arch_value(header, "attention.sliding_window_pattern")
    if value is None:
        return None
    if isinstance(value, list):
        return flags(header, "attention.sliding_window_pattern", value, layers)
    period = uint(header, "attention.sliding_window_pattern")
    return [period > 0 and il % period < period - 1 for il in range(layers)]


def swa_layers(header: GGUFHeader, layers: int) -> tuple[list[bool], int]:
    """Which layers use the sliding-window cache, and the window (0: none)."""
    arch = header.architecture
    window = uint(header, "attention.sliding_window")
    if arch == "llama4":
        if window == 0:
            return [False] * layers, 0
        return [il % 4 < 3 for il in range(layers)], LLAMA4_CHUNK
    if arch == "exaone4":  # only the 64-layer (32B) model gets SWA by default; a header window overrides
        if layers != 64:
            return [False] * layers, 0
        return [il % 4 < 3 for il in range(layers)], window if window is not None else 4096
    if arch == "gemma4":
        if window is None:
            raise KVError(f"{arch}.attention.sliding_window is missing")
        pattern = swa_pattern(header, layers)
        if pattern is None:
            raise KVError(f"{arch}.attention.sliding_window_pattern is missing")
        return pattern, window
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
    from_header = swa_pattern(header, layers)  # the header's pattern wins over the per-architecture one
    if from_header is not None:
        return from_header, window
    if dense_first:
        return [il % pattern != 0 for il in range(layers)], window
    return [il % pattern < pattern - 1 for il in range(layers)], window


def recurrent_layers(header: GGUFHeader, layers: int, kv_heads: list[int],
                     ff: list[int]) -> tuple[list[bool], list[bool]]:
    """(has attention KV, has recurrent state) per layer (llm_arch_is_recurrent / is_hybrid and their filters)."""
    arch = header.architecture
    if arch in RECURRENT_ARCHS:
        return [False] * layers, [True] * layers
    if arch in HYBRID_KV0_ARCHS:
        return [h != 0 for h in kv_heads], [h == 0 for h in kv_heads]
    if arch in ("nemotron_h", "nemotron_h_moe"):  # MLP layers (n_ff != 0) hold neither
        recurrent = [h == 0 and f == 0 for h, f in zip(kv_heads, ff)]
        return [not r and f == 0 for r, f in zip(recurrent, ff)], recurrent
    if arch in INTERVAL_HYBRID_ARCHS:
        listed = arch_value(header, "attention.recurrent_layers")
        if isinstance(listed, list):
            recurrent = flags(header, "attention.recurrent_layers", listed, layers)
        else:
            if isinstance(arch_value(header, "full_attention_interval"), list):
                raise KVError(f"{arch}.full_attention_interval is a list (llama.cpp reads one number)")
            interval = uint(header, "full_attention_interval", 4)
            if not interval:
                raise KVError(f"{arch}.full_attention_interval is 0")
            recurrent = [(il + 1) % interval != 0 for il in range(layers)]
        return [not r for r in recurrent], recurrent
    if arch == "falcon-h1":  # every layer has both
        return [True] * layers, [True] * layers
    start = KV_FROM_START.get(arch)
    if start is None and arch in MTP_ARCHS:  # MTP (nextn) layers have no KV
        start = layers - uint(header, "nextn_predict_layers", 0)
    return [start is None or il < start for il in range(layers)], [False] * layers


def state_floats(header: GGUFHeader, embd: int) -> tuple[int, int]:
    """(n_embd_r, n_embd_s) of a recurrent layer (llama_hparams), in floats per slot."""
    wkv = uint(header, "wkv.head_size", 0)
    if wkv:
        return uint(header, "token_shift_count", 2) * embd, embd * wkv
    conv = uint(header, "shortconv.l_cache", 0)
    d_conv, d_inner, d_state, groups = (uint(header, f"ssm.{key}", 0)
                                        for key in ("conv_kernel", "inner_size", "state_size", "group_count"))
    r = embd * (conv - 1) if conv else max(d_conv - 1, 0) * (d_inner + 2 * groups * d_state)
    return r, d_state * d_inner
