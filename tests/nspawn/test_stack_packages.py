"""
halo_stack's packages on a real host that needs no kernel or GRUB for them (a forky container, halo_boot: external):
the profile's kernel package (a stand-in: files only) and a newer firmware package from a local apt repository are
installed and held, the dry run lists it all and changes nothing, a second run changes nothing, the reboot the new
firmware needs is reported as pending, and the rollback releases exactly the holds halofleet placed (one the user
placed stays) while the packages stay installed. With a monitor host, the host's stack gauge and the drift alert
say what verify says: the kernel item drifts (a container runs its machine's kernel), the held packages do not, and a
hold the user releases becomes a firing ``HaloStackDrift``. GRUB's default and the reboot into the profile's kernel
need a bootloader: tests/vm/test_stack.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse

import pytest

from halofleet.testing import aptrepo
from halofleet.testing.runs import ROOT

from .conftest import TIER_DATA

pytestmark = pytest.mark.nspawn

RELEASE = "6.12.0-halotest-amd64"
KERNEL_PACKAGE = f"linux-image-{RELEASE}"
PROFILE = {"name": "halotest", "source": "tests/nspawn/test_stack_packages.py (constructed)",
           "kernel_package": KERNEL_PACKAGE, "kernel_release": RELEASE, "kernel_version": "6.12.0-1",
           "firmware_package": "firmware-amd-graphics", "firmware_min": "20260309"}
HELD = "apt-mark showhold | sort | tr '\\n' ' '"
PORT = 9099  # Debian's own prometheus.service in this tier's image has 9090


def drift_gauges(network, mon) -> dict[str, float]:
    """halofleet_stack_drift of stack1 by item, through the monitor's Prometheus API."""
    query = urllib.parse.urlencode({"query": 'halofleet_stack_drift{host="stack1"}'})
    out = network.run(["curl", "-s", "-m", "10", f"http://{mon.address}:{PORT}/api/v1/query?{query}"],
                      capture_output=True, text=True).stdout
    return {item["metric"]["item"]: float(item["value"][1]) for item in json.loads(out)["data"]["result"]
            if item["metric"].get("profile") == PROFILE["name"]}


def firing(network, mon) -> set[str]:
    out = network.run(["curl", "-s", "-m", "10", f"http://{mon.address}:{PORT}/api/v1/alerts"],
                      capture_output=True, text=True).stdout
    return {alert["labels"]["item"] for alert in json.loads(out)["data"]["alerts"]
            if alert["labels"]["alertname"] == "HaloStackDrift" and alert["state"] == "firing"}


def verify_stack(network, description) -> str:
    """``halofleet verify``'s stack cell for stack1."""
    run = network.run([sys.executable, "-m", "halofleet", "verify", "inventories/vm.py", "--limit", "stack1",
                       "--json"], cwd=ROOT, env={**os.environ, "HALOFLEET_VM_INVENTORY": str(description)},
                      capture_output=True, text=True, timeout=300)
    rows = json.loads(run.stdout)
    assert [row["host"] for row in rows] == ["stack1"], run.stderr[-3000:]
    return rows[0]["stack"]


def drifted_items(cell: str) -> set[str]:
    """The items a verify stack cell names as drift ("NAME: drift: ITEM found (wants ...); ...")."""
    listed = cell.split("drift: ", 1)[1].split("; ") if "drift: " in cell else []
    names = ("kernel package", "firmware package", "kernel")  # the longer names first: "kernel" begins the others
    return {next(name for name in names if entry.startswith(name + " ")) for entry in listed
            if any(entry.startswith(name + " ") for name in names)}


def until(what: str, check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.5)


