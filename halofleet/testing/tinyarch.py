"""
Tiny random-weight GGUF files of many architectures llama-server 0.7.0 loads, for the memory-plan oracle
(tests/nspawn/test_kvcache_oracle.py). Each :class:`Arch` is the header keys and the tensors with their shapes
(ggml order, innermost first) that forky's llama-server asks for when it loads that architecture -- found by
loading and reading its "missing tensor" / "wrong shape; expected" refusals, not copied from its source.

Dimensions: 64-wide embeddings, heads of 32 (quantized cache types have blocks of 32), 2 to 6 layers, the tiny
byte-fallback vocabulary of :mod:`.tinymodel` (312 tokens).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .tinymodel import _add_vocabulary

BASE: dict[str, Any] = {
    "embedding_length": 64, "context_length": 4096, "feed_forward_length": 128, "attention.head_count": 2,
    "attention.head_count_kv": 1, "attention.layer_norm_rms_epsilon": 1e-6, "attention.layer_norm_epsilon": 1e-5,
    "rope.dimension_count": 32,
}


class Arch(NamedTuple):
    """``hparams``: ``{arch}.KEY`` values; ``tensors``: non-block tensors; ``blocks``: ``(suffix, shape[, layers])``
    of ``blk.N.suffix`` (every layer unless ``layers`` lists them)."""
    hparams: dict[str, Any]
    tensors: dict[str, tuple[int, ...]]
    blocks: list[tuple]


def tensor_shapes(spec: Arch, layout: tuple[int, ...] = (), layers: int | None = None) -> dict[str, tuple[int, ...]]:
    """
    Every tensor name of ``spec`` with its ggml shape, in the order written. ``layout``: block i gets the tensors
    of ``spec``'s block ``layout[i]`` (a hybrid's attention and recurrent blocks in another order); ``layers``:
    that many blocks (default: the spec's block_count).
    """
    shapes = dict(spec.tensors)
    for layer in range(spec.hparams["block_count"] if layers is None else layers):
        template = layout[layer] if layout else layer
        for suffix, shape, *layers in spec.blocks:
            if not layers or template in layers[0]:
                shapes[f"blk.{layer}.{suffix}"] = shape
    return shapes


def write_tiny_arch(path: Path, arch: str, hparams: dict[str, Any] | None = None, seed: int = 1151,
                    name: str | None = None, layout: tuple[int, ...] = (),
                    shapes: dict[str, tuple[int, ...]] | None = None, split_max_tensors: int = 0) -> Path:
    """
    Write ``ARCHS[arch]`` to ``path`` with ``hparams`` over its header keys (a value of None removes the key),
    under the architecture name ``name`` (default: ``arch``; another name makes a file llama.cpp does not know),
    blocks in ``layout`` (see :func:`tensor_shapes`) and ``shapes`` over single tensors' shapes; return ``path``
    (``split_max_tensors``: a split set of that many tensors a file, llama.cpp's naming; its first file).
    """
    import gguf  # test-only dependency, as in tinymodel

    spec = ARCHS[arch]
    name = name or arch
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), name, split_max_tensors=split_max_tensors)
    header = {**spec.hparams, **(hparams or {})}
    for key, value in header.items():
        full = f"{name}.{key}"
        if value is None:
            continue
        if isinstance(value, bool):
            writer.add_bool(full, value)
        elif isinstance(value, int):
            writer.add_uint32(full, value)
        elif isinstance(value, float):
            writer.add_float32(full, value)
        else:
            writer.add_array(full, list(value))
    _add_vocabulary(writer)
    for tensor, shape in {**tensor_shapes(spec, layout, header["block_count"]), **(shapes or {})}.items():
        writer.add_tensor(tensor, (rng.standard_normal(tuple(reversed(shape))) * 0.02).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if split_max_tensors:
        return sorted(Path(path).parent.glob(f"{Path(path).stem}-00001-of-*.gguf"))[0]
    return path


ARCHS: dict[str, Arch] = {
    'cohere2': Arch(
        {**BASE, 'block_count': 4, 'attention.sliding_window': 64, 'logit_scale': 0.5},
        {'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('attn_q.weight', (64, 64)), ('attn_k.weight', (64, 32)),
         ('attn_v.weight', (64, 32)), ('attn_output.weight', (64, 64)), ('ffn_gate.weight', (64, 128)),
         ('ffn_down.weight', (128, 64)), ('ffn_up.weight', (64, 128))]),
    'command-r': Arch(
        {**BASE, 'block_count': 2, 'logit_scale': 0.5},
        {'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('attn_q.weight', (64, 64)), ('attn_k.weight', (64, 32)),
         ('attn_v.weight', (64, 32)), ('attn_output.weight', (64, 64)), ('ffn_gate.weight', (64, 128)),
         ('ffn_down.weight', (128, 64)), ('ffn_up.weight', (64, 128))]),
    'deepseek2': Arch(
        {**BASE, 'rope.dimension_count': 16, 'expert_count': 4, 'expert_used_count': 2,
         'expert_feed_forward_length': 64, 'attention.q_lora_rank': 32, 'block_count': 2,
         'leading_dense_block_count': 1, 'expert_shared_count': 1, 'expert_weights_scale': 1.0,
         'attention.kv_lora_rank': 32, 'attention.key_length': 48, 'attention.value_length': 32,
         'attention.key_length_mla': 48, 'attention.value_length_mla': 32},
        {'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('attn_q_a_norm.weight', (32,)), ('attn_kv_a_norm.weight', (32,)),
         ('attn_q_a.weight', (64, 32)), ('attn_q_b.weight', (32, 96)), ('attn_kv_a_mqa.weight', (64, 48)),
         ('attn_k_b.weight', (32, 32, 2)), ('attn_v_b.weight', (32, 32, 2)), ('attn_output.weight', (64, 64)),
         ('ffn_norm.weight', (64,)), ('ffn_gate.weight', (64, 128), (0,)), ('ffn_down.weight', (128, 64), (0,)),
         ('ffn_up.weight', (64, 128), (0,)), ('ffn_gate_inp.weight', (64, 4), (1,)),
         ('ffn_down_exps.weight', (64, 64, 4), (1,)), ('ffn_gate_exps.weight', (64, 64, 4), (1,)),
         ('ffn_up_exps.weight', (64, 64, 4), (1,)), ('ffn_gate_shexp.weight', (64, 64), (1,)),
         ('ffn_down_shexp.weight', (64, 64), (1,)), ('ffn_up_shexp.weight', (64, 64), (1,))]),
    'exaone': Arch(
        {**BASE, 'block_count': 2},
        {'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('attn_q.weight', (64, 64)), ('attn_k.weight', (64, 32)),
         ('attn_v.weight', (64, 32)), ('attn_output.weight', (64, 64)), ('ffn_norm.weight', (64,)),
         ('ffn_gate.weight', (64, 128)), ('ffn_down.weight', (128, 64)), ('ffn_up.weight', (64, 128))]),
    'exaone4': Arch(
        {**BASE, 'block_count': 4, 'attention.sliding_window': 64},
        {'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_q.weight', (64, 64)), ('attn_k.weight', (64, 32)), ('attn_v.weight', (64, 32)),
         ('attn_output.weight', (64, 64)), ('post_attention_norm.weight', (64,)), ('attn_q_norm.weight', (32,)),
         ('attn_k_norm.weight', (32,)), ('ffn_gate.weight', (64, 128)), ('ffn_down.weight', (128, 64)),
         ('ffn_up.weight', (64, 128)), ('post_ffw_norm.weight', (64,))]),
    'falcon-h1': Arch(
        {**BASE, 'ssm.conv_kernel': 4, 'ssm.inner_size': 128, 'ssm.state_size': 16, 'ssm.time_step_rank': 4,
         'ssm.group_count': 1, 'block_count': 2, 'key_length': 32, 'value_length': 32},
        {'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('ssm_in.weight', (64, 292)), ('ssm_conv1d.weight', (4, 160)), ('ssm_dt.bias', (4,)), ('ssm_a', (1, 4)),
         ('ssm_d', (1, 4)), ('ssm_out.weight', (128, 64)), ('attn_q.weight', (64, 64)), ('attn_k.weight', (64, 32)),
         ('attn_v.weight', (64, 32)), ('attn_output.weight', (64, 64)), ('attn_norm.weight', (64,)),
         ('ffn_norm', (64,)), ('ffn_gate.weight', (64, 128)), ('ffn_down.weight', (128, 64)),
         ('ffn_up.weight', (64, 128)), ('ssm_conv1d.bias', (160,))]),
    'gemma': Arch(
        {**BASE, 'block_count': 2},
        {'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('attn_q.weight', (64, 64)), ('attn_k.weight', (64, 32)),
         ('attn_v.weight', (64, 32)), ('attn_output.weight', (64, 64)), ('ffn_norm.weight', (64,)),
         ('ffn_gate.weight', (64, 128)), ('ffn_up.weight', (64, 128)), ('ffn_down.weight', (128, 64))]),
    'gemma2': Arch(
        {**BASE, 'block_count': 4, 'attention.sliding_window': 64},
        {'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('attn_q.weight', (64, 64)), ('attn_k.weight', (64, 32)),
         ('attn_v.weight', (64, 32)), ('attn_output.weight', (64, 64)), ('post_attention_norm.weight', (64,)),
         ('ffn_norm.weight', (64,)), ('ffn_gate.weight', (64, 128)), ('ffn_up.weight', (64, 128)),
         ('ffn_down.weight', (128, 64)), ('post_ffw_norm.weight', (64,))]),
    'gemma3': Arch(
        {**BASE, 'block_count': 6, 'attention.sliding_window': 64},
        {'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('attn_q.weight', (64, 64)), ('attn_k.weight', (64, 32)),
         ('attn_v.weight', (64, 32)), ('attn_output.weight', (64, 64)), ('post_attention_norm.weight', (64,)),
         ('attn_k_norm.weight', (32,)), ('attn_q_norm.weight', (32,)), ('ffn_norm.weight', (64,)),
         ('ffn_gate.weight', (64, 128)), ('ffn_up.weight', (64, 128)), ('ffn_down.weight', (128, 64)),
         ('post_ffw_norm.weight', (64,))]),
    'gemma4': Arch(
        {**BASE, 'block_count': 6, 'attention.sliding_window': 64, 'attention.sliding_window_pattern': [True,
         True, False, True, True, False], 'attention.key_length': 64, 'attention.value_length': 64,
         'attention.key_length_swa': 32, 'attention.value_length_swa': 32, 'rope.dimension_count_swa': 32,
         'embedding_length_per_layer_input': 0},
        {'output_norm.weight': (64,), 'rope_freqs.weight': (32,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('attn_q.weight', (64, 64), (0, 1, 3, 4)),
         ('attn_k.weight', (64, 32), (0, 1, 3, 4)), ('attn_output.weight', (64, 64), (0, 1, 3, 4)),
         ('attn_q_norm.weight', (32,), (0, 1, 3, 4)), ('attn_k_norm.weight', (32,), (0, 1, 3, 4)),
         ('post_attention_norm.weight', (64,)), ('ffn_norm.weight', (64,)), ('ffn_gate.weight', (64, 128)),
         ('ffn_up.weight', (64, 128)), ('ffn_down.weight', (128, 64)), ('post_ffw_norm.weight', (64,)),
         ('attn_q.weight', (64, 128), (2, 5)), ('attn_k.weight', (64, 64), (2, 5)),
         ('attn_output.weight', (128, 64), (2, 5)), ('attn_q_norm.weight', (64,), (2, 5)),
         ('attn_k_norm.weight', (64,), (2, 5))]),
    'glm4': Arch(
        {**BASE, 'block_count': 2},
        {'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('attn_q.weight', (64, 64)), ('attn_k.weight', (64, 32)),
         ('attn_v.weight', (64, 32)), ('attn_output.weight', (64, 64)), ('post_attention_norm.weight', (64,)),
         ('ffn_norm.weight', (64,)), ('ffn_down.weight', (128, 64)), ('ffn_up.weight', (64, 256)),
         ('post_ffw_norm.weight', (64,))]),
    'glm4moe': Arch(
        {**BASE, 'expert_count': 4, 'expert_used_count': 2, 'expert_feed_forward_length': 64, 'block_count':
         3, 'leading_dense_block_count': 1, 'expert_shared_count': 1, 'nextn_predict_layers': 1},
        {'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('attn_q.weight', (64, 64)), ('attn_k.weight', (64, 32)),
         ('attn_v.weight', (64, 32)), ('attn_q.bias', (64,)), ('attn_k.bias', (32,)), ('attn_v.bias', (32,)),
         ('attn_output.weight', (64, 64)), ('post_attention_norm.weight', (64,)),
         ('ffn_gate.weight', (64, 128), (0,)), ('ffn_down.weight', (128, 64), (0,)),
         ('ffn_up.weight', (64, 128), (0,)), ('ffn_gate_inp.weight', (64, 4), (1, 2)),
         ('exp_probs_b.bias', (4,), (1, 2)), ('ffn_gate_exps.weight', (64, 64, 4), (1, 2)),
         ('ffn_down_exps.weight', (64, 64, 4), (1, 2)), ('ffn_up_exps.weight', (64, 64, 4), (1, 2)),
         ('ffn_gate_shexp.weight', (64, 64), (1, 2)), ('ffn_down_shexp.weight', (64, 64), (1, 2)),
         ('ffn_up_shexp.weight', (64, 64), (1, 2)), ('nextn.eh_proj.weight', (128, 64), (2,)),
         ('nextn.enorm.weight', (64,), (2,)), ('nextn.hnorm.weight', (64,), (2,)),
         ('nextn.shared_head_norm.weight', (64,), (2,))]),
    'gpt-oss': Arch(
        {**BASE, 'expert_count': 4, 'expert_used_count': 2, 'expert_feed_forward_length': 64, 'block_count':
         2, 'attention.sliding_window': 64, 'attention.key_length': 32, 'attention.value_length': 32},
        {'output.weight': (64, 312), 'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('post_attention_norm.weight', (64,)), ('attn_q.weight', (64, 64)),
         ('attn_k.weight', (64, 32)), ('attn_v.weight', (64, 32)), ('attn_output.weight', (64, 64)),
         ('attn_sinks.weight', (2,)), ('ffn_gate_inp.weight', (64, 4)), ('ffn_gate_exps.weight', (64, 64, 4)),
         ('ffn_down_exps.weight', (64, 64, 4)), ('ffn_up_exps.weight', (64, 64, 4)), ('attn_output.bias', (64,)),
         ('ffn_gate_inp.bias', (4,)), ('ffn_gate_exps.bias', (64, 4)), ('ffn_down_exps.bias', (64, 4)),
         ('ffn_up_exps.bias', (64, 4))]),
    'granite': Arch(
        {**BASE, 'block_count': 2, 'attention.scale': 0.1, 'embedding_scale': 12.0, 'residual_scale': 0.2,
         'logit_scale': 8.0},
        {'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('attn_q.weight', (64, 64)), ('attn_k.weight', (64, 32)),
         ('attn_v.weight', (64, 32)), ('attn_output.weight', (64, 64)), ('ffn_norm.weight', (64,)),
         ('ffn_gate.weight', (64, 128)), ('ffn_down.weight', (128, 64)), ('ffn_up.weight', (64, 128))]),
    'granitehybrid': Arch(
        {**BASE, 'attention.head_count_kv': [0, 1, 0, 1], 'ssm.conv_kernel': 4, 'ssm.inner_size': 128,
         'ssm.state_size': 16, 'ssm.time_step_rank': 4, 'ssm.group_count': 1, 'block_count': 4,
         'attention.scale': 0.1, 'embedding_scale': 12.0, 'residual_scale': 0.2, 'logit_scale': 8.0},
        {'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('ssm_in.weight', (64, 292), (0, 2)), ('ssm_conv1d.weight', (4, 160), (0, 2)),
         ('ssm_dt.bias', (4,), (0, 2)), ('ssm_a', (1, 4), (0, 2)), ('ssm_d', (1, 4), (0, 2)),
         ('ssm_norm.weight', (128,), (0, 2)), ('ssm_out.weight', (128, 64), (0, 2)), ('ffn_norm.weight', (64,)),
         ('ffn_gate.weight', (64, 128)), ('ffn_down.weight', (128, 64)), ('ffn_up.weight', (64, 128)),
         ('attn_q.weight', (64, 64), (1, 3)), ('attn_k.weight', (64, 32), (1, 3)),
         ('attn_v.weight', (64, 32), (1, 3)), ('attn_output.weight', (64, 64), (1, 3)),
         ('ssm_conv1d.bias', (160,), (0, 2))]),
    'granitemoe': Arch(
        {**BASE, 'expert_count': 4, 'expert_used_count': 2, 'expert_feed_forward_length': 64, 'block_count':
         2, 'attention.scale': 0.1, 'embedding_scale': 12.0, 'residual_scale': 0.2, 'logit_scale': 8.0},
        {'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('attn_q.weight', (64, 64)), ('attn_k.weight', (64, 32)),
         ('attn_v.weight', (64, 32)), ('attn_output.weight', (64, 64)), ('ffn_norm.weight', (64,)),
         ('ffn_gate_inp.weight', (64, 4)), ('ffn_down_exps.weight', (128, 64, 4)),
         ('ffn_up_exps.weight', (64, 128, 4))]),
    'internlm2': Arch(
        {**BASE, 'block_count': 2},
        {'output.weight': (64, 312), 'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('attn_q.weight', (64, 64)), ('attn_k.weight', (64, 32)),
         ('attn_v.weight', (64, 32)), ('attn_output.weight', (64, 64)), ('ffn_norm.weight', (64,)),
         ('ffn_gate.weight', (64, 128)), ('ffn_down.weight', (128, 64)), ('ffn_up.weight', (64, 128))]),
    'jamba': Arch(
        {**BASE, 'attention.head_count_kv': [0, 1, 0, 1], 'ssm.conv_kernel': 4, 'ssm.inner_size': 128,
         'ssm.state_size': 16, 'ssm.time_step_rank': 4, 'ssm.group_count': 1, 'block_count': 4},
        {'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('ssm_in.weight', (64, 256), (0, 2)), ('ssm_conv1d.weight', (4, 128), (0, 2)),
         ('ssm_conv1d.bias', (128,), (0, 2)), ('ssm_x.weight', (128, 36), (0, 2)),
         ('ssm_dt_norm.weight', (4,), (0, 2)), ('ssm_dt.weight', (4, 128), (0, 2)), ('ssm_dt.bias', (128,), (0, 2)),
         ('ssm_b_norm.weight', (16,), (0, 2)), ('ssm_c_norm.weight', (16,), (0, 2)), ('ssm_a', (16, 128), (0, 2)),
         ('ssm_d', (128,), (0, 2)), ('ssm_out.weight', (128, 64), (0, 2)), ('ffn_norm.weight', (64,)),
         ('ffn_gate.weight', (64, 128)), ('ffn_down.weight', (128, 64)), ('ffn_up.weight', (64, 128)),
         ('attn_q.weight', (64, 64), (1, 3)), ('attn_k.weight', (64, 32), (1, 3)),
         ('attn_v.weight', (64, 32), (1, 3)), ('attn_output.weight', (64, 64), (1, 3))]),
    'lfm2': Arch(
        {**BASE, 'attention.head_count_kv': [0, 1, 0, 1], 'block_count': 4, 'shortconv.l_cache': 3},
        {'token_embd.weight': (64, 312), 'token_embd_norm.weight': (64,)},
        [('ffn_norm.weight', (64,)), ('ffn_gate.weight', (64, 128)), ('ffn_down.weight', (128, 64)),
         ('ffn_up.weight', (64, 128)), ('attn_norm.weight', (64,)), ('shortconv.conv.weight', (3, 64), (0, 2)),
         ('shortconv.in_proj.weight', (64, 192), (0, 2)), ('shortconv.out_proj.weight', (64, 64), (0, 2)),
         ('attn_q_norm.weight', (32,), (1, 3)), ('attn_k_norm.weight', (32,), (1, 3)),
         ('attn_q.weight', (64, 64), (1, 3)), ('attn_k.weight', (64, 32), (1, 3)),
         ('attn_v.weight', (64, 32), (1, 3)), ('attn_output.weight', (64, 64), (1, 3))]),
    'llama': Arch(
        {**BASE, 'block_count': 2},
        {'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('attn_q.weight', (64, 64)), ('attn_k.weight', (64, 32)),
         ('attn_v.weight', (64, 32)), ('attn_output.weight', (64, 64)), ('ffn_norm.weight', (64,)),
         ('ffn_gate.weight', (64, 128)), ('ffn_down.weight', (128, 64)), ('ffn_up.weight', (64, 128))]),
    'mamba': Arch(
        {'ssm.conv_kernel': 4, 'ssm.inner_size': 128, 'ssm.state_size': 16, 'ssm.time_step_rank': 4,
         'ssm.group_count': 1, 'embedding_length': 64, 'context_length': 4096, 'block_count': 2,
         'attention.layer_norm_rms_epsilon': 1e-05},
        {'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('ssm_in.weight', (64, 256)), ('ssm_conv1d.weight', (4, 128)),
         ('ssm_conv1d.bias', (128,)), ('ssm_x.weight', (128, 36)), ('ssm_dt.weight', (4, 128)),
         ('ssm_dt.bias', (128,)), ('ssm_a', (16, 128)), ('ssm_d', (128,)), ('ssm_out.weight', (128, 64))]),
    'mamba2': Arch(
        {'ssm.conv_kernel': 4, 'ssm.inner_size': 128, 'ssm.state_size': 16, 'ssm.time_step_rank': 4,
         'ssm.group_count': 1, 'embedding_length': 64, 'context_length': 4096, 'block_count': 2,
         'attention.layer_norm_rms_epsilon': 1e-05},
        {'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('ssm_in.weight', (64, 292)), ('ssm_conv1d.weight', (4, 160)),
         ('ssm_conv1d.bias', (160,)), ('ssm_dt.bias', (4,)), ('ssm_a', (1, 4)), ('ssm_d', (1, 4)),
         ('ssm_norm.weight', (128,)), ('ssm_out.weight', (128, 64))]),
    'mistral3': Arch(
        {**BASE, 'block_count': 2},
        {'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('attn_q.weight', (64, 64)), ('attn_k.weight', (64, 32)),
         ('attn_v.weight', (64, 32)), ('attn_output.weight', (64, 64)), ('ffn_norm.weight', (64,)),
         ('ffn_gate.weight', (64, 128)), ('ffn_down.weight', (128, 64)), ('ffn_up.weight', (64, 128))]),
    'nemotron_h': Arch(
        {**BASE, 'feed_forward_length': [0, 0, 128, 0], 'attention.head_count_kv': [0, 1, 0, 0],
         'ssm.conv_kernel': 4, 'ssm.inner_size': 128, 'ssm.state_size': 16, 'ssm.time_step_rank': 4,
         'ssm.group_count': 1, 'block_count': 4},
        {'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('ssm_in.weight', (64, 292), (0, 3)), ('ssm_conv1d.weight', (4, 160), (0, 3)),
         ('ssm_dt.bias', (4,), (0, 3)), ('ssm_a', (1, 4), (0, 3)), ('ssm_d', (1, 4), (0, 3)),
         ('ssm_norm.weight', (128,), (0, 3)), ('ssm_out.weight', (128, 64), (0, 3)),
         ('attn_q.weight', (64, 64), (1,)), ('attn_k.weight', (64, 32), (1,)), ('attn_v.weight', (64, 32), (1,)),
         ('attn_output.weight', (64, 64), (1,)), ('ffn_down.weight', (128, 64), (2,)),
         ('ffn_up.weight', (64, 128), (2,)), ('ssm_conv1d.bias', (160,), (0, 3))]),
    'olmo2': Arch(
        {**BASE, 'block_count': 2},
        {'output.weight': (64, 312), 'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_q.weight', (64, 64)), ('attn_k.weight', (64, 32)), ('attn_v.weight', (64, 32)),
         ('attn_output.weight', (64, 64)), ('attn_q_norm.weight', (64,)), ('attn_k_norm.weight', (32,)),
         ('post_attention_norm.weight', (64,)), ('ffn_gate.weight', (64, 128)), ('ffn_up.weight', (64, 128)),
         ('ffn_down.weight', (128, 64)), ('post_ffw_norm.weight', (64,))]),
    'phi2': Arch(
        {**BASE, 'attention.head_count_kv': 2, 'block_count': 2},
        {'output.bias': (312,),
         'output.weight': (64, 312),
         'output_norm.bias': (64,),
         'output_norm.weight': (64,),
         'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('attn_norm.bias', (64,)), ('attn_q.weight', (64, 64)),
         ('attn_k.weight', (64, 64)), ('attn_v.weight', (64, 64)), ('attn_output.weight', (64, 64)),
         ('attn_output.bias', (64,)), ('ffn_down.weight', (128, 64)), ('ffn_down.bias', (64,)),
         ('ffn_up.weight', (64, 128)), ('ffn_up.bias', (128,))]),
    'phi3': Arch(
        {**BASE, 'block_count': 2},
        {'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('attn_output.weight', (64, 64)), ('ffn_norm.weight', (64,)),
         ('ffn_down.weight', (128, 64)), ('ffn_up.weight', (64, 256)), ('attn_qkv.weight', (64, 128))]),
    'qwen2': Arch(
        {**BASE, 'block_count': 2},
        {'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('attn_q.weight', (64, 64)), ('attn_k.weight', (64, 32)),
         ('attn_v.weight', (64, 32)), ('attn_output.weight', (64, 64)), ('ffn_norm.weight', (64,)),
         ('ffn_gate.weight', (64, 128)), ('ffn_down.weight', (128, 64)), ('ffn_up.weight', (64, 128))]),
    'qwen2moe': Arch(
        {**BASE, 'expert_count': 4, 'expert_used_count': 2, 'expert_feed_forward_length': 64,
         'expert_shared_feed_forward_length': 64, 'block_count': 2},
        {'output.weight': (64, 312), 'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('attn_q.weight', (64, 64)), ('attn_k.weight', (64, 32)),
         ('attn_v.weight', (64, 32)), ('attn_output.weight', (64, 64)), ('ffn_norm.weight', (64,)),
         ('ffn_gate_inp.weight', (64, 4)), ('ffn_gate_exps.weight', (64, 64, 4)),
         ('ffn_down_exps.weight', (64, 64, 4)), ('ffn_up_exps.weight', (64, 64, 4)),
         ('ffn_gate_inp_shexp.weight', (64,)), ('ffn_gate_shexp.weight', (64, 64)),
         ('ffn_down_shexp.weight', (64, 64)), ('ffn_up_shexp.weight', (64, 64))]),
    'qwen3': Arch(
        {**BASE, 'block_count': 2},
        {'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('attn_q.weight', (64, 64)), ('attn_k.weight', (64, 32)),
         ('attn_v.weight', (64, 32)), ('attn_output.weight', (64, 64)), ('attn_k_norm.weight', (32,)),
         ('attn_q_norm.weight', (32,)), ('ffn_norm.weight', (64,)), ('ffn_gate.weight', (64, 128)),
         ('ffn_down.weight', (128, 64)), ('ffn_up.weight', (64, 128))]),
    'qwen35': Arch(
        {**BASE, 'rope.dimension_count': 16, 'rope.dimension_sections': [4, 4, 4, 4], 'block_count': 4,
         'attention.key_length': 32, 'attention.value_length': 32, 'ssm.conv_kernel': 4, 'ssm.inner_size':
         128, 'ssm.state_size': 32, 'ssm.time_step_rank': 4, 'ssm.group_count': 2, 'full_attention_interval':
         4},
        {'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('post_attention_norm.weight', (64,)),
         ('ssm_conv1d.weight', (4, 256), (0, 1, 2)), ('ssm_dt.bias', (4,), (0, 1, 2)), ('ssm_a', (4,), (0, 1, 2)),
         ('ssm_beta.weight', (64, 4), (0, 1, 2)), ('ssm_alpha.weight', (64, 4), (0, 1, 2)),
         ('ssm_norm.weight', (32,), (0, 1, 2)), ('ssm_out.weight', (128, 64), (0, 1, 2)),
         ('ffn_gate.weight', (64, 128)), ('ffn_down.weight', (128, 64)), ('ffn_up.weight', (64, 128)),
         ('attn_q.weight', (64, 128), (3,)), ('attn_k.weight', (64, 32), (3,)), ('attn_v.weight', (64, 32), (3,)),
         ('attn_output.weight', (64, 64), (3,)), ('attn_q_norm.weight', (32,), (3,)),
         ('attn_k_norm.weight', (32,), (3,)), ('attn_qkv.weight', (64, 256), (0, 1, 2)),
         ('attn_gate.weight', (64, 128), (0, 1, 2))]),
    'qwen3moe': Arch(
        {**BASE, 'expert_count': 4, 'expert_used_count': 2, 'expert_feed_forward_length': 64, 'block_count':
         2},
        {'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('attn_q.weight', (64, 64)), ('attn_k.weight', (64, 32)),
         ('attn_v.weight', (64, 32)), ('attn_output.weight', (64, 64)), ('attn_k_norm.weight', (32,)),
         ('attn_q_norm.weight', (32,)), ('ffn_norm.weight', (64,)), ('ffn_gate_inp.weight', (64, 4)),
         ('ffn_gate_exps.weight', (64, 64, 4)), ('ffn_down_exps.weight', (64, 64, 4)),
         ('ffn_up_exps.weight', (64, 64, 4))]),
    'qwen3next': Arch(
        {**BASE, 'expert_count': 4, 'expert_used_count': 2, 'expert_feed_forward_length': 64,
         'expert_shared_feed_forward_length': 64, 'block_count': 4, 'attention.key_length': 32,
         'attention.value_length': 32, 'ssm.conv_kernel': 4, 'ssm.inner_size': 128, 'ssm.state_size': 32,
         'ssm.time_step_rank': 4, 'ssm.group_count': 2, 'full_attention_interval': 4},
        {'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('post_attention_norm.weight', (64,)),
         ('ssm_conv1d.weight', (4, 256), (0, 1, 2)), ('ssm_dt.bias', (4,), (0, 1, 2)), ('ssm_a', (4,), (0, 1, 2)),
         ('ssm_ba.weight', (64, 8), (0, 1, 2)), ('ssm_norm.weight', (32,), (0, 1, 2)),
         ('ssm_out.weight', (128, 64), (0, 1, 2)), ('ffn_gate_inp.weight', (64, 4)),
         ('ffn_down_exps.weight', (64, 64, 4)), ('ffn_gate_exps.weight', (64, 64, 4)),
         ('ffn_up_exps.weight', (64, 64, 4)), ('ffn_gate_inp_shexp.weight', (64,)),
         ('ffn_gate_shexp.weight', (64, 64)), ('ffn_up_shexp.weight', (64, 64)), ('ffn_down_shexp.weight', (64, 64)),
         ('attn_q.weight', (64, 128), (3,)), ('attn_k.weight', (64, 32), (3,)), ('attn_v.weight', (64, 32), (3,)),
         ('attn_output.weight', (64, 64), (3,)), ('attn_q_norm.weight', (32,), (3,)),
         ('attn_k_norm.weight', (32,), (3,)), ('attn_qkv.weight', (64, 256), (0, 1, 2)),
         ('attn_gate.weight', (64, 128), (0, 1, 2))]),
    'rwkv7': Arch(
        {'embedding_length': 64, 'context_length': 4096, 'block_count': 2, 'feed_forward_length': 128,
         'attention.layer_norm_epsilon': 1e-05, 'wkv.head_size': 32, 'attention.decay_lora_rank': 32,
         'attention.iclr_lora_rank': 32, 'attention.value_residual_mix_lora_rank': 32,
         'attention.gate_lora_rank': 32},
        {'output.weight': (64, 312),
         'output_norm.bias': (64,),
         'output_norm.weight': (64,),
         'token_embd.weight': (64, 312),
         'token_embd_norm.bias': (64,),
         'token_embd_norm.weight': (64,)},
        [('attn_norm.weight', (64,)), ('attn_norm.bias', (64,)), ('attn_norm_2.weight', (64,)),
         ('attn_norm_2.bias', (64,)), ('time_mix_w0.weight', (64,)), ('time_mix_w1.weight', (64, 32)),
         ('time_mix_w2.weight', (32, 64)), ('time_mix_a0.weight', (64,)), ('time_mix_a1.weight', (64, 32)),
         ('time_mix_a2.weight', (32, 64)), ('time_mix_v0.weight', (64,)), ('time_mix_v1.weight', (64, 32)),
         ('time_mix_v2.weight', (32, 64)), ('time_mix_g1.weight', (64, 32)), ('time_mix_g2.weight', (32, 64)),
         ('time_mix_lerp_fused.weight', (64, 1, 1, 6)), ('time_mix_k_k.weight', (64,)),
         ('time_mix_k_a.weight', (64,)), ('time_mix_r_k.weight', (64,)), ('time_mix_key.weight', (64, 64)),
         ('time_mix_value.weight', (64, 64)), ('time_mix_receptance.weight', (64, 64)), ('time_mix_ln.weight', (64,)),
         ('time_mix_ln.bias', (64,)), ('time_mix_output.weight', (64, 64)), ('channel_mix_lerp_k.weight', (64,)),
         ('channel_mix_key.weight', (64, 128)), ('channel_mix_value.weight', (128, 64))]),
    'smollm3': Arch(
        {**BASE, 'block_count': 4},
        {'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('attn_q.weight', (64, 64)), ('attn_k.weight', (64, 32)),
         ('attn_v.weight', (64, 32)), ('attn_output.weight', (64, 64)), ('ffn_norm.weight', (64,)),
         ('ffn_gate.weight', (64, 128)), ('ffn_down.weight', (128, 64)), ('ffn_up.weight', (64, 128))]),
    'stablelm': Arch(
        {**BASE, 'block_count': 2},
        {'output.weight': (64, 312),
         'output_norm.bias': (64,),
         'output_norm.weight': (64,),
         'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('attn_norm.bias', (64,)), ('attn_q.weight', (64, 64)),
         ('attn_k.weight', (64, 32)), ('attn_v.weight', (64, 32)), ('attn_output.weight', (64, 64)),
         ('ffn_gate.weight', (64, 128)), ('ffn_down.weight', (128, 64)), ('ffn_up.weight', (64, 128))]),
    'starcoder2': Arch(
        {**BASE, 'block_count': 2},
        {'output_norm.bias': (64,), 'output_norm.weight': (64,), 'token_embd.weight': (64, 312)},
        [('attn_norm.weight', (64,)), ('attn_norm.bias', (64,)), ('attn_q.weight', (64, 64)),
         ('attn_k.weight', (64, 32)), ('attn_v.weight', (64, 32)), ('attn_output.weight', (64, 64)),
         ('attn_output.bias', (64,)), ('ffn_norm.weight', (64,)), ('ffn_norm.bias', (64,)),
         ('ffn_down.weight', (128, 64)), ('ffn_up.weight', (64, 128)), ('ffn_down.bias', (64,)),
         ('ffn_up.bias', (128,))]),
}
