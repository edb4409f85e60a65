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
from typing import Any

import numpy as np

from .tinyarch_specs import ARCHS, BASE, Arch
from .tinymodel import _add_vocabulary, finish

__all__ = ["ARCHS", "BASE", "Arch", "tensor_shapes", "write_tiny_arch"]


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
    return finish(writer, path, split_max_tensors)
