"""
What keeps a rollout safe on a live fleet, each behaviour with a test that fails when it goes: a TheRock 7.0.1
install refused, the rolling reboot stopped by a host back without its params, the restart and reboot batches the
smallest of the fleet, verify's converged/ok only when the GPU and the RPC group say so, and a new head address
reloading the firewall. (A pending reboot done and an RPC worker rolled back run a deploy: test_guards_deploys.py.)
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pyinfra.api import FunctionCommand, OperationError

from halofleet import deploy
from halofleet.box.plan import build_plan
from halofleet.contract import paths
from halofleet.contract.config import HostRefused
from halofleet.contract.templating import sha256_text
from halofleet.facts.probe import parse_probe
from halofleet.facts.halo_serve import parse_serve_health
from halofleet.operations import halo_kernel, halo_rpc
from halofleet.testing.fake import probe_output
from halofleet.views.verify import verify_row

from .test_rpc import W1, fleet, plans, probe
from .test_verify import HEALTHY, LIVE

# -- ROCm 7.0.1 from the TheRock stream ---------------------------------------------------------------------------

THEROCK_701 = ["amdrocm7.0-gfx1151 installed 7.0.1-1", "amdrocm-core7.0 installed 7.0.1-1", "@core /opt/rocm/core-7.0"]


@pytest.mark.parametrize("data", [{}, {"halo_rocm_version": "7.14.0"}, {"halo_rocm_version": "none"}])
def test_an_installed_therock_701_is_refused_whatever_is_asked(data):
    found = parse_probe(probe_output(rocm_lines=THEROCK_701))
    assert (found["rocm"]["version"], found["rocm"]["stream"]) == ("7.0.1", "therock")
    with pytest.raises(HostRefused) as error:
        build_plan("h", {"halo_allow_non_strix_halo": True, "halo_serve": "none", **data}, found)
    assert str(error.value).startswith("host 'h': ROCm 7.0.1 is installed and refused: reported gfx1151 regression")


def test_therock_7_0_1_through_its_info_file_is_refused_too():
    found = parse_probe(probe_output(rocm_lines=["amdrocm7.0-gfx1151 installed 7.0.1-1", "@coreinfo 7.0.1-12"]))
    with pytest.raises(HostRefused, match="ROCm 7.0.1 is installed and refused"):
        build_plan("h", {"halo_allow_non_strix_halo": True, "halo_serve": "none"}, found)
    ok = parse_probe(probe_output(rocm_lines=["amdrocm7.14-gfx1151 installed 7.14.0-3", "@core /opt/rocm/core-7.14"]))
    assert build_plan("h", {"halo_allow_non_strix_halo": True, "halo_serve": "none"}, ok).host == "h"


# -- the rolling reboot ------------------------------------------------------------------------------------------

class RebootingHost:
    """A host as the reboot operation sees it: its boot id before, then a new boot with ``live`` params."""

    def __init__(self, name: str, live: str):
        self.name, self.print_prefix, self.live = name, f"[{name}] ", live
        self.disconnects = 0

    def get_fact(self, fact):
        if fact is halo_kernel.BootId:
            return "boot-before"
        if fact is halo_kernel.LiveCmdline:
            return self.live.split()
        raise AssertionError(fact)

    def disconnect(self):
        self.disconnects += 1


def run_reboot(monkeypatch, fake_host, params) -> list:
    """Run the reboot operation's commands for one host: functions called, shell commands collected."""
    monkeypatch.setattr(halo_kernel, "host", fake_host)
    monkeypatch.setattr(halo_kernel, "_read_boot_id", lambda attempt_timeout: "boot-after")
    sent = []
    for command in halo_kernel.reboot._inner(timeout=5, interval=0, expect_params=params):
        if isinstance(command, FunctionCommand):
            command.function(*command.args, **command.kwargs)
        else:
            sent.append(command.get_raw_value())
    return sent


