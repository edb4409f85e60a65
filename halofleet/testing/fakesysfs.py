"""
A gfx1151 GPU for a test VM without one: overlayfs on ``/sys/class`` adds a KFD topology node and a DRM card's
memory files, and a tmpfs on ``/sys/kernel/debug`` an ``amdgpu_firmware_info``. Gone at the next boot.

Values are real Strix Halo ones from ../shared/captures/strix-halo.md: KFD node §1a/§1c/§1d (vendor_id 4098,
device_id 5510, location_id 49664, domain 0, simd_count 80, drm_render_minor 128, cwsr_size 19185664,
ctl_stack_size 16384), the firmware lines §2a/§2b. No complete properties file was ever captured, so the file
holds only those lines (constructed from captured values).
"""

from __future__ import annotations

import shlex

FAKE_ROOT = "/run/halofleet-fake-gpu"
CARD = "card9"  # a card number no VM has

KFD_NODE = ["cpu_cores_count 0", "simd_count 80", "gfx_target_version 110501", "vendor_id 4098", "device_id 5510",
            "location_id 49664", "domain 0", "drm_render_minor 128"]
CWSR_LINES = ["cwsr_size 19185664", "ctl_stack_size 16384"]


def firmware_info(mes_version: int) -> str:
    """The MES lines of ``amdgpu_firmware_info`` as the driver prints them (captures §2b layout)."""
    return ("MES_KIQ feature version: 6, firmware version: 0x0000006f\n"
            f"MES feature version: 1, firmware version: {mes_version:#010x}\n"
            "VBIOS version: 113-STRXLGEN-001\n")


def _write(path: str, text: str) -> str:
    return f"mkdir -p {shlex.quote(path.rsplit('/', 1)[0])} && printf '%s' {shlex.quote(text)} > {shlex.quote(path)}"


# The BIOS carve-out's files (Linux 7.0+, where the VBIOS allows) [C: torvalds/linux 685b711 commit message:
# uma/carveout_options lists the options with their index, uma/carveout reads and takes an index]. The option
# lines follow the layout "<index>: <name> (<size> MB|GB)" [S: a public parser of that file; no capture exists].
CARVEOUT_OPTIONS = ("0: Minimum (512 MB)", "1: Low (4 GB)", "2: Medium (16 GB)", "3: High (64 GB)")


def install_script(cwsr: bool, vram_bytes: int = 512 * 2**20, mes_version: int | None = None,
                   carveout: int | None = None, ttm_module: str | None = None, root: str = FAKE_ROOT,
                   keep: bool = False) -> str:
    """
    Shell (as root in the VM) that puts a fake gfx1151 GPU in place of whatever fake one was there before.

    ``carveout``: also the ``uma/carveout`` files (that index now), and the overlay on /sys/class is writable:
    what is written to the card's files lands under ``root``/class. ``ttm_module``: a /sys/module/<name> directory
    with ``parameters/pages_limit`` (an overlay on /sys/module). ``root`` on a disk (not /run) keeps those writes
    across a reboot; ``keep``: mount again over what an earlier call left there (its writes included).
    """
    node = KFD_NODE + (CWSR_LINES if cwsr else [])
    card = f"{root}/class/drm/{CARD}/device"
    steps = ["set -e", REMOVE_SCRIPT]
    if not keep:
        steps += [
            f"rm -rf {root}",
            # node 0 is the CPU, as on a real box
            _write(f"{root}/class/kfd/kfd/topology/nodes/0/properties", "cpu_cores_count 32\nsimd_count 0\n"),
            _write(f"{root}/class/kfd/kfd/topology/nodes/1/properties", "\n".join(node) + "\n"),
            _write(f"{card}/mem_info_vram_total", f"{vram_bytes}\n"),
        ]
        if carveout is not None:
            steps += [_write(f"{card}/uma/carveout_options", "\n".join(CARVEOUT_OPTIONS) + "\n"),
                      _write(f"{card}/uma/carveout", f"{carveout}\n")]
        if ttm_module is not None:
            steps.append(_write(f"{root}/module/{ttm_module}/parameters/pages_limit", "0\n"))
    if carveout is not None:
        steps += [f"mkdir -p {root}/work && rm -rf {root}/work/*",
                  f"mount -t overlay halofleet-fake-gpu -o lowerdir=/sys/class,upperdir={root}/class,"
                  f"workdir={root}/work /sys/class"]
    else:
        steps.append(f"mount -t overlay halofleet-fake-gpu -o lowerdir={root}/class:/sys/class /sys/class")
    if ttm_module is not None:
        steps.append(f"mount -t overlay halofleet-fake-module -o lowerdir={root}/module:/sys/module /sys/module")
    if mes_version is not None:
        steps += [
            "umount /sys/kernel/debug 2>/dev/null || true",
            "mount -t tmpfs halofleet-fake-debug /sys/kernel/debug",
            _write("/sys/kernel/debug/dri/1/amdgpu_firmware_info", firmware_info(mes_version)),
        ]
    return "\n".join(steps)


# Undo: our overlay and tmpfs only (each mount is named, so a real mount is never touched).
REMOVE_SCRIPT = (
    "while grep -q '^halofleet-fake-gpu /sys/class ' /proc/mounts; do umount /sys/class; done; "
    "while grep -q '^halofleet-fake-module /sys/module ' /proc/mounts; do umount /sys/module; done; "
    "while grep -q '^halofleet-fake-debug /sys/kernel/debug ' /proc/mounts; do umount /sys/kernel/debug; done"
)
