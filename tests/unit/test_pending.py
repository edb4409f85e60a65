"""
Pending state is state (issue 21): what a run wrote but did not make live is a change on the next run and shows in
verify; an RPC worker whose address is not its own is refused; a head's engine waits for its workers.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from halofleet.box import serving
from halofleet.contract import paths
from halofleet.contract.config import ConfigError
from halofleet.facts.halo_rpc import parse_addresses
from halofleet.fleet import rpc
from halofleet.models.specs import validate
from halofleet.operations.halo_rpc import workers_failed_check
from halofleet.views.verify import engine_cell

from .test_mutants_serving import converged_probe, plan_for, sha
from .test_rpc import W1, fleet


def live_probe(plan, **serve):
    """The host once ``plan`` ran verified: its files written, the stamp of this run, the unit's command line."""
    return converged_probe(plan, **{"stamp": plan.live_stamp, "argv": list(plan.exec_argv), **serve})


def test_the_stamp_holds_model_and_configuration_and_old_stamps_still_read():
    plan = plan_for()
    model, config = serving.split_stamp(plan.live_stamp)
    assert (model, config) == (plan.model_stamp, plan.config_stamp)
    assert config.startswith("cfg:") and len(config) == len("cfg:") + 64
    assert serving.split_stamp(plan.model_stamp) == (plan.model_stamp, None)  # written by 0.3: model only
    assert serving.split_stamp(None) == (None, None)
    assert serving.split_stamp("a b") == ("a b", None)  # no cfg: part: the whole line is the model's


def test_config_stamp_is_the_written_files_digest():
    plan = plan_for()
    files = {plan.unit_path: sha(plan.unit), paths.SERVE_ENV: sha(plan.env)}
    assert serving.config_stamp(files, plan.watched_paths) == plan.config_stamp
    assert serving.config_stamp({**files, paths.SERVE_ENV: None}, plan.watched_paths) != plan.config_stamp
    assert plan.watched_paths == (paths.SERVE_UNIT, paths.SERVE_ENV)


def test_a_unit_written_but_never_restarted_is_restarted_by_the_next_run():
    old = plan_for({"halo_ctx": 512})
    new = plan_for({"halo_ctx": 640})
    # A halted rollout: the new unit is on the host, the stamp is still the one of the engine that runs.
    halted = converged_probe(new, stamp=old.live_stamp)
    plan = plan_for({"halo_ctx": 640}, probe=halted)
    assert plan.restart and not plan.start
    # Once restarted verified (the stamp of the new configuration), nothing more to do.
    assert not plan_for({"halo_ctx": 640}, probe=live_probe(new)).restart


def test_a_stamp_from_before_config_stamps_judges_by_the_files_alone():
    plan = plan_for()
    assert not plan_for(probe=converged_probe(plan, stamp=plan.model_stamp)).restart


def test_verify_says_live_pending_restart_and_drift():
    plan = plan_for({"halo_ctx": 640})
    assert engine_cell(plan, live_probe(plan)) == ("live", None)
    old = plan_for({"halo_ctx": 512})
    halted = converged_probe(plan, stamp=old.live_stamp, argv=old.exec_argv)
    assert engine_cell(plan, halted) == ("pending restart: unit or environment written but not live",
                                         "pending restart")
    model_swapped = converged_probe(plan, stamp=f"file:/other 1 2 {plan.config_stamp}", argv=plan.exec_argv)
    assert engine_cell(plan, model_swapped)[1] == "pending restart"
    assert engine_cell(plan, converged_probe(plan, stamp=None))[1] == "pending restart"
    edited = live_probe(plan)
    edited["files"][paths.SERVE_UNIT] = "0" * 64
    assert engine_cell(plan, edited)[1] == "drift"
    other_argv = live_probe(plan, argv=[*plan.exec_argv, "--threads", "2"])  # e.g. a drop-in's ExecStart
    assert engine_cell(plan, other_argv) == ("drift: the engine's command line is not its unit's", "drift")
    assert engine_cell(plan, live_probe(plan, argv=None)) == ("not running", None)
    assert engine_cell(plan, {"files": {}, "serve": {}}) == ("not deployed", None)