def test_a_host_back_without_its_params_stops_the_rolling_reboot(monkeypatch):
    monkeypatch.setattr(halo_kernel, "state", SimpleNamespace())
    params = ["amd_iommu=off", "ttm.pages_limit=1835008"]
    first = RebootingHost("a", "BOOT_IMAGE=/vmlinuz ro quiet amd_iommu=off")
    with pytest.raises(OperationError, match=r"^a came back without ttm.pages_limit=1835008 in /proc/cmdline; "
                                             "the rolling reboot stops here$"):
        run_reboot(monkeypatch, first, params)
    assert halo_kernel.rollout_halted() == "a came back without ttm.pages_limit=1835008 in /proc/cmdline"
    # The next batch is not rebooted: it fails before its reboot command is sent.
    second = RebootingHost("b", "amd_iommu=off ttm.pages_limit=1835008")
    monkeypatch.setattr(halo_kernel, "host", second)
    commands = list(halo_kernel.reboot._inner(timeout=5, interval=0, expect_params=params))
    with pytest.raises(OperationError, match="not rebooted: the rollout stopped because a came back without"):
        commands[0].function(*commands[0].args, **commands[0].kwargs)


def test_a_host_back_with_its_params_lets_the_rollout_go_on(monkeypatch):
    monkeypatch.setattr(halo_kernel, "state", SimpleNamespace())
    params = ["amd_iommu=off", "ttm.pages_limit=1835008"]
    sent = run_reboot(monkeypatch, RebootingHost("a", "ro amd_iommu=off ttm.pages_limit=1835008"), params)
    assert sent == ["systemd-run --quiet --on-active=2 --timer-property=AccuracySec=100ms systemctl reboot"]
    assert halo_kernel.rollout_halted() is None
    run_reboot(monkeypatch, RebootingHost("b", "amd_iommu=off ttm.pages_limit=1835008 quiet"), params)
    assert halo_kernel.rollout_halted() is None


# -- batch sizes: the smallest of the fleet ----------------------------------------------------------------------

def _inventory(key: str, *values):
    return SimpleNamespace(inventory=[SimpleNamespace(name=f"h{i}", data={key: v} if v is not None else {})
                                      for i, v in enumerate(values)])


def test_the_restart_batch_is_the_smallest_set_in_the_fleet(monkeypatch):
    # A host without the key counts with the default, 1: one engine at a time unless every host says more.
    for values, expected in (((3, 1, 2), 1), (("4", 6), 4), ((None, 5), 1), ((7, "--2"), 7), ((None, None), 1)):
        monkeypatch.setattr(deploy, "state", _inventory("halo_restart_batch", *values))
        assert deploy.restart_batch() == expected, values


def test_the_reboot_batch_is_the_smallest_of_the_fleet_counting_the_default(monkeypatch):
    for values, expected in (((3, 1, 2), 1), ((5, 3), 3), ((5, None), 1)):
        monkeypatch.setattr(deploy, "state", _inventory("halo_reboot_batch", *values))
        assert deploy.reboot_batch() == expected, values


# -- verify: converged and ok only when the oracle says so ---------------------------------------------------------

def test_a_strix_halo_host_whose_cards_report_no_gtt_size_is_not_converged():
    data = {"halo_model": "/srv/models/tiny.gguf", "halo_llama_backend": "vulkan"}
    reported = {"gtt": ["ttm_pages_limit 1835008", "/sys/class/drm/card1/device/mem_info_gtt_total 7516192768"]}
    row = verify_row("h", data, parse_probe(probe_output(cmdline=LIVE, gfx1151=True, sections=reported)),
                     parse_serve_health(HEALTHY))
    assert row["status"] == "ok" and row["gtt (sysfs)"] == "card1 7 GiB"
    silent = {"gtt": ["ttm_pages_limit 1835008"]}
    row = verify_row("h", data, parse_probe(probe_output(cmdline=LIVE, gfx1151=True, sections=silent)),
                     parse_serve_health(HEALTHY))
    assert (row["status"], row["gtt (sysfs)"]) == ("not converged", "skipped")
    # One card right and one wrong is not converged either.
    two = {"gtt": [*reported["gtt"], "/sys/class/drm/card2/device/mem_info_gtt_total 1073741824"]}
    row = verify_row("h", data, parse_probe(probe_output(cmdline=LIVE, gfx1151=True, sections=two)),
                     parse_serve_health(HEALTHY))
    assert row["status"] == "not converged"


