"""
A fleet of three fresh trixie VMs in one pyinfra run: they converge (GRUB drop-in, modprobe, pinned ROCm from a
local repository, runtime) with a rolling reboot, one host at a time, watched from outside over SSH. Then one host
turns broken (ROCm 7.0.1): the next run refuses it with a clear error and leaves it untouched while the others
have nothing to do. Each stage runs alone, the ROCm pin holds against apt, a failing update-grub is undone, a
rollback restores the pre-deploy state, the status report renders in Chromium, and the fleet survives a host
that vanishes mid-run and one that never comes back from its reboot (the rollout stops there).

The tests share the booted VMs and run in file order.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from halofleet.box import cmdline
from halofleet.testing import rocmpins, wheelsite
from halofleet.testing import vm as vm_mod

from .conftest import REPO_IN_VM, ROOT, WHOLE_TIER_ONLY, rocm_group_data, run_pyinfra

pytestmark = [pytest.mark.vm, WHOLE_TIER_ONLY]

USER_GRUB_LINE = 'GRUB_CMDLINE_LINUX_DEFAULT="quiet halo_test.keep=1 ttm.pages_limit=4242"'
# ... and a drop-in of the user's own, sourced before ours, with a conflicting iommu choice.
USER_DROPIN_LINE = 'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT user.dropin=1 iommu=pt"'
STAGES = ("preflight", "modprobe", "kernel", "rocm", "cwsr", "runtime", "serve")
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

    def run(self, names, *args, rocm_version="7.2.1"):
        """pyinfra on ``names`` with the per-host summary written as JSON (read back into ``run.summary``)."""
        summary = self.workdir / "summary.json"
        summary.unlink(missing_ok=True)
        os.environ["HALOFLEET_SUMMARY_JSON"] = str(summary)
        try:
            run = run_pyinfra(self.description(names, rocm_version), "deploys/full.py", *args)
        finally:
            del os.environ["HALOFLEET_SUMMARY_JSON"]
        run.summary = {item["host"]: item for item in json.loads(summary.read_text())} if summary.exists() else {}
        return run


def ssh_answers(port: int, timeout: float = 4.0) -> bool:
    """True when sshd itself answers (QEMU accepts the forwarded TCP connection even while the guest is down)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def stop_when_down(watched, victim, timeout: float = 900) -> threading.Thread:
    """In the background: as soon as ``watched`` stops answering (its reboot began), power ``victim`` off."""

    def wait_and_stop():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and ssh_answers(watched.port):
            time.sleep(1)
        victim.stop()

    thread = threading.Thread(target=wait_and_stop, daemon=True)
    thread.start()
    return thread


