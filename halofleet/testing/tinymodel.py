"""
A tiny llama-architecture GGUF with random weights, for test hosts: llama-server loads it for real and answers
completions (gibberish, but real tokens) in a TCG VM within seconds. Written with the ``gguf`` package from PyPI.

The vocabulary is SentencePiece-style with byte fallback (the 256 ``<0xNN>`` tokens), so any prompt tokenizes.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np

N_EMBD = 64
N_LAYERS = 2
N_HEAD = 4
N_FF = 128
CONTEXT = 512
SPACE = "\u2581"  # SentencePiece's word-boundary marker

# gguf token types (llama.cpp's llama_token_type)
NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{value:02X}>" for value in range(256)]
    types = [UNKNOWN, CONTROL, CONTROL] + [BYTE] * 256
    pieces = [SPACE] + [SPACE + letter for letter in string.ascii_lowercase] + list(string.ascii_lowercase)
    tokens += pieces
    types += [NORMAL] * len(pieces)
    scores = [0.0] * (3 + 256) + [-float(index) for index in range(len(pieces))]
    return tokens, scores, types


def _add_vocabulary(writer) -> None:
    """f32 weights and the byte-fallback SentencePiece vocabulary, as every tiny model here has them."""
    import gguf

    tokens, scores, types = vocabulary()
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)


def finish(writer, path: Path, split_max_tensors: int = 0) -> Path:
    """Write and close ``writer``'s file(s); the path llama-server is given (a split set's first shard)."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if split_max_tensors:
        return sorted(Path(path).parent.glob(f"{Path(path).stem}-00001-of-*.gguf"))[0]
    return path


def write_tiny_llama(path: Path, seed: int = 1151, split_max_tensors: int = 0, n_head: int = N_HEAD) -> Path:
    """
    Write the model to ``path`` (about 0.5 MB) and return it. ``split_max_tensors``: write a split set instead
    (llama.cpp's naming, ``<stem>-00001-of-0000N.gguf`` beside ``path``) and return its first shard. ``n_head`` 2
    gives heads of 32, which quantized KV types (blocks of 32) need.
    """
    import gguf  # test-only dependency: imported here so the product does not need it

    rng = np.random.default_rng(seed)
    n_vocab = len(vocabulary()[0])

    def weights(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama", split_max_tensors=split_max_tensors)
    writer.add_name("halofleet-tiny-test")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYERS)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(N_EMBD // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    _add_vocabulary(writer)

    # numpy shapes are (out, in); gguf stores them reversed, as llama.cpp expects.
    writer.add_tensor("token_embd.weight", weights(n_vocab, N_EMBD))
    for layer in range(N_LAYERS):
        prefix = f"blk.{layer}."
        writer.add_tensor(prefix + "attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(prefix + name + ".weight", weights(N_EMBD, N_EMBD))
        writer.add_tensor(prefix + "ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(prefix + "ffn_gate.weight", weights(N_FF, N_EMBD))
        writer.add_tensor(prefix + "ffn_up.weight", weights(N_FF, N_EMBD))
        writer.add_tensor(prefix + "ffn_down.weight", weights(N_EMBD, N_FF))
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    writer.add_tensor("output.weight", weights(n_vocab, N_EMBD))

    return finish(writer, path, split_max_tensors)


def write_tiny_gemma2(path: Path, seed: int = 1151, window: int = 64) -> Path:
    """
    A tiny gemma2 (4 layers, 2 heads of 32, 1 KV head, sliding window ``window``): llama.cpp gives every other
    layer a sliding-window KV cache, so tests can check that cache's size on a real llama-server.
    """
    import gguf

    rng = np.random.default_rng(seed)
    n_vocab = len(vocabulary()[0])
    layers, heads, kv_heads = 4, 2, 1
    head_dim = N_EMBD // heads

    def weights(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "gemma2")
    writer.add_name("halofleet-tiny-gemma2-test")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_sliding_window(window)
    _add_vocabulary(writer)
    writer.add_tensor("token_embd.weight", weights(n_vocab, N_EMBD))  # also the output (tied)
    for layer in range(layers):
        prefix = f"blk.{layer}."
        for norm in ("attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm"):
            writer.add_tensor(prefix + norm + ".weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(prefix + "attn_q.weight", weights(heads * head_dim, N_EMBD))
        writer.add_tensor(prefix + "attn_k.weight", weights(kv_heads * head_dim, N_EMBD))
        writer.add_tensor(prefix + "attn_v.weight", weights(kv_heads * head_dim, N_EMBD))
        writer.add_tensor(prefix + "attn_output.weight", weights(N_EMBD, heads * head_dim))
        writer.add_tensor(prefix + "ffn_gate.weight", weights(N_FF, N_EMBD))
        writer.add_tensor(prefix + "ffn_up.weight", weights(N_FF, N_EMBD))
        writer.add_tensor(prefix + "ffn_down.weight", weights(N_EMBD, N_FF))
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    return finish(writer, path)


def flip_weights(source: Path, target: Path, tensor: str = "output.weight", count: int = 4) -> Path:
    """
    Copy ``source`` to ``target`` with the top exponent bit of ``count`` f32 weights of ``tensor`` flipped
    (0.02 becomes ~7e36): same name, same size, a few wrong bytes, as silent corruption would leave a file.
    """
    import gguf

    reader = gguf.GGUFReader(str(source))
    found = [item for item in reader.tensors if item.name == tensor]
    if not found:
        raise ValueError(f"{source}: no tensor {tensor}")
    data = bytearray(Path(source).read_bytes())
    start = int(found[0].data_offset)
    stride = max(1, int(found[0].n_elements) // count)
    for index in range(count):
        byte = start + index * stride * 4 + 3  # little-endian f32: sign and top exponent bits in the last byte
        data[byte] ^= 0x40
    Path(target).write_bytes(bytes(data))
    return Path(target)


if __name__ == "__main__":
    import sys

    print(write_tiny_llama(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny.gguf")))
