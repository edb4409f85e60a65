"""
Nothing stops more serving than one batch: ``halofleet bench`` stops halo-serve on halo_restart_batch hosts at a
time (default 1, as engine restarts), and ``--limit HOST|GROUP`` selects hosts for every fleet command as pyinfra's
own ``--limit`` does.
"""

from __future__ import annotations

import subprocess

import pytest

from halofleet.testing.fake import PROBE_MARK, probe_output
from halofleet.views.inventory import BadInput, limited_hosts

from .test_cli import BIN, isolated_network

SERVES = {"halo_allow_non_strix_halo": True, "halo_reboot": "never", "halo_model": "/srv/models/tiny.gguf",
          "halo_llama_backend": "cpu"}


def prepared_bench(hosts: dict[str, dict]):
    """The bench deploy prepared against fake hosts; returns the state (nothing executes)."""
    import pyinfra
    from pyinfra.api import Config, Inventory, State
    from pyinfra.api.connect import connect_all
    from pyinfra.api.state import StateStage
    from pyinfra.context import ctx_inventory, ctx_state
    from pyinfra_cli.util import load_deploy_file

    names = [(f"@fake/{name}", {**data, "fake_delay": 0, "fake_delay_jitter": 0, "fake_responses": {
        PROBE_MARK: {"stdout": probe_output()}, "uname -s": "Linux", "command -v useradd": "/usr/sbin/useradd"}})
        for name, data in hosts.items()]
    inventory = Inventory((names, {}))
    state = State(check_for_changes=False)
    was_cli, pyinfra.is_cli = pyinfra.is_cli, True
    try:
        with ctx_state.use(state), ctx_inventory.use(inventory):
            state.init(inventory, Config(FAIL_PERCENT=100))
            state.set_stage(StateStage.Connect)
            connect_all(state)
            state.set_stage(StateStage.Prepare)
            load_deploy_file(state, "deploys/bench.py")
    finally:
        pyinfra.is_cli = was_cli
    return state


def bench_parallel(state) -> int:
    (op_hash,) = [op for op in state.get_op_order() if any("llama-bench" in name
                                                           for name in state.get_op_meta(op).names)]
    return state.get_op_meta(op_hash).global_arguments["_parallel"]


def test_bench_stops_one_engine_at_a_time_by_default():
    state = prepared_bench({name: SERVES for name in "abc"})
    assert bench_parallel(state) == 1


def test_bench_follows_the_fleets_restart_batch():
    state = prepared_bench({"a": {**SERVES, "halo_restart_batch": 3}, "b": {**SERVES, "halo_restart_batch": 2},
                            "c": SERVES | {"halo_restart_batch": 5}})
    assert bench_parallel(state) == 2  # the smallest in the inventory


def test_bench_help_says_what_it_stops():
    proc = subprocess.run([str(BIN / "halofleet"), "bench", "--help"], capture_output=True, text=True, timeout=60)
    assert "halo-serve.service is stopped" in proc.stdout and "halo_restart_batch" in proc.stdout
    assert "--limit HOST|GROUP" in proc.stdout


def test_limit_selects_groups_and_host_names_as_pyinfra_does():
    from pyinfra.api import Inventory

    inventory = Inventory((["a1", "a2", "b1"], {}), llama=(["a1", "a2"], {}), vllm=(["b1"], {}))
    assert limited_hosts(inventory, ()) is None
    assert [host.name for host in limited_hosts(inventory, ("llama",))] == ["a1", "a2"]
    assert [host.name for host in limited_hosts(inventory, ("b*", "a2"))] == ["b1", "a2"]
    with pytest.raises(BadInput, match="--limit 'c1' matches no host or group"):
        limited_hosts(inventory, ("c1",))


@pytest.mark.parametrize("command", ["diff", "verify", "report", "bench"])
def test_every_fleet_command_takes_limit(tmp_path, command):
    inventory = tmp_path / "inventory.py"
    inventory.write_text("llama = [('halo-a.invalid', {'halo_model': '/srv/m.gguf'}), "
                         "('halo-b.invalid', {'halo_model': '/srv/m.gguf'})]\n")
    proc = subprocess.run(isolated_network() + [str(BIN / "halofleet"), command, str(inventory), "--limit",
                                                "halo-b.invalid"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output  # unreachable, as the namespace has no network
    assert "halo-b.invalid" in output and "halo-a.invalid" not in output
    nothing = subprocess.run([str(BIN / "halofleet"), command, str(inventory), "--limit", "nope"],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert nothing.returncode == 2 and "--limit 'nope' matches no host or group" in nothing.stderr


def test_an_engine_not_serving_after_its_bench_stops_the_later_batches():
    from halofleet.testing.fake import run_fake

    down = {**SERVES, "fake_responses": {"systemctl is-active --quiet halo-serve.service": {"success": False}}}
    run = run_fake("deploys/bench.py", {name: (down, probe_output()) for name in "abc"})
    benched = [name for name in "abc" if any("llama-bench -m" in command for command in run.changes(name))]
    assert len(benched) == 1, run.commands  # the first batch only: its engine did not come back
    stopped = [error for error in run.errors if "not benchmarked: stopped because" in error]
    assert len(stopped) == 2 and f"@fake/{benched[0]} was not serving again after its benchmark" in stopped[0]


def test_benches_go_on_while_engines_come_back():
    from halofleet.testing.fake import run_fake

    run = run_fake("deploys/bench.py", {name: (SERVES, probe_output()) for name in "abc"})
    assert all(any("llama-bench -m" in command for command in run.changes(name)) for name in "abc"), run.errors
