"""
A fleet of three fresh trixie VMs in one pyinfra run, one of them broken (ROCm 7.0.1 pre-installed): the good
hosts converge (GRUB drop-in, reboot, modprobe, pinned ROCm from a local repository, runtime), the broken one is
refused with the clear error and left untouched, and the run's exit status says so. Then: a second run changes
nothing and reboots nothing, each stage runs alone, and the ROCm pin holds against apt.

The tests share the booted VMs and run in file order.
"""

from __future__ import annotations

import pytest

from halofleet import cmdline
from halofleet.testing import vm as vm_mod

from .conftest import REPO_IN_VM, rocm_group_data, run_pyinfra

pytestmark = pytest.mark.vm

USER_GRUB_LINE = 'GRUB_CMDLINE_LINUX_DEFAULT="quiet halo_test.keep=1 ttm.pages_limit=4242"'
# ... and a drop-in of the user's own, sourced before ours, with a conflicting iommu choice.
USER_DROPIN_LINE = 'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT user.dropin=1 iommu=pt"'
STAGES = ("preflight", "modprobe", "kernel", "rocm", "cwsr", "runtime")
# What a rollback must bring back: the directories halofleet writes into, and the service user.
STATE_LISTING = ("ls -A /etc/default/grub.d /etc/modprobe.d /etc/apt/preferences.d /etc/apt/sources.list.d "
                 "/etc/apt/keyrings 2>&1; getent passwd halo || echo no-halo-user")
GRUB_LINUX_PARAMS = "awk '$1 == \"linux\" {$1 = \"\"; $2 = \"\"; print; exit}' /boot/grub/grub.cfg"


class Fleet:
    def __init__(self, vms, workdir):
        self.vms = {vm.name: vm for vm in vms}
        self.workdir = workdir
        self.snapshots: dict[str, dict[str, str]] = {}

    def description(self, names, rocm_version="7.2.1"):
        path = self.workdir / f"{'-'.join(names)}-{rocm_version}.json"
        return vm_mod.write_inventory(
            [self.vms[name] for name in names], path, group_data=rocm_group_data(rocm_version)
        )

    def sh(self, name, command, check=True):
        return self.vms[name].ssh(command, check=check).stdout.strip()


@pytest.fixture(scope="module")
def fleet(base_image, rocm_repo, vm_workdir):
    vms = vm_mod.boot_vms(["vm1", "vm2", "vm3"], base_image, vm_workdir)
    try:
        for machine in vms:
            machine.copy_dir(rocm_repo, REPO_IN_VM)
        yield Fleet(vms, vm_workdir)
    finally:
        for machine in vms:
            machine.stop()


