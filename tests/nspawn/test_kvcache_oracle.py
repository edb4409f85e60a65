"""
The memory plan against its oracle, for every architecture halofleet/testing/tinyarch.py can write: one container,
one tiny GGUF per architecture, llama-server started many times in a row (short-lived: until it listens or
refuses) with the flags the unit would pass (box.serving._llama_args), and every cache and model buffer it reports
compared with kvcache.need_of_file for the same host data. Equal to llama-server's printed figure (MiB with two
decimals, as llama.cpp prints it) and to its cell, layer and sequence counts, or the case fails; a case
llama-server refuses must be refused by halofleet too.
"""

from __future__ import annotations

import re
import shlex
from collections import Counter
from pathlib import Path

import pytest

from halofleet.box.serving import LLAMA_NO_MMAP_ENVIRONMENT, _llama_args
from halofleet.contract.config import ConfigError, HaloConfig, check_rules, coerce_keys
from halofleet.models.kvcache import EngineFlags, KVError, need_of_file
from halofleet.testing import nspawn
from halofleet.testing.tinyarch import ARCHS, write_tiny_arch

from .conftest import TIER_DATA

pytestmark = pytest.mark.nspawn

MIB = 1024 * 1024
# llama_kv_cache (llama-kv-cache.cpp) and llama_memory_recurrent (llama-memory-recurrent.cpp) size lines
KV_LINE = re.compile(r"llama_kv_cache: size = +([\d.]+) MiB \( *(\d+) cells, +(\d+) layers, +(\d+)/(\d+) seqs\), "
                     r"K \((\w+)\): +([\d.]+) MiB, V \((\w+)\): +([\d.]+) MiB")
RS_LINE = re.compile(r"llama_memory_recurrent: size = +([\d.]+) MiB \( *(\d+) cells, +(\d+) layers, "
                     r"+(\d+) seqs[^)]*\), R \(f32\): +([\d.]+) MiB, S \(f32\): +([\d.]+) MiB"
                     r"(?:, P \(f32\): +([\d.]+) MiB)?")
MODEL_LINE = re.compile(r"load_tensors: +(\S+) model buffer size = +([\d.]+) MiB")
# The host data of each case, cycled over the architectures: context, slots, cache types and the memory flags.
VARIANTS = [
    {"halo_ctx": 4096},
    {"halo_ctx": 3000, "halo_llama_parallel": 3, "halo_llama_kv_type": "q8_0", "halo_llama_kv_type_v": "q4_0"},
    {"halo_ctx": 2048, "halo_llama_parallel": 2, "halo_llama_kv_unified": True, "halo_llama_flash_attn": "off",
     "halo_llama_ubatch": 256},
    {"halo_ctx": 20000, "halo_llama_parallel": 2, "halo_llama_swa_full": True, "halo_llama_kv_type": "bf16"},
    {"halo_ctx": 1024, "halo_llama_parallel": 4, "halo_llama_kv_type": "q4_0", "halo_llama_kv_type_v": "f32",
     "halo_llama_flash_attn": "off"},
]
# Header variants: (file stem, architecture, header keys over tinyarch's, architecture name written, host data)
# Header variants: (file stem, architecture, write_tiny_arch's keyword arguments, host data)
HEADER_CASES = [
    ("gemma3-period3", "gemma3", {"hparams": {"attention.sliding_window_pattern": 3}}, {"halo_ctx": 4096}),
    ("gemma3-list", "gemma3", {"hparams": {"attention.sliding_window_pattern": [True, False, True, True, True,
                                                                               False]}},
     {"halo_ctx": 2048, "halo_llama_parallel": 2}),
    ("gemma2-list", "gemma2", {"hparams": {"attention.sliding_window_pattern": [False, True, True, True]}},
     {"halo_ctx": 4096}),
    ("qwen3next-interval2", "qwen3next", {"hparams": {"full_attention_interval": 2}, "layout": (0, 3, 0, 3)},
     {"halo_ctx": 4096, "halo_llama_parallel": 2}),
    ("qwen3next-list", "qwen3next", {"hparams": {"full_attention_interval": [False, True, False, True]},
                                     "layout": (0, 3, 0, 3)}, {"halo_ctx": 4096}),
    ("qwen3next-recurrent-list", "qwen3next", {"hparams": {"attention.recurrent_layers": [True, False, True, False]},
                                     "layout": (0, 3, 0, 3)}, {"halo_ctx": 4096}),
    ("qwen35-interval2", "qwen35", {"hparams": {"full_attention_interval": 2}, "layout": (0, 3, 0, 3)},
     {"halo_ctx": 4096}),
    ("llama-kv-per-layer", "llama", {"hparams": {"attention.head_count_kv": [1, 1]}}, {"halo_ctx": 4096}),
    ("llama-kv-per-layer-differ", "llama",
     {"hparams": {"attention.head_count_kv": [1, 2]},
      "shapes": {"blk.1.attn_k.weight": (64, 64), "blk.1.attn_v.weight": (64, 64)}}, {"halo_ctx": 4096}),
    ("unknown-arch", "llama", {"name": "halofleet-unknown"}, {"halo_ctx": 4096}),
    ("mla-mixed-cache-types", "deepseek2", {}, {"halo_ctx": 2048, "halo_llama_kv_type": "bf16",
                                                "halo_llama_kv_type_v": "f16"}),
    ("quantized-v-without-fa", "llama", {}, {"halo_ctx": 2048, "halo_llama_kv_type": "q8_0",
                                             "halo_llama_flash_attn": "off"}),
]
MODEL_DIR = "/srv/oracle"