def test_stack_packages_are_installed_held_and_released(network, tmp_path):
    box, mon = network.boot(["stack1", "mon"])
    image, initrd = tmp_path / "vmlinuz", tmp_path / "initrd.img"
    image.write_bytes(b"a stand-in kernel image\n")
    initrd.write_bytes(b"a stand-in initramfs\n")
    repo = aptrepo.build_stack_repo(tmp_path / "repo", RELEASE, "6.12.0-1", image, initrd, ("20230210-5", "20260410-1"))
    shutil.copytree(repo, box.directory / "merged/srv/stack-repo")
    # The repository is the host's only source; the firmware below the minimum is installed first, and the user
    # holds a package of their own.
    box.ssh("rm -f /etc/apt/sources.list.d/* && echo 'deb [trusted=yes] file:/srv/stack-repo stable main' "
            "> /etc/apt/sources.list && apt-get update -qq && "
            "dpkg -i /srv/stack-repo/pool/main/firmware-amd-graphics_20230210-5_amd64.deb && apt-mark hold apt")
    data = {**TIER_DATA, "halo_serve": "none", "halo_allow_non_strix_halo": True, "halo_stack": PROFILE,
            "halo_bind": box.address, "halo_allow_unauthenticated": True, "halo_textfile_interval_s": 5}
    monitor = {**TIER_DATA, "halo_serve": "none", "halo_bind": mon.address, "halo_monitor": True,
               "halo_monitor_bind": mon.address, "halo_monitor_port": PORT, "halo_monitor_scrape_s": 1,
               "halo_alert_for_s": 2, "halo_allow_unauthenticated": True}
    description = network.write_inventory(tmp_path / "hosts.json", host_data={"stack1": data}, hosts=[box])
    watched = network.write_inventory(tmp_path / "watched.json", host_data={"stack1": data, "mon": monitor})

    review = network.run_pyinfra(description, "deploys/kernel.py", review=True)
    assert review.returncode == 0, review.stderr[-3000:]
    assert f"apt-mark hold {KERNEL_PACKAGE}" in review.stderr and "apt-mark hold firmware-amd-graphics" in review.stderr
    assert box.ssh(HELD).stdout.split() == ["apt"]

    run = network.run_pyinfra(description, "deploys/kernel.py")
    assert run.returncode == 0, run.stderr[-3000:]
    assert box.ssh(HELD).stdout.split() == ["apt", "firmware-amd-graphics", KERNEL_PACKAGE]
    assert box.ssh("dpkg-query -W -f='${Version}' firmware-amd-graphics").stdout == "20260410-1"
    assert box.ssh(f"cat /boot/vmlinuz-{RELEASE}").stdout == "a stand-in kernel image\n"
    assert "reboot pending (halo_boot: external)" in run.stderr
    assert f"boot {RELEASE} by hand" in run.stderr  # no bootloader of halofleet's: GRUB's default is not set

    again = network.run_pyinfra(description, "deploys/kernel.py")
    assert again.returncode == 0 and again.changed_ops == [], again.changed_ops

    # The monitor: the host's own check of its profile, scraped, says what verify says of the same host.
    watch = network.run_pyinfra(watched, "deploys/monitor.py")
    assert watch.returncode == 0, watch.stderr[-3000:]
    held = {"kernel": 1.0, "kernel package": 0.0, "firmware package": 0.0}
    assert until("stack gauges", lambda: drift_gauges(network, mon)) == held
    assert drifted_items(verify_stack(network, watched)) == {"kernel"}
    # The user releases a hold: the gauge (the timer runs every 5 s) and then the alert follow.
    box.ssh("apt-mark unhold firmware-amd-graphics")
    # (a scrape that fails on a loaded machine leaves no sample for a moment: that is "not yet")
    assert until("the released hold", lambda: drift_gauges(network, mon).get("firmware package") == 1.0, timeout=60)
    alerts = until("HaloStackDrift", lambda: (lambda now: now if "firmware package" in now else None)(
        firing(network, mon)), timeout=60)
    assert alerts == {"kernel", "firmware package"}
    assert drifted_items(verify_stack(network, watched)) == {"kernel", "firmware package"}
    box.ssh("apt-mark hold firmware-amd-graphics")
    assert until("the hold again", lambda: drift_gauges(network, mon) == held, timeout=60)

    rollback = network.run_pyinfra(watched, "deploys/rollback.py")
    assert rollback.returncode == 0, rollback.stderr[-3000:]
    assert box.ssh(HELD).stdout.split() == ["apt"]  # the user's own hold stays
    assert box.ssh(f"dpkg-query -W -f='${{Status}}' {KERNEL_PACKAGE} firmware-amd-graphics").stdout == \
        "install ok installedinstall ok installed"  # packages stay
    assert mon.ssh("ls /etc/halofleet 2>/dev/null; systemctl list-units --plain --no-legend 'halo-*'",
                   check=False).stdout.strip() == ""
    second = network.run_pyinfra(watched, "deploys/rollback.py")
    assert second.returncode == 0 and second.changed_ops == [], second.changed_ops
