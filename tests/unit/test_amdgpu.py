"""
The amdgpu facts (carve-out, MES firmware, kernel-log faults, the running image) and what the plan and verify make of
them: the CWSR gate for every ROCm engine, the distro HIP backend on gfx1151, the MES denylist, the carve-out
warning, live GTT against the plan.

Text marked "captured" is verbatim from ../shared/captures/strix-halo.md (section given); the rest is constructed.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from halofleet.box.plan import build_plan
from halofleet.contract.config import ConfigError, HostRefused
from halofleet.facts.amdgpu import FAULTS_COMMAND, parse_amdgpu, parse_faults, parse_running_image
from halofleet.facts.probe import parse_probe
from halofleet.facts.halo_serve import parse_serve_health
from halofleet.testing.fake import probe_output

# captured §2a (MES 0x83, linux-firmware 20251125), the lines around MES as posted
DUMP_0X83 = [
    "  TOC feature version: 0, firmware version: 0x0000000b",
    "  MES_KIQ feature version: 6, firmware version: 0x0000006f",
    "  MES feature version: 1, firmware version: 0x00000083",
    "  VPE feature version: 60, firmware version: 0x00000017",
    "  VBIOS version: 113-STRXLGEN-001",
]
# captured §2e (`grep MES` output, MES 0x80)
GREP_0X80 = ["MES_KIQ feature version: 6, firmware version: 0x0000006f",
             "MES feature version: 1, firmware version: 0x00000080"]
# captured §5a and §5d (kernel log)
KERNEL_LOG = [
    "[  990.479743] amdgpu 0000:c5:00.0: amdgpu: MES failed to respond to msg=REMOVE_QUEUE",
    "[  990.479760] amdgpu 0000:c5:00.0: amdgpu: failed to remove hardware queue from MES, doorbell=0x1002",
    "[  990.479799] amdgpu 0000:c5:00.0: amdgpu: GPU reset begin!. Source:  3",
    "[  651.971687] amdgpu 0000:c5:00.0: amdgpu: [gfxhub] page fault (src_id:0 ring:153 vmid:8 pasid:32771)",
    "[  651.971741] amdgpu 0000:c5:00.0: amdgpu: \t Faulty UTCL2 client ID: CPF (0x4)",
    "[  990.712038] amdgpu 0000:c5:00.0: [drm] device wedged, but recovered through reset",
    "[    3.100000] usb 1-1: new high-speed USB device",  # constructed: not amdgpu
]
VRAM_4GIB = "@vram /sys/class/drm/card1/device/mem_info_vram_total 4294967296"  # value captured in §3a


def test_mes_version_from_the_firmware_dump_not_the_kiq_line():
    assert parse_amdgpu(["@firmware /sys/kernel/debug/dri/1/amdgpu_firmware_info", *DUMP_0X83]) == {
        "vram": {}, "mes": [0x83], "firmware_info": "read"}
    both = parse_amdgpu(["@firmware /sys/kernel/debug/dri/0/amdgpu_firmware_info", *GREP_0X80,
                         "@firmware /sys/kernel/debug/dri/128/amdgpu_firmware_info", *GREP_0X80])
    assert both["mes"] == [0x80]  # the same GPU under its card and render minors counts once


def test_unreadable_debugfs_and_odd_lines_leave_the_version_unknown():
    result = parse_amdgpu(["@unreadable /sys/kernel/debug/dri/1/amdgpu_firmware_info",
                           "MES feature version: 1, firmware version: 0x83; rm -rf /",
                           "@vram /sys/class/drm/card1/device/mem_info_vram_total lots", "@vram nonsense"])
    assert result == {"vram": {}, "mes": [], "firmware_info": "unreadable"}
    assert parse_amdgpu([VRAM_4GIB])["vram"] == {"card1": 4 * 2**30}


def test_fault_scan_runs_in_a_real_shell_on_captured_kernel_log(tmp_path):
    log = tmp_path / "kern.log"
    log.write_text("\n".join(KERNEL_LOG + KERNEL_LOG * 5) + "\n")
    command = FAULTS_COMMAND.replace("journalctl -k -b -o short-monotonic --no-pager 2>/dev/null || dmesg 2>/dev/null",
                                     f"cat {log}")
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout.splitlines()
    faults = parse_faults(output)
    # per copy of the log: MES failed, GPU reset begin, page fault, device wedged (the CPF detail line and the
    # USB line are not faults of their own); six copies, and only the last 20 lines are kept
    assert faults["count"] == 24 and len(faults["lines"]) == 20
    assert faults["lines"][-1].endswith("device wedged, but recovered through reset")
    assert parse_faults(["@count 0"]) == {"count": 0, "lines": []}
    assert parse_faults(["@count x"])["count"] is None


def test_running_image_needs_a_real_digest():
    digest = "sha256:" + "a" * 64
    assert parse_running_image([f"@image docker.io/kyuz0/vllm-therock-gfx1151:latest {digest}"]) == {
        "name": "docker.io/kyuz0/vllm-therock-gfx1151:latest", "digest": digest}
    assert parse_running_image(["@image x sha256:abc"]) is None and parse_running_image([]) is None


STRIX = {"halo_reboot": "never", "halo_model": "/srv/models/tiny.gguf"}


def plan(data, gfx1151=True, amdgpu=None):
    sections = {"amdgpu": amdgpu} if amdgpu is not None else None
    return build_plan("h", {**STRIX, **data}, parse_probe(probe_output(gfx1151=gfx1151, sections=sections)))


TOOLBOX_HIP = {"halo_llama_source": "toolbox", "halo_llama_backend": "hip"}


@pytest.mark.parametrize("data, engine", [
    (TOOLBOX_HIP, "llama-server on HIP/ROCm (toolbox)"),
    ({"halo_serve": "vllm", "halo_model": "org/model"}, "vLLM on ROCm"),
])
def test_every_rocm_engine_needs_the_cwsr_kernel(data, engine):
    with pytest.raises(HostRefused, match=re.escape(f"{engine} needs a kernel exporting the CWSR properties "
                                                    "(ctl_stack_size, cwsr_size missing")):
        plan(data, gfx1151=False)
    warned = plan({**data, "halo_cwsr_policy": "warn"}, gfx1151=False)
    assert any(warning.startswith(f"{engine} needs a kernel") for warning in warned.warnings)
    assert plan(data, gfx1151=True).serve is not None  # with the properties: accepted


@pytest.mark.parametrize("source", ["distro", "toolbox"])
def test_vulkan_needs_no_cwsr(source):
    result = plan({"halo_llama_source": source, "halo_llama_backend": "vulkan"}, gfx1151=False)
    assert result.serve is not None and not any("CWSR" in warning for warning in result.warnings)


def test_distro_hip_backend_is_refused_on_gfx1151_with_the_vulkan_way_out():
    with pytest.raises(ConfigError, match="halo_llama_backend='hip' is invalid: the distribution's libggml0-backend-hip "
                                          "has no gfx1151 code objects.*halo_llama_backend: vulkan"):
        plan({"halo_llama_backend": "hip"})
    # a test host without the GPU may still use it (nothing to run it on either way)
    assert plan({"halo_llama_backend": "hip", "halo_allow_non_strix_halo": True}, gfx1151=None).serve


def test_denied_mes_firmware_is_refused_known_good_passes_unknown_warns():
    with pytest.raises(HostRefused, match="MES firmware 0x83 is refused: .*ROCm/ROCm#5724"):
        plan({"halo_llama_backend": "vulkan"}, amdgpu=["@firmware /sys/kernel/debug/dri/1/amdgpu_firmware_info",
                                                       *DUMP_0X83])
    # MES is a minimum, not a one-value denylist: 0x80 is below 0x86 (the oldest reported good) and warns with the
    # remediation that fixes it; 0x86 passes.
    old = plan({"halo_llama_backend": "vulkan"}, amdgpu=["@firmware f", *GREP_0X80])
    assert [w for w in old.warnings if "MES" in w] == [
        "MES firmware 0x80 is below 0x86, the oldest reported good; fix: halo_stack (a profile: "
        "ubuntu-26.04-2026-12, fedora-43-kyuz0; or your own mapping) installs and holds its firmware package "
        "(>= its minimum) and reboots into it"]
    good = plan({"halo_llama_backend": "vulkan"}, amdgpu=["@firmware f", *[g.replace("0x00000080", "0x00000086")
                                                                          for g in GREP_0X80]])
    assert not any("MES" in warning for warning in good.warnings)
    unknown = plan({"halo_llama_backend": "vulkan"}, amdgpu=[])
    assert any(warning.startswith("MES firmware version unknown") for warning in unknown.warnings)
    # no gfx1151: nothing to judge
    assert plan({"halo_allow_non_strix_halo": True, "halo_llama_backend": "cpu"}, gfx1151=None,
                amdgpu=["@firmware f", *DUMP_0X83]).serve


def test_carve_out_above_4_gib_is_warned():
    at_minimum = plan({"halo_llama_backend": "vulkan"}, amdgpu=["@firmware f", *GREP_0X80, VRAM_4GIB])
    assert not any("carve-out" in warning for warning in at_minimum.warnings)
    big = plan({"halo_llama_backend": "vulkan"},
               amdgpu=["@firmware f", *GREP_0X80, "@vram /sys/class/drm/card1/device/mem_info_vram_total 8589934592"])
    assert "card1: the BIOS carve-out (mem_info_vram_total) is 8 GiB" in " ".join(big.warnings)


HEALTHY = ["@engine llama-server distro", "@active active", "@health 200", "@models 200", "@completion 200 0.41",
           "@tokens 2"]
DATA = {"halo_allow_non_strix_halo": True, "halo_model": "/srv/models/tiny.gguf", "halo_llama_backend": "cpu"}
LIVE = "BOOT_IMAGE=/vmlinuz ro quiet amd_iommu=off ttm.pages_limit=1835008 amdgpu.gttsize=7168"


def verify(probe_lines, data=DATA):
    from halofleet.views.verify import verify_row

    return verify_row("h", data, parse_probe(probe_lines), parse_serve_health(HEALTHY))


def test_verify_reports_faults_mes_and_image():
    digest = "sha256:" + "b" * 64
    row = verify(probe_output(cmdline=LIVE, sections={"faults": ["@count 3", "@line x"],
                                                      "running_image": [f"@image docker.io/o/n:t {digest}"]}))
    assert (row["gpu faults"], row["status"], row["image"], row["mes"]) == ("3", "gpu faults", "n:t@bbbbbbbbbbbb",
                                                                          "skipped")
    clean = verify(probe_output(cmdline=LIVE, sections={"faults": ["@count 0"]}))
    assert (clean["gpu faults"], clean["status"]) == ("0", "ok")


def test_verify_compares_the_live_gtt_with_the_plan_on_strix_halo():
    # 16 000 000 kB visible = 15 GiB, minus the 8 GiB reserve: GTT 7 GiB = 1835008 pages (constructed host)
    data = {"halo_model": "/srv/models/tiny.gguf", "halo_llama_backend": "vulkan"}
    gtt = {"gtt": ["ttm_pages_limit 1835008", "/sys/class/drm/card1/device/mem_info_gtt_total 7516192768"],
           "amdgpu": ["@firmware f", *GREP_0X80]}
    assert verify(probe_output(cmdline=LIVE, gfx1151=True, sections=gtt), data)["status"] == "ok"
    gtt["gtt"][1] = "/sys/class/drm/card1/device/mem_info_gtt_total 8053063680"  # 7.5 GiB: not what was planned
    row = verify(probe_output(cmdline=LIVE, gfx1151=True, sections=gtt), data)
    assert row["status"] == "not converged" and row["mes"] == "0x80"


def test_distro_hip_without_cwsr_names_the_backend_first():
    # both problems at once: the one no kernel update can fix is the one to hear about
    with pytest.raises(ConfigError, match="has no gfx1151 code objects"):
        plan({"halo_llama_backend": "hip"}, gfx1151=False)
