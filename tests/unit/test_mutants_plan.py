"""The whole host plan on hand-written probes (mutation-tested). 128 GiB seen, 8 GiB reserve: 120 GiB GTT =
31457280 pages (120 x 262144) = 122880 MiB (120 x 1024)."""

import pytest

from halofleet.box.plan import build_plan
from halofleet.contract.config import ConfigError, HostRefused

OURS = ["amd_iommu=off", "ttm.pages_limit=31457280", "amdgpu.gttsize=122880"]
FIXED = {"gfx1151_nodes": 1, "supported": True, "missing": []}
UNFIXED = {"gfx1151_nodes": 1, "supported": False, "missing": ["ctl_stack_size", "cwsr_size"]}
NO_GPU = {"gfx1151_nodes": 0, "supported": None, "missing": []}


def probe(**over):
    base = {
        "os": {"id": "debian", "pretty_name": "Debian GNU/Linux 13 (trixie)", "devices": []},
        "memtotal_kib": 134217728,  # 128 GiB
        "live_cmdline": ["BOOT_IMAGE=/vmlinuz", "ro", "quiet"],
        "boot": {"kind": "grub", "cmdline": ["quiet", "amdgpu.gttsize=5"]},
        "cwsr": FIXED,
        "rocm": {"version": None, "amdgpu_dkms": False, "package_version": None},
        "firmware": "20260110",
        "amdgpu": {"vram": {"card1": 2**29}, "mes": [0x86], "firmware_info": "read"},  # 512 MiB carve-out, MES 0x86
        "accounts": {"users": {"root": (0, 0)}, "groups": {"video": 44, "render": 993}},
        "serve": {"active": "inactive", "enabled": "not-found", "listeners": []},
        "files": {},
        "model": {"kind": "file", "size": 10, "mtime": 1, "magic": "GGUF"},
    }
    return {**base, **over}


def plan(data=None, **over):
    return build_plan("h", {"halo_serve": "none", **(data or {})}, probe(**over))


def refusal(data=None, **over):
    with pytest.raises(HostRefused) as error:
        plan(data, **over)
    return str(error.value)


def test_strix_halo_128_gib():
    result = plan()
    assert (result.host, result.distro, result.uses_apt, result.strix_halo, result.ttm_module) == (
        "h", "debian", True, True, "ttm")
    assert (result.gtt.gtt_gib, result.gtt.visible_gib) == (120, 128)
    assert result.kernel_params == OURS
    assert result.modprobe == {"ttm": {"pages_limit": 31457280}, "amdgpu": {"gttsize": 122880}}
    assert result.expected_cmdline == ["quiet", *OURS]
    assert result.reboot_needed
    assert result.serve is None and result.rocm_message is None
    assert result.probe["memtotal_kib"] == 134217728 and result.config.host == "h"
    assert result.warnings == ["GTT 120 GiB is 94% of the 128 GiB Linux sees (AMD's amd-ttm warns above 90%)"]
    assert (result.gpu_check(True), result.gpu_check(False), result.gpu_check(None)) == ("ok", "missing", "skipped")


def test_gtt_at_exactly_90_percent_is_no_warning():
    assert plan({"halo_os_reserve_gib": 4}, memtotal_kib=40 * 1048576).warnings == []  # 36 / 40 = 0.90
    assert plan({"halo_os_reserve_gib": 4, "halo_gtt_gib": 36}, memtotal_kib=40 * 1048576).warnings == []
    assert plan({"halo_os_reserve_gib": 4}, memtotal_kib=41 * 1048576).warnings == [  # 37 / 41 = 0.902
        "GTT 37 GiB is 90% of the 41 GiB Linux sees (AMD's amd-ttm warns above 90%)"]


def test_iommu_pt():
    assert plan({"halo_iommu": "pt"}).kernel_params == ["iommu=pt", "ttm.pages_limit=31457280",
                                                        "amdgpu.gttsize=122880"]


def test_live_cmdline_with_our_params_needs_no_reboot():
    assert not plan(live_cmdline=["ro", *OURS]).reboot_needed


def test_a_stale_trailing_duplicate_param_still_needs_a_reboot():
    assert plan(live_cmdline=["ro", *OURS, "ttm.pages_limit=1048576"]).reboot_needed
    assert not plan(live_cmdline=["ttm.pages_limit=1048576", *OURS]).reboot_needed
    assert plan(live_cmdline=[*OURS, "iommu=pt"]).reboot_needed


def test_without_gttsize():
    result = plan({"halo_emit_gttsize": False}, live_cmdline=["ro", *OURS])
    assert result.kernel_params == ["amd_iommu=off", "ttm.pages_limit=31457280"]
    assert result.modprobe == {"ttm": {"pages_limit": 31457280}}
    assert result.expected_cmdline == ["quiet", "amd_iommu=off", "ttm.pages_limit=31457280"]
    assert result.reboot_needed  # the live amdgpu.gttsize must go
    assert not plan({"halo_emit_gttsize": False}, live_cmdline=OURS[:2]).reboot_needed