def test_the_exec_argv_is_the_units_exec_start():
    plan = plan_for({"halo_llama_args": ["--threads", "8"]})
    exec_start = next(line for line in plan.unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start == "ExecStart=" + " ".join(plan.exec_argv)
    assert plan_for({"halo_llama_source": "toolbox", "halo_llama_backend": "vulkan"}).exec_argv is None


# -- RPC ---------------------------------------------------------------------------------------------------------

def test_addresses_of_the_host():
    lines = ["@addr 127.0.0.1/8", "@addr ::1/128", "@addr 10.0.0.2/24", "@addr 10.0.0.2/24", "@addr bogus", "x 1"]
    assert parse_addresses(lines) == ["10.0.0.2", "127.0.0.1", "::1"]
    assert parse_addresses([]) is None  # no `ip`: unknown, not "no address"


def worker(addresses):
    return rpc.build_worker_plan(validate("w1", W1), {"files": {}, "rpc": {}, "serve": {"listeners": []},
                                                      "addresses": addresses}, fleet(), 12)


def test_a_worker_whose_address_is_not_its_own_is_refused():
    with pytest.raises(ConfigError) as error:
        worker(["10.0.0.9", "127.0.0.1"])
    assert "is not an address of this host (it has 10.0.0.9, 127.0.0.1)" in str(error.value)
    assert "halo_rpc_address" in str(error.value)
    assert worker(["10.0.0.2", "127.0.0.1"]).endpoint == "10.0.0.2:50052"
    assert worker(None).endpoint == "10.0.0.2:50052"  # addresses unknown: not judged


def test_a_head_waits_for_its_workers():
    hosts = [SimpleNamespace(name=name) for name in ("w1", "w2", "other")]
    head = SimpleNamespace(print_prefix="[head] ")
    assert workers_failed_check(SimpleNamespace(failed_hosts=[hosts[2]]), head, ["w1", "w2"])
    assert workers_failed_check(SimpleNamespace(failed_hosts=[]), head, ["w1", "w2"])
    assert not workers_failed_check(SimpleNamespace(failed_hosts=[hosts[1]]), head, ["w1", "w2"])


# -- verified records of path and pushed models ------------------------------------------------------------------

def model_record_commands(model_lines):
    from halofleet.testing.fake import probe_output, run_fake

    data = {"halo_allow_non_strix_halo": True, "halo_reboot": "never", "halo_model": "/srv/models/tiny.gguf",
            "halo_llama_backend": "cpu", "halo_model_sha256": "a" * 64,
            "halo_correctness_gate": False}  # the fake host has no engine to answer the gate's prompts
    run = run_fake("deploys/full.py", {"h": (data, probe_output(model=model_lines))})
    assert run.failed_hosts == set(), run.errors
    return [command for command in run.changes("h") if "/var/lib/halofleet/verified" in command]


MODEL = ["@parent root 755", "@file 497440 1795442225 root", "@magic 47475546", "@sha256 " + "a" * 64 + "  /m"]


def test_a_path_model_hashed_in_full_is_recorded_once_where_halofleet_owns_it():
    from halofleet.facts.halo_models import verified_record_path

    written = model_record_commands([*MODEL, "@stat 497440 1795442225 1795442300 77"])
    assert len(written) == 1, written
    assert verified_record_path("/srv/models/tiny.gguf") in written[0]
    assert "'497440 1795442225 1795442300 77'" in written[0]  # only if the file is still the one hashed
    assert model_record_commands([*MODEL, "@recorded", "@stat 497440 1795442225 1795442300 77"]) == []


def test_the_record_lookup_matches_size_mtime_ctime_and_inode(tmp_path):
    """The shell of the probe against a real file: a record matching its stat gives the digest without a read;
    any change of the stat (here its ctime, by chmod) voids it."""
    import hashlib
    import os
    import subprocess

    from halofleet.facts.halo_models import RECORD_LOOKUP

    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 100)
    records = tmp_path / "verified"
    records.mkdir()
    lookup = RECORD_LOOKUP.replace("/var/lib/halofleet/verified", str(records))
    stat = subprocess.run(["stat", "-L", "-c", "%s %Y %Z %i", str(model)], capture_output=True, text=True).stdout
    name = hashlib.sha256(str(model).encode()).hexdigest()
    (records / name).write_text(f"{'b' * 64} {stat}")
    script = f'f={model}; {lookup}; echo "rec=$rec"'
    assert subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout == f"rec={'b' * 64}\n"
    os.utime(model, ns=(0, 0))  # another mtime (and ctime)
    assert subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout == "rec=\n"