def test_fleet_with_one_broken_host(fleet):
    # vm1 carries the user's own cmdline params, one of them a stale value of a param halofleet manages.
    fleet.sh("vm1", f"sed -i 's/^GRUB_CMDLINE_LINUX_DEFAULT=.*/{USER_GRUB_LINE}/' /etc/default/grub && "
                    f"echo '{USER_DROPIN_LINE}' > /etc/default/grub.d/50-user.cfg && update-grub")
    # vm3 is broken: ROCm 7.0.1 is already installed.
    fleet.sh("vm3", f"dpkg -i {REPO_IN_VM}/pool/main/rocm-core_7.0.1.*.deb")
    for name in fleet.vms:
        fleet.snapshots[name] = {
            "boot_id": fleet.vms[name].boot_id(),
            "etc_default_grub": fleet.sh(name, "sha256sum /etc/default/grub"),
            "listing": fleet.sh(name, STATE_LISTING),
            "boot_params": fleet.sh(name, GRUB_LINUX_PARAMS),
        }

    run = run_pyinfra(fleet.description(["vm1", "vm2", "vm3"]), "deploys/full.py")

    assert run.returncode != 0, "a refused host must make the run fail"
    assert run.failed_hosts == ["vm3"]
    assert "vm3" in run.stderr and "ROCm 7.0.1 is installed and refused" in run.stderr
    # The broken host was not touched: no drop-in, no pin, no reboot.
    assert fleet.sh("vm3", "ls /etc/default/grub.d/zz-halofleet.cfg /etc/apt/preferences.d/halofleet-rocm "
                           "/etc/modprobe.d/zz-halofleet.conf 2>/dev/null | wc -l") == "0"
    assert fleet.vms["vm3"].boot_id() == fleet.snapshots["vm3"]["boot_id"]

    for name in ("vm1", "vm2"):
        machine = fleet.vms[name]
        assert machine.boot_id() != fleet.snapshots[name]["boot_id"], f"{name} did not reboot"
        live = cmdline.parse(fleet.sh(name, "cat /proc/cmdline"))
        memtotal = int(fleet.sh(name, "awk '/MemTotal/ {print $2}' /proc/meminfo"))
        gtt_gib = memtotal // (1024 * 1024) - 8  # default reserve
        pages = gtt_gib * 262144
        wanted = ["amd_iommu=off", f"ttm.pages_limit={pages}", f"amdgpu.gttsize={gtt_gib * 1024}"]
        assert cmdline.managed_subset(live) == wanted, live
        assert fleet.sh(name, "cat /sys/module/ttm/parameters/pages_limit") == str(pages)
        assert fleet.sh(name, "sha256sum /etc/default/grub") == fleet.snapshots[name]["etc_default_grub"]
        assert fleet.sh(name, "dpkg-query -W -f='${Version}' rocm-core rocm") == "7.2.1.70201-17.2.1.70201-1"
        assert fleet.sh(name, "id -nG halo").split()[1:] == ["video", "render"]
    # vm1's own params: kept once; its stale ttm value replaced, never duplicated.
    live1 = cmdline.parse(fleet.sh("vm1", "cat /proc/cmdline"))
    assert live1.count("halo_test.keep=1") == 1 and live1.count("user.dropin=1") == 1
    assert "ttm.pages_limit=4242" not in live1 and "iommu=pt" not in live1
    assert [p for p in live1 if cmdline.key(p) == "ttm.pages_limit"] == [p for p in live1 if p.startswith("ttm.")]


def test_second_run_changes_nothing(fleet):
    boot_ids = {name: fleet.vms[name].boot_id() for name in ("vm1", "vm2")}
    run = run_pyinfra(fleet.description(["vm1", "vm2"]), "deploys/full.py")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.result["results"]["totals"]["success"] == 0
    assert run.changed_ops == []
    assert run.result["results"]["totals"]["no_change"] > 0
    assert {name: fleet.vms[name].boot_id() for name in boot_ids} == boot_ids, "a converged host was rebooted"


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_runs_alone_and_is_converged(fleet, stage):
    run = run_pyinfra(fleet.description(["vm1"]), f"deploys/{stage}.py")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.changed_ops == []


