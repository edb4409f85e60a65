"""
halo_stack on a real trixie VM booted by QEMU through its own GRUB: a host whose kernel package is not the
profile's and whose firmware package is below the profile's minimum (MES 0x83 on its fake gfx1151, which alone
would refuse it) is converged to the profile: both packages installed and held, GRUB's default is the profile's
kernel, the host reboots into it (new boot id, ``BOOT_IMAGE`` naming the profile's file), the carve-out write and
the amd_ttm options land in the fake sysfs; a second run changes nothing; the rollback restores GRUB's previous
default, releases the holds, writes the carve-out back, and the host boots its previous kernel again.

The profile's kernel package is built by the test (aptrepo.build_stack_repo): a copy of the VM's own vmlinuz and
initramfs under another release name, so it boots with the VM's modules. The release sorts below the VM's own, so
the user's GRUB_DEFAULT=0 boots the VM's kernel again once halofleet's default is gone. The host's only apt source
is the local repository (the VM has no network; a source it cannot resolve costs apt-get update ~100 s).

The tests share one VM and run in file order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from halofleet.testing import aptrepo, fakesysfs
from halofleet.testing import vm as vm_mod

from .conftest import ROOT, run_pyinfra

# Two reboots under TCG (one into a copied kernel whose boot took ~4 min here) make this module cost ~16.5 min on
# one VM: it runs in a process of its own, beside the other VM modules (tests/conftest.py).
pytestmark = [pytest.mark.vm, pytest.mark.own_vm_process]

RELEASE = "6.12.0-halotest-amd64"
KERNEL_PACKAGE = f"linux-image-{RELEASE}"
KERNEL_VERSION = "6.12.0-1"
FIRMWARE_OLD, FIRMWARE_NEW = "20230210-5", "20260410-1"
REPO = "/srv/halofleet-stack-repo"
FAKE = "/var/tmp/halofleet-fake-gpu"  # on the disk: the carve-out write survives the reboot for the assertions
CARVEOUT = f"{FAKE}/class/drm/{fakesysfs.CARD}/device/uma/carveout"
PROFILE = {
    "name": "halotest", "source": "tests/vm/test_stack.py (constructed)", "kernel_package": KERNEL_PACKAGE,
    "kernel_release": RELEASE, "kernel_version": KERNEL_VERSION, "firmware_package": "firmware-amd-graphics",
    "firmware_min": "20260309", "mes_min": "0x86",
}
DATA = {"halo_serve": "none", "halo_allow_non_strix_halo": True, "halo_stack": PROFILE}
GRUB_DEFAULT = ("( . /etc/default/grub; for f in /etc/default/grub.d/*.cfg; do . $f; done; echo $GRUB_DEFAULT ) "
                "2>/dev/null")


def boot_image(machine) -> str:
    return next(param.split("=", 1)[1] for param in machine.ssh("cat /proc/cmdline").stdout.split()
                if param.startswith("BOOT_IMAGE="))


class Box:
    def __init__(self, machine, description, running):
        self.vm, self.description, self.running = machine, description, running

    def sh(self, command: str, check: bool = True) -> str:
        return self.vm.ssh(command, check=check).stdout.strip()

    def fake_gpu(self, mes: int, keep: bool) -> None:
        self.sh(fakesysfs.install_script(cwsr=True, mes_version=mes, carveout=3, ttm_module="amd_ttm", root=FAKE,
                                         keep=keep))


@pytest.fixture(scope="module")
def box(base_image, vm_workdir, tmp_path_factory):
    (machine,) = vm_mod.boot_vms(["stack1"], base_image, vm_workdir)
    try:
        running = machine.ssh("uname -r").stdout.strip()
        tmp = tmp_path_factory.mktemp("stack")
        for name in ("vmlinuz", "initrd.img"):  # the VM's own kernel, copied out for the profile's package
            with open(tmp / name, "wb") as out:
                subprocess.run(machine.ssh_command(f"cat /boot/{name}-{running}"), stdout=out, check=True)
        repo = aptrepo.build_stack_repo(tmp / "repo", RELEASE, KERNEL_VERSION, tmp / "vmlinuz", tmp / "initrd.img",
                                        (FIRMWARE_OLD, FIRMWARE_NEW))
        machine.copy_dir(repo, REPO)
        machine.ssh(f"mv /etc/apt/sources.list /root/sources.list.orig && "
                    f"echo 'deb [trusted=yes] file:{REPO} {aptrepo.SUITE} main' > /etc/apt/sources.list && "
                    f"apt-get update -qq && dpkg -i {REPO}/pool/main/firmware-amd-graphics_{FIRMWARE_OLD}_amd64.deb")
        description = vm_mod.write_inventory([machine], vm_workdir / "stack1.json", group_data=DATA)
        result = Box(machine, description, running)
        result.fake_gpu(mes=0x83, keep=False)
        yield result
    finally:
        machine.stop()


def verify_rows(box) -> dict:
    env = {**os.environ, "HALOFLEET_VM_INVENTORY": str(box.description)}
    proc = subprocess.run([sys.executable, "-m", "halofleet.cli", "verify", "inventories/vm.py", "--json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return {row["host"]: row for row in json.loads(proc.stdout)}


def test_drift_is_shown_and_the_dry_run_lists_the_remediation(box):
    row = verify_rows(box)["stack1"]
    assert row["stack"].startswith("halotest: drift: "), row
    assert f"kernel {box.running} (wants {RELEASE})" in row["stack"]
    assert "firmware package 20230210-5, not held" in row["stack"] and "MES 0x83 (wants >= 0x86)" in row["stack"]
    before = box.sh(f"sha256sum /boot/grub/grub.cfg; ls /etc/default/grub.d; apt-mark showhold; cat {CARVEOUT}")

    review = run_pyinfra(box.description, "deploys/full.py", review=True)

    assert review.returncode == 0, review.stderr[-3000:]
    assert "MES firmware 0x83 is refused" in review.stderr and "halo_stack halotest installs newer" in review.stderr
    for expected in (f"apt-get install -y -q --no-install-recommends --allow-downgrades --allow-change-held-packages "
                     f"-o DPkg::Lock::Timeout=300 {KERNEL_PACKAGE}={KERNEL_VERSION}",
                     f"apt-mark hold {KERNEL_PACKAGE}", "apt-mark hold firmware-amd-graphics",
                     'GRUB_DEFAULT="gnulinux-advanced-', f"gnulinux-{RELEASE}-advanced-",
                     f"/sys/class/drm/{fakesysfs.CARD}/device/uma/carveout (was 3"):
        assert expected in review.stderr, expected
    assert "options amd_ttm pages_limit=" in review.stderr
    assert box.sh(f"sha256sum /boot/grub/grub.cfg; ls /etc/default/grub.d; apt-mark showhold; cat {CARVEOUT}") == \
        before


def test_host_converges_to_its_profile_and_boots_its_kernel(box):
    boot_id = box.vm.boot_id()
    assert boot_image(box.vm) == f"/boot/vmlinuz-{box.running}"

    run = run_pyinfra(box.description, "deploys/full.py")

    assert run.returncode == 0, run.stderr[-3000:]
    assert box.vm.boot_id() != boot_id, "the host did not reboot"
    assert boot_image(box.vm) == f"/boot/vmlinuz-{RELEASE}"
    assert sorted(box.sh("apt-mark showhold").split()) == sorted([KERNEL_PACKAGE, "firmware-amd-graphics"])
    assert box.sh("dpkg-query -W -f='${Version}' firmware-amd-graphics") == FIRMWARE_NEW
    assert box.sh(f"dpkg-query -W -f='${{Version}}' {KERNEL_PACKAGE}") == KERNEL_VERSION
    default = box.sh(GRUB_DEFAULT)
    assert default.endswith(f">gnulinux-{RELEASE}-advanced-" + default.rsplit("-advanced-", 1)[1])
    assert f"'gnulinux-{RELEASE}-advanced-" in box.sh("cat /boot/grub/grub.cfg")
    assert box.sh(f"test -e /boot/vmlinuz-{box.running} && echo kept") == "kept", "the previous kernel must stay"
    # The writes landed in the fake sysfs: the carve-out's smallest option, the amd_ttm module's options.
    assert box.sh(f"cat {CARVEOUT}") == "0"
    live = box.sh("cat /proc/cmdline").split()
    assert any(param.startswith("amd_ttm.pages_limit=") for param in live)
    assert "options amd_ttm pages_limit=" in box.sh("cat /etc/modprobe.d/zz-halofleet.conf")
    # halo_emit_gttsize unset: what the running kernel wants; a 6.x kernel logs no deprecation warning for it
    assert any(param.startswith("amdgpu.gttsize=") for param in live)


def test_second_run_changes_nothing(box):
    # The fake GPU is gone with the reboot: back, with what was written to it, and the new firmware's MES.
    box.fake_gpu(mes=0x86, keep=True)
    run = run_pyinfra(box.description, "deploys/full.py")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.changed_ops == [], run.changed_ops
    row = verify_rows(box)["stack1"]
    assert row["stack"] == "halotest: ok", row


def test_rollback_restores_the_previous_default_and_boots_it(box):
    boot_id = box.vm.boot_id()
    run = run_pyinfra(box.description, "deploys/rollback.py")
    assert run.returncode == 0, run.stderr[-3000:]
    assert box.vm.boot_id() != boot_id, "the rollback did not reboot"
    assert boot_image(box.vm) == f"/boot/vmlinuz-{box.running}"
    assert box.sh(GRUB_DEFAULT) == "0"
    assert box.sh("ls /etc/default/grub.d") == ""
    assert box.sh("apt-mark showhold") == ""
    assert box.sh(f"cat {CARVEOUT}") == "3"  # written back before the reboot
    # The packages stay (README): the profile's kernel is still in GRUB's menu, only no longer its default.
    assert box.sh(f"dpkg-query -W -f='${{Status}}' {KERNEL_PACKAGE}") == "install ok installed"
    box.fake_gpu(mes=0x86, keep=True)
    again = run_pyinfra(box.description, "deploys/rollback.py")
    assert again.returncode == 0 and again.changed_ops == [], again.changed_ops