def mib(value: int) -> str:
    """A byte count as llama.cpp prints it (``%.2f MiB``)."""
    return f"{value / MIB:.2f}"


def allocated(log: str) -> dict | None:
    """What the last model load of ``log`` allocated (None: llama-server refused the model)."""
    if "listening on http" not in log:
        assert "exiting due to model loading error" in log, f"llama-server neither loaded nor refused:\n{log[-2000:]}"
        return None
    last = log[log.rindex("load_tensors: loading model tensors"):]  # -fit sizes a first, dry load
    return {
        "kv": sorted((int(cells), int(layers), int(streams), k_type, k, v_type, v)
                     for _, cells, layers, _, streams, k_type, k, v_type, v in KV_LINE.findall(last)),
        "recurrent": sorted((int(cells), int(layers), r, s, p or "0.00") for _, cells, layers, _, r, s, p in
                            RS_LINE.findall(last)),
        "weights": f"{sum(float(size) for _, size in MODEL_LINE.findall(last)):.2f}",
    }


def predicted(need) -> dict:
    return {
        "kv": sorted((cache.cells, cache.layers, cache.streams, cache.type_k, mib(cache.k_bytes), cache.type_v,
                      mib(cache.v_bytes)) for cache in need.caches if cache.kind != "recurrent"),
        "recurrent": sorted((cache.cells, cache.layers, mib(cache.k_bytes), mib(cache.v_bytes), "0.00")
                            for cache in need.caches if cache.kind == "recurrent"),
        "weights": mib(need.weights),
    }


# Architectures whose memory has more than one part (sliding window, recurrent state, MLA, MTP): every variant
ALL_VARIANTS = {"deepseek2", "falcon-h1", "gemma2", "gemma3", "gemma3n", "gemma4", "glm4moe", "gpt-oss",
                "granitehybrid", "jamba", "lfm2", "lfm2moe", "mamba2", "nemotron_h", "plamo2", "qwen35", "qwen35moe",
                "qwen3next", "rwkv6", "rwkv7"}


def cases() -> list[tuple[str, str, str, dict]]:
    """(case name, file stem, architecture, host data) of every case; each case its own port (no start waits for
    the previous one to let go of it). Three variants an architecture, cycling; all of them for ALL_VARIANTS."""
    listed = [(f"{arch}-{index}", arch, arch, VARIANTS[(index + offset) % len(VARIANTS)])
              for offset, arch in enumerate(sorted(ARCHS))
              for index in range(len(VARIANTS) if arch in ALL_VARIANTS else 3)] + \
        [(stem, stem, arch, data) for stem, arch, _, data in HEADER_CASES]
    return [(name, stem, arch, {**data, "halo_port": 20000 + number})
            for number, (name, stem, arch, data) in enumerate(listed)]


