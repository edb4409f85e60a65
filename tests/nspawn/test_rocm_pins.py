"""
The ROCm stage on a real apt host that needs no kernel, GRUB or reboot for it: one forky container (booted once for
the module) whose ROCm source is the local repository of fake packages (halofleet/testing/aptrepo.py, copied to
the path the VM tier uses). The scenarios are tests/vm/test_fleet.py's ROCm tests, written once in
halofleet/testing/rocmpins.py: the legacy pin holds against apt (a downgrade to 6.4.4 that unpinned apt would
not take, upgrade and dist-upgrade stay, 7.0.1 barred at -1, a forced 7.0.1 refused by the next full run), and the
moves from legacy 7.2.1 to TheRock 7.14.0 (one-line source, patch level held against 7.14.1) and 10.0 (deb822).
Then test_fleet.py's broken host on two fresh containers: one full run converges both, ROCm 7.0.1 installed on one
behind halofleet's back is refused on the next run while the other has nothing to do, and ``halofleet verify`` says
so (the kernel params the converge wrote stay pending there: the container runs its machine's kernel).

The ROCm/kernel pair check cannot be proved here for another kernel: a container runs its machine's kernel, and
preflight judges the pair from that kernel's KFD topology (``/sys/class/kfd``, which nspawn shows read-only). On a
machine with no gfx1151 node (CI's, and a TCG VM alike) every release gets the "kernel CWSR support unknown"
warning, and each run is checked to say exactly what ``rocm_kernel_verdict`` says for the KFD state read in the
container. On a Strix Halo machine whose kernel has the CWSR fix, 6.4.4 is a refused pair: the pin test then proves
the stage refuses it and changes nothing, and skips the rest (saying why); that branch has not run on CI's machines.
The pair with a fake gfx1151 topology is tests/vm/test_serve.py's (an overlay on the VM's own /sys/class). Likewise
the probe looks for amdgpu-dkms's module under the container's own /lib/modules/<the machine's release>: nothing
there, as on the VMs.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from halofleet.testing import aptrepo, nspawn, rocmpins
from halofleet.testing.runs import ROOT

from .conftest import TIER_DATA, module_network

pytestmark = pytest.mark.nspawn

FORKY_THEROCK_DIR = "debian13"


class Rig:
    """The module's private network, the repository every container gets, and descriptions of its hosts."""

    def __init__(self, net: nspawn.Network, workdir: Path):
        self.net, self.workdir = net, workdir
        self.repo = aptrepo.build_repo(workdir / "repo")

    def boot(self, names: list[str]) -> list[nspawn.Container]:
        boxes = self.net.boot(names)
        for box in boxes:
            shutil.copytree(self.repo, box.directory / "merged" / aptrepo.REPO_PATH.lstrip("/"))
        return boxes

    def description(self, boxes: list[nspawn.Container], data: dict) -> Path:
        # AMD publishes TheRock for no forky directory (preflight refuses it unnamed, as tests/unit checks): the data
        # names trixie's, as a forky user would (the legacy data's own suite wins).
        group = {**TIER_DATA, "halo_rocm_repo_suite": FORKY_THEROCK_DIR, **data}
        name = "-".join(box.name for box in boxes)
        return self.net.write_inventory(self.workdir / f"{name}-{data['halo_rocm_version']}.json", group_data=group,
                                        hosts=boxes)


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    with module_network(tmp_path_factory, "rocm") as (net, workdir):
        yield Rig(net, workdir)


@pytest.fixture(scope="module")
def host(rig):
    """One container for the three scenarios, as they drive it."""
    (box,) = rig.boot(["rocm1"])

    def deploy(data: dict, deploy_file: str, review: bool = False):
        return rig.net.run_pyinfra(rig.description([box], data), deploy_file, review=review)

    return rocmpins.RocmHost(sh=lambda command, check=True: box.ssh(command, check=check).stdout.strip(),
                             deploy=deploy)