def test_amdgpu_dkms_host_gets_amdttm_params_when_allowed():
    dkms = {"version": None, "amdgpu_dkms": True}
    result = plan({"halo_allow_amdgpu_dkms": True}, rocm=dkms)
    assert result.ttm_module == "amdttm"
    assert result.kernel_params == ["amd_iommu=off", "amdttm.pages_limit=31457280", "amdgpu.gttsize=122880"]
    assert result.modprobe == {"amdttm": {"pages_limit": 31457280}, "amdgpu": {"gttsize": 122880}}
    assert plan({"halo_allow_amdgpu_dkms": True}, rocm=dkms, live_cmdline=OURS).reboot_needed
    assert refusal(rocm=dkms) == (
        "host 'h': amdgpu-dkms is installed: it renames ttm to amdttm (ttm.pages_limit is then ignored) and "
        "conflicts with the in-tree driver on Strix Halo; remove it, or set halo_allow_amdgpu_dkms: true to use "
        "amdttm.*")
    assert plan({"halo_allow_amdgpu_dkms": True}).ttm_module == "ttm"  # allowed but absent: plain ttm


@pytest.mark.parametrize("os_info, distro", [
    ({"id": "linuxmint", "id_like": "ubuntu debian"}, "ubuntu"),
    ({"id": "pop", "id_like": "ubuntu debian"}, "ubuntu"),
    ({"id": "raspbian", "id_like": "debian"}, "debian"),
    ({"id": "rocky", "id_like": "rhel centos fedora"}, "fedora"),
    ({"id": "ubuntu", "id_like": "debian"}, "ubuntu"),
    ({"id": "fedora"}, "fedora"),
])
def test_derivatives_by_id_like(os_info, distro):
    result = plan(os=os_info)
    assert result.distro == distro and result.uses_apt is (distro != "fedora")


def test_unsupported_distributions():
    assert refusal(os={"id": "alpine", "pretty_name": "Alpine Linux v3.20"}) == (
        "host 'h': unsupported distribution 'Alpine Linux v3.20': halofleet supports debian, fedora, ubuntu")
    assert refusal(os={"id": "arch", "id_like": "archlinux"}).startswith("host 'h': unsupported distribution 'arch'")
    assert refusal(os={}).startswith("host 'h': unsupported distribution 'unknown'")


def test_gpu_and_firmware_and_memory_refusals():
    assert refusal(cwsr=NO_GPU) == (
        "host 'h': no gfx1151 (Strix Halo) GPU found in the KFD topology; set halo_allow_non_strix_halo: true to run "
        "the stages on a test host (GPU checks are then reported as skipped)")
    test_host = plan({"halo_allow_non_strix_halo": True}, cwsr=NO_GPU)
    assert not test_host.strix_halo and test_host.gpu_check(True) == "skipped"
    assert plan({"halo_allow_non_strix_halo": True}, cwsr=None).cwsr == NO_GPU
    assert refusal(firmware="20251125") == (
        "host 'h': linux-firmware 20251125 is refused: linux-firmware 20251125 breaks ROCm on Strix Halo (kyuz0 "
        "toolboxes #37); downgrade to 20251111 and rebuild the initramfs; fix: halo_stack (a profile: "
        "ubuntu-26.04-2026-12, fedora-43-kyuz0; or your own mapping) installs and holds its firmware package (>= its "
        "minimum) and reboots into it")
    assert refusal(memtotal_kib=None) == "host 'h': could not read MemTotal from /proc/meminfo"
    assert refusal(memtotal_kib=0) == "host 'h': could not read MemTotal from /proc/meminfo"


def test_gtt_errors_name_the_key_that_was_set():
    with pytest.raises(ConfigError) as error:
        plan({"halo_gtt_gib": 121})
    assert str(error.value) == ("host 'h': halo_gtt_gib=121 is invalid: must be at most 120 GiB (128 GiB visible "
                                "minus 8 GiB OS reserve)")
    with pytest.raises(ConfigError) as error:
        plan({"halo_os_reserve_gib": 125})
    assert str(error.value) == ("host 'h': halo_os_reserve_gib=125 is invalid: must leave at least 4 GiB of the "
                                "128 GiB Linux sees for GTT (at most 124)")


def test_installed_rocm_with_a_bad_pairing_is_refused():
    assert refusal(rocm={"version": "7.1.1"}) == (
        "host 'h': installed ROCm 7.1.1 on a kernel with the CWSR fix is bad [AMD rdna3-5 support matrix; "
        "ROCm/TheRock#2991]")
    assert refusal(rocm={"version": "7.2.0"}, cwsr=UNFIXED) == (
        "host 'h': installed ROCm 7.2.0 on a kernel without the CWSR fix is bad [AMD rdna3-5 support matrix]")
    assert refusal(rocm={"version": "7.0.1"}).startswith(
        "host 'h': ROCm 7.0.1 is installed and refused: reported gfx1151 regression")


