"""
The ROCm stage on a real apt host that needs no kernel, GRUB or reboot for it: one forky container (booted once for
the module) whose ROCm source is the local repository of fake packages (halofleet/testing/aptrepo.py, copied to
the path the VM tier uses). The scenarios are tests/vm/test_fleet.py's ROCm tests, written once in
halofleet/testing/rocmpins.py: the legacy pin holds against apt (a downgrade to 6.4.4 that unpinned apt would
not take, upgrade and dist-upgrade stay, 7.0.1 barred at -1, a forced 7.0.1 refused by the next full run), and the
moves from legacy 7.2.1 to TheRock 7.14.0 (one-line source, patch level held against 7.14.1) and 10.0 (deb822).

The ROCm/kernel pair check cannot be proved here for another kernel: a container runs its machine's kernel, and
preflight judges the pair from that kernel's KFD topology (``/sys/class/kfd``, which nspawn shows read-only). On a
machine with no gfx1151 node (CI's, and a TCG VM alike) every release gets the "kernel CWSR support unknown"
warning, and each run is checked to say exactly what ``rocm_kernel_verdict`` says for the KFD state read in the
container. On a Strix Halo machine whose kernel has the CWSR fix, 6.4.4 is a refused pair: the pin test then proves
the stage refuses it and changes nothing, and skips the rest (saying why). The pair with a fake gfx1151 topology
is tests/vm/test_serve.py's (an overlay on the VM's own /sys/class).
"""

from __future__ import annotations

import shutil

import pytest

from halofleet.testing import aptrepo, nspawn, rocmpins

from .conftest import TIER_DATA

pytestmark = pytest.mark.nspawn

FORKY_THEROCK_DIR = "debian13"


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("rocm")
    repo = aptrepo.build_repo(workdir / "repo")
    nspawn.rootfs()
    with nspawn.Network(workdir / "net") as net:
        (box,) = net.boot(["rocm1"])
        shutil.copytree(repo, box.directory / "merged" / aptrepo.REPO_PATH.lstrip("/"))

        def deploy(data: dict, deploy_file: str, review: bool = False):
            path = workdir / f"rocm-{data['halo_rocm_version']}.json"
            # AMD publishes TheRock for no forky directory (preflight refuses it unnamed, as tests/unit checks):
            # the data names trixie's, as a forky user would (the legacy data's own suite wins).
            group = {**TIER_DATA, "halo_rocm_repo_suite": FORKY_THEROCK_DIR, **data}
            description = net.write_inventory(path, group_data=group, hosts=[box])
            return net.run_pyinfra(description, deploy_file, review=review)

        yield rocmpins.RocmHost(sh=lambda command, check=True: box.ssh(command, check=check).stdout.strip(),
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