# -- disk space before a download --------------------------------------------------------------------------------

def test_a_download_larger_than_the_free_space_is_refused_before_it_starts(tmp_path):
    import subprocess

    from halofleet.operations.halo_models import space_check

    part = tmp_path / ".m.gguf.part"

    def check(size: int) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", "-c", space_check(str(tmp_path), str(part), "m.gguf", size)],
                              capture_output=True, text=True)

    refused = check(1 << 60)
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"halofleet: not enough disk space for m.gguf: {1 << 60} bytes still to fetch")
    assert f"but {tmp_path} has " in refused.stderr and "nothing was downloaded" in refused.stderr
    part.write_bytes(b"x" * 1000)  # a partial file from an earlier run: only the rest is still to fetch
    assert f"m.gguf: {(1 << 60) - 1000} bytes still" in check(1 << 60).stderr
    free = int(subprocess.run(["df", "-P", "-B1", str(tmp_path)], capture_output=True, text=True
                              ).stdout.splitlines()[1].split()[3])
    if free > 2 << 30:
        assert check(1000).returncode == 0  # the partial file holds it all: nothing to fetch


def test_a_failed_start_shows_the_engines_own_lines_bounded_and_without_the_key(tmp_path):
    """The failure path's shell against a stand-in journalctl (PATH): the engine's last 40 lines, each cut at 300
    bytes, and no line with the API key or an authorization header."""
    import os
    import subprocess

    from halofleet.contract.paths import SERVE_ENV
    from halofleet.operations.halo_serve import engine_log_on_failure

    key = "sk-test-key-123456"
    env_file = tmp_path / "serve.env"
    env_file.write_text(f"LLAMA_API_KEY={key}\n")
    lines = [f"line {n}" for n in range(100)] + ["x" * 1000, f"loaded with --api-key {key}", "Authorization: Bearer z",
                                                 'error while handling argument "--threads": stoi']
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "journalctl").write_text("#!/bin/sh\ncat " + str(tmp_path / "journal") + "\n")
    (bin_dir / "journalctl").chmod(0o755)
    (tmp_path / "journal").write_text("\n".join(lines) + "\n")
    script = engine_log_on_failure("halo-serve.service").replace(SERVE_ENV, str(env_file)) + "\nexit 1"
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                            env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    shown = result.stderr.splitlines()
    assert shown[0] == "halofleet: last lines of the engine log:"
    assert shown[-1] == 'error while handling argument "--threads": stoi'
    assert key not in result.stderr and "Bearer" not in result.stderr
    assert "x" * 300 in result.stderr and "x" * 301 not in result.stderr
    assert len(shown) - 1 == 40 - 2  # the last 40 lines, less the two left out
    ok = subprocess.run(["sh", "-c", script.replace("exit 1", "exit 0")], capture_output=True, text=True,
                        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert ok.stderr == ""  # a start that worked shows nothing