def test_dry_diff_of_a_change_is_reviewable(fleet):
    """A converged host asked for another GTT size: the dry run shows the drop-in and modprobe diffs, changes nothing."""
    description = fleet.description(["vm1"])
    before = fleet.sh("vm1", "sha256sum /etc/default/grub.d/zz-halofleet.cfg /etc/modprobe.d/zz-halofleet.conf")
    run = run_pyinfra(description, "deploys/full.py", "--data", "halo_os_reserve_gib=9", review=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Will modify /etc/default/grub.d/zz-halofleet.cfg" in run.stderr
    assert "Will modify /etc/modprobe.d/zz-halofleet.conf" in run.stderr
    assert "+ options ttm pages_limit=" in run.stderr
    assert fleet.sh("vm1", "sha256sum /etc/default/grub.d/zz-halofleet.cfg /etc/modprobe.d/zz-halofleet.conf") == before


def test_rocm_pin_holds_against_apt(fleet):
    # Move vm2 down to 6.4.4 through the stage (the pin allows the downgrade) ...
    run = run_pyinfra(fleet.description(["vm2"], rocm_version="6.4.4"), "deploys/rocm.py")
    assert run.returncode == 0, run.stderr[-3000:]
    assert fleet.sh("vm2", "dpkg-query -W -f='${Version}' rocm-core") == "6.4.4.60404-1"
    # ... without the pin apt would take 7.2.1 (so the assertions below can fail) ...
    unpinned = fleet.sh("vm2", "apt-cache -o Dir::Etc::PreferencesParts=/nonexistent policy rocm-core "
                               "| awk '/Candidate/ {print $2}'")
    assert unpinned == "7.2.1.70201-1"
    # ... with it, an upgrade stays on 6.4.4 and 7.0.1 is never a candidate.
    fleet.sh("vm2", "DEBIAN_FRONTEND=noninteractive apt-get -y upgrade && "
                    "DEBIAN_FRONTEND=noninteractive apt-get -y dist-upgrade")
    assert fleet.sh("vm2", "dpkg-query -W -f='${Version}' rocm-core") == "6.4.4.60404-1"
    policy_text = fleet.sh("vm2", "apt-cache policy rocm-core")
    assert "Candidate: 6.4.4.60404-1" in policy_text
    assert "7.0.1.70001-1 -1" in " ".join(policy_text.split())  # 7.0.1 barred at priority -1
    # and the stage is converged at 6.4.4
    again = run_pyinfra(fleet.description(["vm2"], rocm_version="6.4.4"), "deploys/rocm.py")
    assert again.returncode == 0 and again.changed_ops == []
    # apt obeys an explicit `rocm-core=7.0.1...` over any pin; halofleet then refuses the host on its next run.
    fleet.sh("vm2", "DEBIAN_FRONTEND=noninteractive apt-get -y install rocm-core=7.0.1.70001-1")
    refused = run_pyinfra(fleet.description(["vm2"], rocm_version="6.4.4"), "deploys/full.py")
    assert refused.returncode != 0
    assert "ROCm 7.0.1 is installed and refused" in refused.stderr


def test_verify_reports_every_host(fleet):
    import json
    import os
    import subprocess
    import sys

    from .conftest import ROOT

    description = fleet.description(["vm1", "vm3"])
    env = {**os.environ, "HALOFLEET_VM_INVENTORY": str(description)}
    proc = subprocess.run([sys.executable, "-m", "halofleet.cli", "verify", "inventories/vm.py", "--json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    rows = {row["host"]: row for row in json.loads(proc.stdout)}
    assert rows["vm1"]["status"] == "ok" and rows["vm1"]["cmdline"] == "ok"
    assert rows["vm3"]["status"].startswith("refused:") and "7.0.1" in rows["vm3"]["status"]
    assert proc.returncode == 1  # vm3 is not healthy


def test_failed_update_grub_leaves_the_previous_boot_config(fleet):
    """vm3 (refused so far, untouched) gets a GRUB hook that fails: the deploy reports it and puts things back."""
    fleet.sh("vm3", "dpkg --purge rocm-core && printf '#!/bin/sh\\nexit 1\\n' > /etc/grub.d/99_halofleet_test_broken "
                    "&& chmod +x /etc/grub.d/99_halofleet_test_broken")
    boot_config = "sha256sum /boot/grub/grub.cfg; ls -A /etc/default/grub.d"
    before = fleet.sh("vm3", boot_config)
    cmdline_before = fleet.sh("vm3", "cat /proc/cmdline")
    boot_id = fleet.vms["vm3"].boot_id()

    run = run_pyinfra(fleet.description(["vm3"], rocm_version="none"), "deploys/full.py")

    assert run.returncode != 0
    assert "the previous file is back in place" in run.stderr, run.stderr[-3000:]
    assert fleet.sh("vm3", boot_config) == before
    assert fleet.vms["vm3"].boot_id() == boot_id, "a host whose GRUB update failed must not be rebooted"
    fleet.vms["vm3"].reboot()
    assert fleet.sh("vm3", "cat /proc/cmdline") == cmdline_before

def test_rollback_restores_the_pre_deploy_state(fleet):
    description = fleet.description(["vm1"])
    boot_id = fleet.vms["vm1"].boot_id()
    run = run_pyinfra(description, "deploys/rollback.py")
    assert run.returncode == 0, run.stderr[-3000:]
    assert fleet.vms["vm1"].boot_id() != boot_id, "rollback did not reboot into the user's cmdline"
    assert fleet.sh("vm1", STATE_LISTING) == fleet.snapshots["vm1"]["listing"]
    live = [p for p in cmdline.parse(fleet.sh("vm1", "cat /proc/cmdline")) if not p.startswith("BOOT_IMAGE=")]
    assert live == cmdline.parse(fleet.snapshots["vm1"]["boot_params"])
    assert "ttm.pages_limit=4242" in live and "iommu=pt" in live  # the user's own values are back
    assert fleet.sh("vm1", "sha256sum /etc/default/grub") == fleet.snapshots["vm1"]["etc_default_grub"]
    again = run_pyinfra(description, "deploys/rollback.py")
    assert again.returncode == 0 and again.changed_ops == []