def write_models(directory: Path) -> None:
    for arch in ARCHS:
        write_tiny_arch(directory / f"{arch}.gguf", arch)
    for stem, arch, options, _ in HEADER_CASES:
        write_tiny_arch(directory / f"{stem}.gguf", arch, **options)


def config_of(data: dict, rules: bool = True) -> HaloConfig:
    """The host's config; ``rules=False``: without the rules between keys (to start llama-server on data that
    halofleet refuses, and see that llama-server refuses it too)."""
    # -v: llama-server logs its allocations at info level only when verbose
    values = coerce_keys("oracle", {**TIER_DATA, "halo_model": "/x.gguf", "halo_llama_args": ["-v"], **data})
    return check_rules("oracle", values) if rules else HaloConfig("oracle", values)


def runner_script(commands: dict[str, list[str]]) -> str:
    """One shell script that starts llama-server once per case, each until it listens or exits, one at a time."""
    env = " ".join(f"{key}={value}" for key, value in LLAMA_NO_MMAP_ENVIRONMENT.items())
    lines = ["set -u"]
    for name, args in commands.items():
        log = f"{MODEL_DIR}/{name}.log"
        lines += [f"env {env} llama-server {shlex.join(args)} >{log} 2>&1 & pid=$!",
                  f"for i in $(seq 1200); do grep -q 'listening on http' {log} 2>/dev/null && break; "
                  "kill -0 $pid 2>/dev/null || break; sleep 0.1; done",
                  "kill $pid 2>/dev/null; wait $pid 2>/dev/null"]
    return "\n".join(lines + ["true  # each case's log is the result, not the last kill's status"]) + "\n"


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """Every case's llama-server log, from one container."""
    workdir = tmp_path_factory.mktemp("oracle")
    with nspawn.Network(workdir / "net") as net:
        (box,) = net.boot(["oracle"])
        models = box.directory / "merged" / MODEL_DIR.lstrip("/")  # the container's own filesystem (overlay)
        models.mkdir(parents=True)
        write_models(models)
        commands = {name: _llama_args(config_of(data, rules=False), f"{MODEL_DIR}/{stem}.gguf")
                    for name, stem, _, data in cases()}
        (models / "run.sh").write_text(runner_script(commands))
        box.ssh(f"sh {MODEL_DIR}/run.sh", timeout=600)
        yield {name: (models / f"{name}.log").read_text(errors="replace") for name in commands}, models


def test_every_case_is_sized_as_llama_server_allocates(oracle, record_property):
    logs, models = oracle
    compared, refused, failures = Counter(), Counter(), []
    for name, stem, arch, data in cases():
        got = allocated(logs[name])
        try:
            config = config_of(data)
            need = need_of_file(str(models / f"{stem}.gguf"), config.ctx, **EngineFlags.of(config).sizing())
        except (ConfigError, KVError) as error:
            need = error
        if got is None:
            refused[arch] += 1
            if not isinstance(need, (ConfigError, KVError)):
                failures.append(f"{name} {data}: llama-server refused, halofleet sized it")
            continue
        if isinstance(need, (ConfigError, KVError)):
            failures.append(f"{name} {data}: halofleet refused ({need}), llama-server loaded it")
            continue
        compared[arch] += 1
        want = predicted(need)
        if want != got:
            failures.append(f"{name} {data}:\n  llama-server {got}\n  halofleet    {want}")
    # In CI's output, not only on failure (tests/conftest.py prints a report's "figures").
    record_property("figures", "\n".join(
        [f"kvcache oracle: {len(compared)} architectures, {sum(compared.values())} cases compared, "
         f"{sum(refused.values())} refused by both"] +
        [f"  {arch:<14} compared {compared[arch]}  refused {refused[arch]}" for arch in sorted(ARCHS)]))
    assert not failures, "\n".join(failures)
    assert len(compared) >= 25 and ALL_VARIANTS <= set(ARCHS)
