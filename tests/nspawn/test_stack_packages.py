"""
halo_stack's packages on a real host that needs no kernel or GRUB for them (a forky container, halo_boot: external):
the profile's kernel package (a stand-in: files only) and a newer firmware package from a local apt repository are
installed and held, the dry run lists it all and changes nothing, a second run changes nothing, the reboot the new
firmware needs is reported as pending, and the rollback releases exactly the holds halofleet placed (one the user
placed stays) while the packages stay installed. GRUB's default and the reboot into the profile's kernel need a
bootloader: tests/vm/test_stack.py.
"""

from __future__ import annotations

import shutil

import pytest

from halofleet.testing import aptrepo

from .conftest import TIER_DATA

pytestmark = pytest.mark.nspawn

RELEASE = "6.12.0-halotest-amd64"
KERNEL_PACKAGE = f"linux-image-{RELEASE}"
PROFILE = {"name": "halotest", "source": "tests/nspawn/test_stack_packages.py (constructed)",
           "kernel_package": KERNEL_PACKAGE, "kernel_release": RELEASE, "kernel_version": "6.12.0-1",
           "firmware_package": "firmware-amd-graphics", "firmware_min": "20260309"}
HELD = "apt-mark showhold | sort | tr '\\n' ' '"


def test_stack_packages_are_installed_held_and_released(network, tmp_path):
    (box,) = network.boot(["stack1"])
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
    data = {**TIER_DATA, "halo_serve": "none", "halo_allow_non_strix_halo": True, "halo_stack": PROFILE}
    description = network.write_inventory(tmp_path / "hosts.json", host_data={"stack1": data})

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

    rollback = network.run_pyinfra(description, "deploys/rollback.py")
    assert rollback.returncode == 0, rollback.stderr[-3000:]
    assert box.ssh(HELD).stdout.split() == ["apt"]  # the user's own hold stays
    assert box.ssh(f"dpkg-query -W -f='${{Status}}' {KERNEL_PACKAGE} firmware-amd-graphics").stdout == \
        "install ok installedinstall ok installed"  # packages stay
    second = network.run_pyinfra(description, "deploys/rollback.py")
    assert second.returncode == 0 and second.changed_ops == [], second.changed_ops