def test_rocm_pin_holds_against_apt(host):
    # Where the VM tier's converge left its host: legacy 7.2.1, installed here by the stage itself.
    first = host.deploy(aptrepo.rocm_group_data("7.2.1"), "deploys/rocm.py")
    assert first.returncode == 0, first.stderr[-3000:]
    rocmpins.says_kernel_pair(host, first, "7.2.1")
    refused_pair = rocmpins.kernel_refuses(host, aptrepo.rocm_group_data("6.4.4"))
    if refused_pair:
        pytest.skip(f"this machine's kernel (the container's) makes 6.4.4 a refused pair, proved refused: "
                    f"{refused_pair}")
    rocmpins.pin_holds_against_apt(host)


def test_rocm_therock_714_replaces_legacy_and_holds_its_patch_level(host):
    rocmpins.therock_714_replaces_legacy(host)


def test_rocm_therock_10_from_a_deb822_source_replaces_legacy(host):
    rocmpins.therock_10_from_deb822(host)


# What the full deploy writes on a container (halo_boot: external: no GRUB drop-in), compared before and after.
MANAGED = ("sha256sum /etc/modprobe.d/zz-halofleet.conf /etc/apt/preferences.d/halofleet-rocm "
           "/etc/apt/sources.list.d/halofleet-rocm.sources")


def test_broken_host_is_refused_and_untouched_while_the_other_has_nothing_to_do(rig, monkeypatch):
    """tests/vm/test_fleet.py's second test on two fresh containers: both converge in one run, then ROCm 7.0.1
    is installed on one behind halofleet's back; the next run refuses it alone and changes nothing anywhere, and
    ``halofleet verify`` says the same."""
    good, broken = rig.boot(["fleet1", "fleet2"])
    description = rig.description([good, broken], aptrepo.rocm_group_data("7.2.1"))
    summary = rig.workdir / "summary.json"
    monkeypatch.setenv("HALOFLEET_SUMMARY_JSON", str(summary))
    converge = rig.net.run_pyinfra(description, "deploys/full.py")
    assert converge.returncode == 0, converge.stderr[-3000:]
    assert {item["host"]: item["outcome"] for item in json.loads(summary.read_text())} == {
        "fleet1": "changed", "fleet2": "changed"}
    broken.ssh(f"dpkg --purge rocm && dpkg -i {aptrepo.REPO_PATH}/pool/main/rocm-core_7.0.1.*.deb")
    before = {box.name: box.ssh(MANAGED).stdout for box in (good, broken)}

    run = rig.net.run_pyinfra(description, "deploys/full.py")

    assert run.returncode != 0, "a refused host must make the run fail"
    assert run.failed_hosts == ["fleet2"]
    assert "fleet2" in run.stderr and "ROCm 7.0.1 is installed and refused" in run.stderr
    assert run.changed_ops == []
    outcomes = {item["host"]: item for item in json.loads(summary.read_text())}
    assert outcomes["fleet2"]["outcome"] == "failed" and "7.0.1" in outcomes["fleet2"]["reason"]
    assert outcomes["fleet1"]["outcome"] == "converged"
    assert {box.name: box.ssh(MANAGED).stdout for box in (good, broken)} == before

    verify = rig.net.run([sys.executable, "-m", "halofleet", "verify", "inventories/vm.py", "--json"], cwd=ROOT,
                         env={**os.environ, "HALOFLEET_VM_INVENTORY": str(description)}, capture_output=True,
                         text=True, timeout=300)
    rows = {row["host"]: row for row in json.loads(verify.stdout)}
    assert rows["fleet2"]["status"].startswith("refused:") and "7.0.1" in rows["fleet2"]["status"], rows
    # fleet1 runs the machine's kernel, booted without the params the run wrote (halo_boot: external: booting is the
    # user's): verify calls them pending, not a refusal, and reads the pinned ROCm.
    assert (rows["fleet1"]["status"], rows["fleet1"]["cmdline"], rows["fleet1"]["reboot pending"],
            rows["fleet1"]["rocm"]) == ("not converged", "differs", "yes", "7.2.1"), rows
    assert verify.returncode == 1
