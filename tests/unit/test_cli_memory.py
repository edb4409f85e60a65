"""``halofleet plan --model``: the memory table and the RPC split from the command line, and its hostile values."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from halofleet.cli import main
from halofleet.models.kvcache import GIB

from . import ggufheaders as gh

pytest.importorskip("gguf")

LLAMA_BLOCK = (2 * 4096 * 4096 + 2 * 1024 * 4096 + 3 * 14336 * 4096) * 2 + 2 * 4096 * 4
LLAMA_WEIGHTS = 32 * LLAMA_BLOCK + 2 * 128256 * 4096 * 2 + 4096 * 4  # 8.03e9 parameters in f16
LLAMA_KV_PER_CELL = 32 * 8 * 128 * 2 * 2


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return str(gh.llama8b(tmp_path_factory.mktemp("cli") / "llama8b.gguf"))


def plan(*args: str):
    return CliRunner().invoke(main, ["plan", *args])


def test_table_for_one_model_at_the_default_ctx(llama):
    result = plan("--ram-gib", "128", "--model", llama)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    at = lines.index("memory (KV f16, -np 1, ctx from halo_ctx):")
    weights, kv = LLAMA_WEIGHTS / GIB, 8192 * LLAMA_KV_PER_CELL / GIB
    assert lines[at + 2].split() == ["llama8b.gguf", f"{weights:.2f}", f"{kv:.2f}", "8192", f"{weights + kv:.2f}",
                                     "yes"]
    assert lines[at + 3] == f"  loaded at once (at most 4): {weights + kv:.2f} GiB of the 120.00 GiB GTT budget: fits"
    # the existing plan output is still there, unchanged
    assert lines[0] == "# 128 GiB visible, 8 GiB reserved for the OS -> GTT 120 GiB"


def test_ctx_per_model_and_ctx_flag_and_json(llama):
    result = plan("--ram-gib", "64", "--model", f"{llama}@32768", "--model", llama, "--ctx", "4096", "--kv-type",
                  "q8_0", "--json")
    assert result.exit_code == 0, result.output
    memory = json.loads(result.stdout)["memory"]
    assert memory["kv_type"] == "q8_0" and memory["budget_gib"] == 56.0 and memory["models_max"] == 4
    first, second = memory["rows"]
    assert first["ctx"] == 32768 and first["ctx_source"] == f"{llama}@32768"
    assert first["kv_bytes"] == 32 * 2 * (1024 // 32 * 34) * 32768
    assert second["model"] == llama and second["ctx"] == 4096 and second["ctx_source"] == "--ctx"
    assert second["kv_bytes"] == 32 * 2 * (1024 // 32 * 34) * 4096
    assert memory["fits"] is True and json.loads(result.stdout)["gtt_gib"] == 56


def test_over_budget_exits_1_with_the_numbers(llama):
    # 32 GiB visible - 8 reserved = 24 GiB GTT; two 8B f16 models at 32768 need 2 x (14.96 + 4) GiB
    result = plan("--ram-gib", "32", "--model", f"{llama}@32768", "--model", f"{llama}@32768")
    assert result.exit_code == 1
    weights, kv = LLAMA_WEIGHTS / GIB, 32768 * LLAMA_KV_PER_CELL / GIB
    line = result.stderr.strip()
    assert line == (f"halofleet: models that may be loaded at once need {2 * (weights + kv):.2f} GiB, over the GTT "
                    f"budget of 24.00 GiB (llama8b.gguf: {weights:.2f} GiB weights + {kv:.2f} GiB KV at ctx 32768 "
                    f"(f16) = {weights + kv:.2f} GiB; {llama}: {weights:.2f} GiB weights + {kv:.2f} GiB KV at ctx "
                    f"32768 (f16) = {weights + kv:.2f} GiB)")
    assert "OVER BUDGET" in result.stdout
    # --models-max 1: only one of them may be loaded at once, and it fits
    assert plan("--ram-gib", "32", "--model", f"{llama}@32768", "--model", f"{llama}@32768", "--models-max",
                "1").exit_code == 0


def test_json_over_budget_prints_the_plan_then_refuses(llama):
    result = plan("--ram-gib", "16", "--model", llama, "--json")
    assert result.exit_code == 1 and json.loads(result.stdout)["memory"]["fits"] is False
    assert result.stderr.startswith("halofleet: models that may be loaded at once need ")


def test_rpc_split_default_and_tensor_split(llama):
    result = plan("--ram-gib", "24", "--model", llama, "--rpc-worker-ram-gib", "24", "--json")
    assert result.exit_code == 0, result.output
    split = json.loads(result.stdout)["rpc_split"]
    # equal budgets (16 GiB each): split point 0.5, blocks il / 33 < 0.5 -> 0..16 on the worker
    assert [b["box"] for b in split["boxes"]] == ["worker1", "head"] and split["source"] == "free memory"
    assert [b["layers"] for b in split["boxes"]] == [17, 16]
    assert split["boxes"][0]["bytes"] == 17 * (LLAMA_BLOCK + 8192 * LLAMA_KV_PER_CELL // 32)
    text = plan("--ram-gib", "24", "--model", llama, "--rpc-worker-ram-gib", "24", "--tensor-split", "1,3")
    assert text.exit_code == 0 and "by --tensor-split" in text.stdout
    assert [line.split()[2] for line in text.stdout.splitlines() if line.startswith(("  worker1", "  head "))] == [
        "9", "24"]


def test_rpc_split_over_budget(llama):
    # worker 16 - 8 = 8 GiB; 9,1 puts blocks 0..29 (il / 33 < 0.9) there: 30 x 0.45 GiB
    result = plan("--ram-gib", "24", "--model", llama, "--rpc-worker-ram-gib", "16", "--tensor-split", "9,1")
    assert result.exit_code == 1
    assert "worker1 over budget: split by --tensor-split: worker1 " in result.stderr
    result = plan("--ram-gib", "12", "--model", f"{llama}@65536", "--rpc-worker-ram-gib", "12")
    assert result.exit_code == 1 and "needs more than the 8.00 GiB the group has" in result.stderr


def test_serve_model_on_the_host_keeps_the_old_output():
    result = plan("--ram-gib", "128", "--serve", "llama-server", "--model", "/srv/m.gguf")
    assert result.exit_code == 0 and "memory (" not in result.stdout and "--model /srv/m.gguf" in result.stdout


def test_serve_with_a_local_file_adds_the_table(llama):
    result = plan("--ram-gib", "128", "--serve", "llama-server", "--model", f"{llama}@4096")
    assert result.exit_code == 0, result.output
    assert f"--model {llama} " in result.stdout and "ctx from " in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--model", "/nonexistent/x.gguf"], "/nonexistent/x.gguf: model file not readable"),
    (["--model", ""], "--model '': give a GGUF path, optionally PATH@CTX"),
    (["--model", "{llama}@100"], "--model '{llama}@100': ctx 100 is not in 256..1048576"),
    (["--model", "{llama}@99999999999"], "--model '{llama}@99999999999': ctx 99999999999 is not in 256..1048576"),
    (["--model", "{llama}@12x"], "{llama}@12x: model file not readable"),
    (["--model", "{llama}", "--rpc-worker-ram-gib", "8"],
     "--rpc-worker-ram-gib 8 (worker1): OS reserve 8 GiB must leave at least 4 GiB of the 8 GiB Linux sees for GTT "
     "(at most 4)"),
    (["--model", "{llama}", "--tensor-split", "1,1"], "--tensor-split '1,1': 2 values for 1 devices (0 workers and the head)"),
    (["--model", "{llama}", "--model", "{llama}", "--rpc-worker-ram-gib", "64"],
     "--rpc-worker-ram-gib splits one model across the group: give one --model"),
    (["--rpc-worker-ram-gib", "64"], "--rpc-worker-ram-gib and --tensor-split need a local GGUF --model to split"),
    (["--serve", "llama-server", "--model", "/srv/m.gguf", "--tensor-split", "1"],
     "--rpc-worker-ram-gib and --tensor-split need a local GGUF --model to split"),
    (["--model", "{junk}"], "{junk}: not a GGUF file (magic b'this')"),
])
def test_hostile_values_exit_2_with_one_line(llama, tmp_path, args, message):
    junk = tmp_path / "junk.gguf"
    junk.write_text("this is not a model, only text\n" * 4)

    def fill(text: str) -> str:
        return text.replace("{llama}", llama).replace("{junk}", str(junk))

    result = plan("--ram-gib", "128", *[fill(arg) for arg in args])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"halofleet: {fill(message)}\n"


@pytest.mark.parametrize("args, option", [
    (["--ctx", "0"], "--ctx"), (["--ctx", "1048577"], "--ctx"), (["--kv-type", "q3_k"], "--kv-type"),
    (["--models-max", "-1"], "--models-max"), (["--rpc-worker-ram-gib", "0"], "--rpc-worker-ram-gib"),
    (["--rpc-worker-ram-gib", "4097"], "--rpc-worker-ram-gib"),
])
def test_out_of_range_flags_are_usage_errors(llama, args, option):
    result = plan("--ram-gib", "128", "--model", llama, *args)
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.stderr


def test_the_plan_settings_reach_the_sizes(llama):
    result = plan("--ram-gib", "128", "--model", f"{llama}@10000", "--data", "halo_llama_parallel=3", "--data",
                  "halo_llama_ubatch=256", "--data", "halo_llama_batch=1024", "--json")
    memory = json.loads(result.stdout)["memory"]
    assert {key: memory[key] for key in ("kv_type", "parallel", "ubatch", "batch")} == {
        "kv_type": "f16", "parallel": 3, "ubatch": 256, "batch": 1024}
    # -np 3: 10240 // 3 = 3413 -> 3584 cells per slot, 3 slots
    assert memory["rows"][0]["kv_bytes"] == 3 * 3584 * LLAMA_KV_PER_CELL
    assert memory["rows"][0]["resident"] is True and memory["rows"][0]["keep_loaded"] is False
    assert memory["resident_total_gib"] == round((LLAMA_WEIGHTS + 3 * 3584 * LLAMA_KV_PER_CELL) / GIB, 2)


def test_batch_settings_reach_the_window_cache(tmp_path):
    from halofleet.testing.tinymodel import write_tiny_gemma2

    model = str(write_tiny_gemma2(tmp_path / "g.gguf", window=64))
    rows = {}
    for ubatch in ("256", "512"):
        result = plan("--ram-gib", "128", "--model", f"{model}@2048", "--data", f"halo_llama_ubatch={ubatch}",
                      "--data", "halo_llama_batch=512", "--json")
        rows[ubatch] = json.loads(result.stdout)["memory"]["rows"][0]
    # 4 layers, 1 KV head of 32, f16: 2 full layers x 2048 cells, 2 window layers x pad(64 + ubatch)
    per_cell = 32 * 2 * 2
    assert rows["256"]["kv_bytes"] == (2 * 2048 + 2 * 512) * per_cell
    assert rows["512"]["kv_bytes"] == (2 * 2048 + 2 * 768) * per_cell


def test_served_local_model_in_a_directory_with_an_at(tmp_path, llama):
    import shutil

    folder = tmp_path / "models@lab"
    folder.mkdir()
    shutil.copy(llama, folder / "m.gguf")
    result = plan("--ram-gib", "128", "--serve", "llama-server", "--model", f"{folder}/m.gguf@4096")
    assert result.exit_code == 0, result.output
    assert "memory (KV f16, -np 1, ctx from " in result.stdout


@pytest.mark.parametrize("args", [
    ["--tensor-split", "1,x"], ["--tensor-split", "1,nan"], ["--tensor-split", "1,-1"], ["--tensor-split", "0,0"],
    ["--tensor-split", "1e308,1e308"], ["--tensor-split", "inf,1"], ["--tensor-split", ",".join(["1"] * 65)],
    ["--tensor-split", ""], ["--gtt-gib", "0"], ["--gtt-gib", "99999"], ["--reserve-gib", "-1"],
    ["--reserve-gib", "1" + "0" * 30], ["--ram-gib", "0"], ["--ctx", "1"], ["--models-max", "-1"],
    ["--rpc-worker-ram-gib", "0"],
])
def test_nonsense_numbers_are_usage_errors(llama, args):
    """Click's types carry the contract's ranges: nonsense is exit 2 with the rule, never a traceback."""
    result = plan("--ram-gib", "128", "--model", llama, *args)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{args[0]}'" in result.stderr and "Traceback" not in result.output
    if args[0] == "--tensor-split":
        assert "each at most 1000000, at most 64 of them" in result.stderr


@pytest.mark.parametrize("kind", ["fifo", "zero", "directory", "loop", "unreadable"])
def test_plan_model_reads_regular_files_only(tmp_path, kind):
    """A FIFO used to hang `plan --model` and /dev/zero to exhaust memory: now one line, exit 2, at once."""
    import os

    if kind == "fifo":
        os.mkfifo(tmp_path / "m.gguf")
        path, reason = tmp_path / "m.gguf", "is a FIFO on the control machine, not a regular file"
    elif kind == "zero":
        path, reason = "/dev/zero", "is a device on the control machine, not a regular file"
    elif kind == "directory":
        path, reason = tmp_path, "is a directory on the control machine, not a regular file"
    elif kind == "loop":
        os.symlink(tmp_path / "b.gguf", tmp_path / "a.gguf")
        os.symlink(tmp_path / "a.gguf", tmp_path / "b.gguf")
        path, reason = tmp_path / "a.gguf", "cannot be opened on the control machine (Too many levels of symbolic links)"
    else:
        path, reason = "/proc/self/mem", "cannot be read on the control machine (Input/output error)"
    result = plan("--ram-gib", "64", "--model", str(path))
    assert result.exit_code == 2, result.output
    assert result.stderr == f"halofleet: {path}: {reason}\n"


def test_memory_flags_are_options_and_the_unit_passes_what_the_table_sizes(llama):
    result = plan("--ram-gib", "128", "--model", llama, "--serve", "llama-server", "--kv-type", "q8_0",
                  "--kv-type-v", "q4_0", "--kv-unified", "--parallel", "2", "--ubatch", "256", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    memory = out["memory"]
    assert (memory["kv_type"], memory["kv_type_v"], memory["unified"], memory["parallel"], memory["ubatch"]) == \
        ("q8_0", "q4_0", True, 2, 256)
    assert "-ub 256 -np 2 --cache-type-k q8_0 --cache-type-v q4_0 --kv-unified" in out["serve"]["unit"]
    # 8192 cells in one unified stream: K rows of 1024 in q8_0 (1088 bytes), V in q4_0 (576 bytes), 32 layers
    assert memory["rows"][0]["kv_gib"] == round(8192 * 32 * (1088 + 576) / GIB, 2)
    text = plan("--ram-gib", "128", "--model", llama, "--kv-type-v", "q4_0", "--flash-attn", "off")
    assert text.exit_code != 0 and "a q4_0 V cache needs flash attention" in text.output
