"""
GGUF files holding only a header (metadata and tensor infos, no tensor data) for real architectures, written with
the ``gguf`` package (the demo extra), so the memory math is checked on the keys and shapes llama.cpp reads.

Every value is the published config of the model, cited beside it; the tensor list follows llama.cpp's tensor
names (gguf-py ``constants.py`` MODEL_TENSORS) with the shapes the HF weights have.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

F32, F16, Q8_0 = 0, 1, 8


def write_header(path: Path, arch: str, metadata: dict, tensors: list[tuple[str, tuple[int, ...], int]]) -> Path:
    """A header-only GGUF: ``metadata`` keys without the ``{arch}.`` prefix where they start with '.'; tensors as
    (name, numpy shape (rows, row length), ggml type)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in metadata.items():
        full = f"{arch}{key}" if key.startswith(".") else key
        if isinstance(value, bool):
            writer.add_bool(full, value)
        elif isinstance(value, int):
            writer.add_uint32(full, value)
        elif isinstance(value, float):
            writer.add_float32(full, value)
        elif isinstance(value, list):
            writer.add_array(full, value)
        else:
            writer.add_string(full, value)
    for name, shape, ggml_type in tensors:
        _, block, size = {F32: ("F32", 1, 4), F16: ("F16", 1, 2), Q8_0: ("Q8_0", 32, 34)}[ggml_type]
        elements = int(np.prod(shape))
        writer.add_tensor_info(name, shape, np.dtype(np.float32), elements // block * size,
                               raw_dtype=gguf.GGMLQuantizationType(ggml_type))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    return path


# Llama-3.1-8B: meta-llama/Llama-3.1-8B config.json: hidden_size 4096, intermediate_size 14336,
# num_hidden_layers 32, num_attention_heads 32, num_key_value_heads 8, vocab_size 128256, rms_norm_eps 1e-05
# (head dim 4096 / 32 = 128); untied output (tie_word_embeddings false).
LLAMA8B = {"hidden": 4096, "ff": 14336, "layers": 32, "heads": 32, "kv_heads": 8, "vocab": 128256}


def llama8b(path: Path, weight_type: int = F16) -> Path:
    c = LLAMA8B
    kv_width = c["kv_heads"] * c["hidden"] // c["heads"]
    tensors = [("token_embd.weight", (c["vocab"], c["hidden"]), weight_type)]
    for il in range(c["layers"]):
        tensors += [(f"blk.{il}.attn_norm.weight", (c["hidden"],), F32),
                    (f"blk.{il}.attn_q.weight", (c["hidden"], c["hidden"]), weight_type),
                    (f"blk.{il}.attn_k.weight", (kv_width, c["hidden"]), weight_type),
                    (f"blk.{il}.attn_v.weight", (kv_width, c["hidden"]), weight_type),
                    (f"blk.{il}.attn_output.weight", (c["hidden"], c["hidden"]), weight_type),
                    (f"blk.{il}.ffn_norm.weight", (c["hidden"],), F32),
                    (f"blk.{il}.ffn_gate.weight", (c["ff"], c["hidden"]), weight_type),
                    (f"blk.{il}.ffn_up.weight", (c["ff"], c["hidden"]), weight_type),
                    (f"blk.{il}.ffn_down.weight", (c["hidden"], c["ff"]), weight_type)]
    tensors += [("output_norm.weight", (c["hidden"],), F32), ("output.weight", (c["vocab"], c["hidden"]),
                                                                weight_type)]
    return write_header(path, "llama", {
        ".context_length": 131072, ".embedding_length": c["hidden"], ".block_count": c["layers"],
        ".feed_forward_length": c["ff"], ".attention.head_count": c["heads"],
        ".attention.head_count_kv": c["kv_heads"], ".rope.dimension_count": c["hidden"] // c["heads"],
        ".attention.layer_norm_rms_epsilon": 1e-5}, tensors)


# gpt-oss-20b: openai/gpt-oss-20b config.json: num_hidden_layers 24, num_attention_heads 64,
# num_key_value_heads 8, head_dim 64, hidden_size 2880, sliding_window 128, layer_types alternating
# "sliding_attention", "full_attention" (sliding first). llama.cpp's converter (GptOssModel) writes the head dim as
# attention.key_length/value_length, since 2880 / 64 = 45 is not it. Only attention tensors here.
GPT_OSS_20B = {"hidden": 2880, "layers": 24, "heads": 64, "kv_heads": 8, "head_dim": 64, "window": 128}


def gpt_oss_20b(path: Path) -> Path:
    c = GPT_OSS_20B
    tensors = []
    for il in range(c["layers"]):
        tensors += [(f"blk.{il}.attn_k.weight", (c["kv_heads"] * c["head_dim"], c["hidden"]), F16),
                    (f"blk.{il}.attn_v.weight", (c["kv_heads"] * c["head_dim"], c["hidden"]), F16)]
    return write_header(path, "gpt-oss", {
        ".context_length": 131072, ".embedding_length": c["hidden"], ".block_count": c["layers"],
        ".attention.head_count": c["heads"], ".attention.head_count_kv": c["kv_heads"],
        ".attention.key_length": c["head_dim"], ".attention.value_length": c["head_dim"],
        ".attention.sliding_window": c["window"], ".expert_count": 32, ".expert_used_count": 4}, tensors)


# Qwen3-30B-A3B: Qwen/Qwen3-30B-A3B config.json: hidden_size 2048, num_attention_heads 32, num_key_value_heads 4,
# head_dim 128 (not 2048 / 32 = 64: the converter writes key_length/value_length), num_hidden_layers 48.
QWEN3_30B = {"hidden": 2048, "layers": 48, "heads": 32, "kv_heads": 4, "head_dim": 128}


def qwen3_30b_a3b(path: Path) -> Path:
    c = QWEN3_30B
    tensors = [(f"blk.{il}.attn_k.weight", (c["kv_heads"] * c["head_dim"], c["hidden"]), F16)
               for il in range(c["layers"])]
    return write_header(path, "qwen3moe", {
        ".context_length": 40960, ".embedding_length": c["hidden"], ".block_count": c["layers"],
        ".attention.head_count": c["heads"], ".attention.head_count_kv": c["kv_heads"],
        ".attention.key_length": c["head_dim"], ".attention.value_length": c["head_dim"],
        ".expert_count": 128, ".expert_used_count": 8}, tensors)


# Mamba-2 2.7B: state-spaces/mamba2-2.7b config.json: d_model 2560, n_layer 64; mamba_ssm's Mamba2 defaults
# d_state 128, d_conv 4, expand 2 (d_inner 5120), ngroups 1. llama.cpp's converter (Mamba2Model) writes them as
# ssm.conv_kernel, ssm.inner_size, ssm.state_size, ssm.group_count.
MAMBA2_27B = {"hidden": 2560, "layers": 64, "d_state": 128, "d_conv": 4, "d_inner": 5120, "groups": 1}


def mamba2_27b(path: Path) -> Path:
    c = MAMBA2_27B
    return write_header(path, "mamba2", {
        ".context_length": 1048576, ".embedding_length": c["hidden"], ".block_count": c["layers"],
        ".attention.head_count": 0, ".ssm.conv_kernel": c["d_conv"], ".ssm.inner_size": c["d_inner"],
        ".ssm.state_size": c["d_state"], ".ssm.group_count": c["groups"]},
        [("blk.0.ssm_norm.weight", (c["d_inner"],), F32)])