def test_installed_rocm_with_a_good_or_doubtful_pairing():
    good = plan(rocm={"version": "7.2.1"})
    assert good.rocm_message == "ROCm 7.2.1 on a kernel with the CWSR fix is ok [AMD rdna3-5 support matrix]"
    assert "installed" not in " ".join(good.warnings)
    doubtful = plan(rocm={"version": "6.4.4"}, cwsr=UNFIXED)
    assert "installed ROCm 6.4.4 on a kernel without the CWSR fix is warn [AMD rdna3-5 support matrix]" in \
        doubtful.warnings
    assert plan(rocm={"version": "7.2.1.1"}).rocm_message is None  # not a release we can judge: left alone


def test_wanted_rocm_is_judged_instead_of_the_installed_one():
    result = plan({"halo_rocm_version": "7.2.1"}, rocm={"version": "7.1.1"})
    assert result.rocm_message == "ROCm 7.2.1 on a kernel with the CWSR fix is ok [AMD rdna3-5 support matrix]"
    warned = plan({"halo_rocm_version": "6.4.4"}, cwsr=UNFIXED)
    assert "ROCm 6.4.4 on a kernel without the CWSR fix is warn [AMD rdna3-5 support matrix]" in warned.warnings
    with pytest.raises(ConfigError) as error:
        plan({"halo_rocm_version": "7.2.0"}, cwsr=UNFIXED)
    assert str(error.value) == ("host 'h': halo_rocm_version='7.2.0' is invalid: ROCm 7.2.0 on a kernel without the "
                                "CWSR fix is bad [AMD rdna3-5 support matrix]")
    assert refusal({"halo_rocm_version": "7.2.1"}, os={"id": "fedora"}) == (
        "host 'h': pinning host ROCm is implemented for apt hosts only, not fedora")
    assert refusal({"halo_rocm_version": "7.2.1"}, rocm={"version": "7.0.1"}).startswith(
        "host 'h': ROCm 7.0.1 is installed and refused")


VLLM = {"halo_serve": "vllm", "halo_model": "org/m"}


def test_vllm_needs_the_cwsr_properties_unless_told_to_warn():
    message = ("vLLM on ROCm needs a kernel exporting the CWSR properties (ctl_stack_size, cwsr_size missing on the "
               "gfx1151 KFD node), or it crashes on the wrong VGPR count (ROCm/TheRock#2991); update the kernel "
               "(generic >= 6.18.4, or a vendor kernel with the backport), or serve with halo_llama_backend: "
               "vulkan, which does not need it")
    assert refusal(VLLM, cwsr=UNFIXED) == (
        f"host 'h': {message}; fix: halo_stack (a profile: ubuntu-26.04-2026-12, fedora-43-kyuz0; or your own "
        "mapping) installs and holds its kernel package, makes it GRUB's default and reboots into it")
    warned = plan({**VLLM, "halo_cwsr_policy": "warn"}, cwsr=UNFIXED)
    assert message in warned.warnings and warned.serve.engine == "vllm"
    assert plan(VLLM).serve.engine == "vllm"
    assert plan({**VLLM, "halo_allow_non_strix_halo": True}, cwsr=NO_GPU).serve is not None
    assert plan({"halo_cwsr_policy": "enforce"}, cwsr=UNFIXED).serve is None  # no vLLM: nothing to enforce


def test_bootloaders():
    assert refusal(boot={"kind": "systemd-boot", "cmdline": []}) == (
        "host 'h': bootloader 'systemd-boot' is not supported by the kernel stage (GRUB or grubby needed; "
        "halo_boot: external leaves the cmdline to you)")
    assert refusal(boot=None) == (
        "host 'h': bootloader 'unknown' is not supported by the kernel stage (GRUB or grubby needed; "
        "halo_boot: external leaves the cmdline to you)")
    external = plan({"halo_boot": "external"}, boot={"kind": "systemd-boot", "cmdline": ["quiet"]})
    assert external.expected_cmdline == ["quiet", *OURS] and external.reboot_needed
    fedora = plan(boot={"kind": "grubby", "cmdline": ["ro", "rhgb"]}, os={"id": "fedora"})
    assert fedora.expected_cmdline == ["ro", "rhgb", *OURS]


def test_serving_plan_and_its_warnings_are_part_of_the_host_plan():
    result = plan({"halo_serve": "llama-server", "halo_model": "/srv/m.gguf", "halo_bind": "0.0.0.0",
                   "halo_llama_backend": "cpu", "halo_allow_unauthenticated": True})
    assert result.serve.flavour == "distro" and "MemoryMax=124G" in result.serve.unit
    assert result.warnings[-1].startswith("the API on 0.0.0.0:8080 is reachable beyond this host without an API key")
    assert (result.ids.video_gid, result.ids.render_gid, result.ids.uid) == (44, 993, 999)