def _worker_up(plan) -> dict:
    files = {paths.RPC_UNIT: sha256_text(plan.unit), paths.RPC_FIREWALL_UNIT: sha256_text(plan.firewall_unit),
             paths.RPC_NFT: sha256_text(plan.nft)}
    return {"files": files, "sections": {"rpc": ["@active active", "@enabled enabled", "@firewall active", "@table"]},
            "listeners": ["0200000A:C384"], "cmdline": LIVE}


HEAD_LOG_BOTH = ["@device 10.0.0.2:50052", "@device 10.0.0.3:50060", "@buffer 10.0.0.2:50052 0.31",
                 "@buffer 10.0.0.3:50060 0.08"]


def _head_row(rpc_log: list[str] | None, worker_probes: dict | None = None) -> dict:
    from halofleet.facts.halo_rpc import parse_rpc_log
    from halofleet.views.verify import plans_of_workers

    hosts = fleet()
    group = plans(hosts)
    probes = worker_probes or {name: probe(**_worker_up(group[name].rpc)) for name in ("w1", "w2")}
    head_probe = probe(cmdline=LIVE)
    head_probe["rpc_log"] = parse_rpc_log(rpc_log) if rpc_log is not None else None
    return verify_row("head", hosts["head"], head_probe, parse_serve_health(HEALTHY), fleet=hosts,
                      worker_plans=plans_of_workers({**probes, "head": head_probe}, hosts))


def test_a_head_whose_engine_does_not_use_a_worker_is_unhealthy_not_ok():
    from .test_rpc import LOG

    assert _head_row(LOG)["status"] == "ok"
    row = _head_row(LOG[:1] + LOG[2:3])  # w2's device not in the engine's log
    assert (row["status"], row["rpc"]) == ("unhealthy", "head: w1 ok (0.31 MiB), w2 not seen")
    assert _head_row(None)["status"] == "unhealthy"


@pytest.mark.parametrize("rpc_section, listeners, cell", [
    (["@active failed", "@enabled enabled", "@firewall active", "@table"], [],
     "worker of head: halo-rpc failed"),
    (["@active active", "@enabled enabled", "@firewall active"], ["0200000A:C384"],
     "worker of head: firewall table inet halofleet_rpc missing"),
    (["@active active", "@enabled enabled", "@firewall active", "@table"], ["00000000:C384"],
     "worker of head: listening on 0.0.0.0, not 10.0.0.2 only"),
])
def test_a_broken_worker_is_unhealthy_not_ok(rpc_section, listeners, cell):
    hosts = fleet()
    worker = plans(hosts)["w1"].rpc
    up = _worker_up(worker)
    assert verify_row("w1", W1, probe(**up), None, fleet=hosts)["status"] == "ok"
    broken = probe(**{**up, "sections": {"rpc": rpc_section}, "listeners": listeners})
    row = verify_row("w1", W1, broken, None, fleet=hosts)
    assert (row["status"], row["rpc"]) == ("unhealthy", cell)


# -- an RPC worker's firewall and its removal --------------------------------------------------------------------

def test_a_new_head_address_restarts_the_firewall_unit_so_the_new_file_is_loaded():
    before = plans(fleet())["w1"].rpc
    moved = fleet(head={"halo_rpc_address": "10.0.0.9"})
    after = plans(moved)["w1"].rpc
    assert "ip saddr 10.0.0.9 accept" in after.nft and after.nft != before.nft
    # Both units already as planned, only the nft file is the old head's: that alone restarts the firewall unit
    # (which loads the file) with the worker.
    up = _worker_up(after)
    up["files"][paths.RPC_NFT] = sha256_text(before.nft)
    after = build_plan("w1", W1, probe(**up), fleet=moved).rpc
    assert (after.restart, after.start) == (True, False)
    assert build_plan("w1", W1, probe(**_worker_up(after)), fleet=moved).rpc.restart is False
    (command,) = list(halo_rpc.worker_running._inner(restart=after.restart, start=after.start,
                                                     endpoint=after.endpoint))
    script = command.get_raw_value()
    assert "systemctl restart halo-rpc-firewall.service halo-rpc.service" in script
    assert after.digest != before.digest  # and the head restarts onto it