class Reachability:
    """Samples every VM's sshd about once a second in the background: who was down at the same moment."""

    def __init__(self, vms):
        self.vms = vms
        self.samples: list[tuple[float, dict[str, bool]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            results = {}
            threads = [threading.Thread(target=lambda vm=vm: results.__setitem__(vm.name, ssh_answers(vm.port)))
                       for vm in self.vms]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            self.samples.append((time.monotonic(), results))
            self._stop.wait(1.0)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def down_together(self) -> int:
        return max((sum(not up for up in sample.values()) for _, sample in self.samples), default=0)

    def went_down(self, name: str) -> bool:
        return any(not sample[name] for _, sample in self.samples)


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


def test_fleet_converges_with_a_rolling_reboot(fleet):
    # vm1 carries the user's own cmdline params, one of them a stale value of a param halofleet manages.
    fleet.sh("vm1", f"sed -i 's/^GRUB_CMDLINE_LINUX_DEFAULT=.*/{USER_GRUB_LINE}/' /etc/default/grub && "
                    f"echo '{USER_DROPIN_LINE}' > /etc/default/grub.d/50-user.cfg && update-grub")
    for name in fleet.vms:
        fleet.snapshots[name] = {
            "boot_id": fleet.vms[name].boot_id(),
            "etc_default_grub": fleet.sh(name, "sha256sum /etc/default/grub"),
            "listing": fleet.sh(name, STATE_LISTING),
            "boot_params": fleet.sh(name, GRUB_LINUX_PARAMS),
        }

    with Reachability(list(fleet.vms.values())) as watch:
        run = fleet.run(["vm1", "vm2", "vm3"])

    assert run.returncode == 0, run.stderr[-3000:]
    assert all(watch.went_down(name) for name in fleet.vms), "every host must have rebooted"
    print(f"reachability: {len(watch.samples)} samples, at most {watch.down_together()} host(s) down together")
    assert watch.down_together() == 1, "the rolling reboot took two hosts down at once"
    assert {name: item["outcome"] for name, item in run.summary.items()} == dict.fromkeys(fleet.vms, "changed")
    assert "halofleet summary:" in run.stderr

    for name in fleet.vms:
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


def test_broken_host_is_refused_and_untouched_while_the_others_have_nothing_to_do(fleet):
    # vm3 turns broken: ROCm 7.0.1 gets installed behind halofleet's back.
    fleet.sh("vm3", f"dpkg --purge rocm && dpkg -i {REPO_IN_VM}/pool/main/rocm-core_7.0.1.*.deb")
    managed = "sha256sum /etc/default/grub.d/zz-halofleet.cfg /etc/modprobe.d/zz-halofleet.conf /boot/grub/grub.cfg"
    before = {name: (fleet.vms[name].boot_id(), fleet.sh(name, managed)) for name in fleet.vms}

    run = fleet.run(["vm1", "vm2", "vm3"])

    assert run.returncode != 0, "a refused host must make the run fail"
    assert run.failed_hosts == ["vm3"]
    assert "vm3" in run.stderr and "ROCm 7.0.1 is installed and refused" in run.stderr
    assert run.changed_ops == []
    assert run.summary["vm3"]["outcome"] == "failed" and "7.0.1" in run.summary["vm3"]["reason"]
    assert run.summary["vm1"]["outcome"] == run.summary["vm2"]["outcome"] == "converged"
    assert {name: (fleet.vms[name].boot_id(), fleet.sh(name, managed)) for name in fleet.vms} == before


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


def test_installed_wheel_outside_the_checkout_plans_what_the_checkout_plans(fleet, tmp_path):
    """
    The wheel, installed into a fresh venv and with --user (a private PYTHONUSERBASE), run from an empty directory:
    ``halofleet init`` writes a site whose deploy file, run with ``--dry --diff`` against a VM, lists exactly the
    commands the checkout's deploys/full.py lists for the same host and data (halofleet/testing/wheelsite.py; its
    nspawn twin, tests/nspawn/test_installed_wheel.py, runs in CI). vm1 is converged: another OS reserve makes a
    plan to compare, the GRUB drop-in in it.
    """
    wheelsite.plans_like_the_checkout(tmp_path, fleet.description(["vm1"]), ("--data", "halo_os_reserve_gib=9"),
                                      "zz-halofleet.cfg")


def rocm_host(fleet, name: str) -> rocmpins.RocmHost:
    """One VM of the fleet as the ROCm scenarios drive it (halofleet/testing/rocmpins.py, shared with nspawn)."""

    def deploy(data: dict, deploy_file: str, review: bool = False):
        path = fleet.workdir / f"{name}-rocm-{data['halo_rocm_version']}.json"
        return run_pyinfra(vm_mod.write_inventory([fleet.vms[name]], path, group_data=data), deploy_file,
                           review=review)

    return rocmpins.RocmHost(sh=lambda command, check=True: fleet.sh(name, command, check), deploy=deploy)


# vm2 hosts the ROCm tests (their nspawn twin, tests/nspawn/test_rocm_pins.py, runs in CI): it starts on the
# converged 7.2.1, and the tests after them only need it reachable (they purge its ROCm and re-pin it); it is left
# with a forced legacy 7.0.1.
def test_rocm_pin_holds_against_apt(fleet):
    rocmpins.pin_holds_against_apt(rocm_host(fleet, "vm2"))


def test_rocm_therock_714_replaces_legacy_and_holds_its_patch_level(fleet):
    rocmpins.therock_714_replaces_legacy(rocm_host(fleet, "vm2"))


def test_rocm_therock_10_from_a_deb822_source_replaces_legacy(fleet):
    rocmpins.therock_10_from_deb822(rocm_host(fleet, "vm2"))


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


def test_html_report_renders_in_chromium(fleet, tmp_path):
    description = fleet.description(["vm1", "vm2", "vm3"])
    env = {**os.environ, "HALOFLEET_VM_INVENTORY": str(description)}
    html, md = tmp_path / "report.html", tmp_path / "report.md"
    proc = subprocess.run([sys.executable, "-m", "halofleet.cli", "report", "inventories/vm.py", "--html", str(html),
                           "--md", str(md)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr  # vm3 is refused (ROCm 7.0.1)
    chromium = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run(chromium + ["--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.stdout.count('<tr class="host"') == 3
    for name in fleet.vms:
        assert f'data-host="{name}"' in dom.stdout
    shot = ROOT / "tests" / "vm" / "artifacts" / "fleet-report.png"
    shot.parent.mkdir(exist_ok=True)
    shot.unlink(missing_ok=True)
    subprocess.run(chromium + ["--window-size=1400,500", f"--screenshot={shot}", html.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    assert md.read_text().count("\n| vm") == 3


def test_failed_update_grub_leaves_the_previous_boot_config(fleet):
    """vm3 (refused so far, untouched) gets a GRUB hook that fails: the deploy reports it and puts things back."""
    fleet.sh("vm3", "dpkg --purge rocm-core && printf '#!/bin/sh\\nexit 1\\n' > /etc/grub.d/99_halofleet_test_broken "
                    "&& chmod +x /etc/grub.d/99_halofleet_test_broken")
    boot_config = "sha256sum /boot/grub/grub.cfg; ls -A /etc/default/grub.d"
    before = fleet.sh("vm3", boot_config)
    cmdline_before = fleet.sh("vm3", "cat /proc/cmdline")
    boot_id = fleet.vms["vm3"].boot_id()

    # vm3 is converged: another OS reserve makes the drop-in change.
    run = run_pyinfra(fleet.description(["vm3"], rocm_version="none"), "deploys/full.py",
                      "--data", "halo_os_reserve_gib=9")

    assert run.returncode != 0
    assert "the previous file is back in place" in run.stderr, run.stderr[-3000:]
    assert fleet.sh("vm3", boot_config) == before
    assert fleet.vms["vm3"].boot_id() == boot_id, "a host whose GRUB update failed must not be rebooted"
    fleet.vms["vm3"].reboot()
    assert fleet.sh("vm3", "cat /proc/cmdline") == cmdline_before
    fleet.sh("vm3", "rm /etc/grub.d/99_halofleet_test_broken")

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


def test_host_vanishing_mid_run_leaves_the_others_converged(fleet):
    """vm3 is killed while vm1 reboots: vm1 and vm2 finish with the new cmdline, the summary names vm3."""
    for name in ("vm2", "vm3"):  # both carry a forced ROCm 7.0.1 from the tests above
        fleet.sh(name, "dpkg --purge rocm rocm-core >/dev/null 2>&1 || true")

    killer = stop_when_down(watched=fleet.vms["vm1"], victim=fleet.vms["vm3"])
    run = fleet.run(["vm1", "vm2", "vm3"], "--data", "halo_os_reserve_gib=10")
    killer.join()

    assert run.returncode != 0
    assert run.summary["vm3"]["outcome"] == "unreachable", run.summary
    for name in ("vm1", "vm2"):
        assert run.summary[name]["outcome"] == "changed", run.summary
        assert "ttm.pages_limit=1310720" in fleet.sh(name, "cat /proc/cmdline")  # 15 GiB seen - 10 reserved


def test_host_that_does_not_come_back_stops_the_rollout(fleet):
    """The first host to go down for its reboot never returns: the other is not rebooted, both are reported."""
    boots = {name: fleet.vms[name].boot_id() for name in ("vm1", "vm2")}
    victims: list[str] = []

    def stop_first_down():  # pyinfra does not promise which host of the batch order reboots first
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and not victims:
            for name in boots:
                if not ssh_answers(fleet.vms[name].port):
                    fleet.vms[name].stop()
                    victims.append(name)
                    break
            time.sleep(1)

    killer = threading.Thread(target=stop_first_down, daemon=True)
    killer.start()
    run = fleet.run(["vm1", "vm2"], "--data", "halo_os_reserve_gib=9", "--data", "halo_reboot_timeout=60")
    killer.join()

    (victim,) = victims
    (other,) = set(boots) - {victim}
    assert run.returncode != 0
    assert run.summary[victim]["outcome"] == "unreachable"
    assert "did not come back" in run.summary[victim]["reason"]
    assert run.summary[other]["outcome"] == "failed", run.summary
    assert f"rollout stopped because {victim} did not come back" in run.summary[other]["reason"]
    assert fleet.vms[other].boot_id() == boots[other], "the rollout went on after a host did not come back"
