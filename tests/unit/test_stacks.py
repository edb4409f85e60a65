"""
Stack profiles (halo_stack): every row of the table carries its source and date, a site profile is read with one
grammar, the drift of a host from its profile, GRUB's default for the profile's kernel (from grub.cfg lines read on
the VM tier's trixie image), the remediation that turns a refusal into a warning, the TTM module and gttsize choices,
and `halofleet check`'s warning about a profile older than a release the table knows.
"""

from __future__ import annotations

import re

import pytest
from pyinfra.api import OperationError

from halofleet.box import stack as stack_mod
from halofleet.box.plan import build_plan
from halofleet.contract import policy, stacks
from halofleet.contract.config import ConfigError, HostRefused
from halofleet.facts.halo_stack import parse_grub_entries, parse_stack
from halofleet.operations.halo_kernel import render_grub_dropin

from .test_mutants_plan import probe

TAG = re.compile(r"\[[CSUM](/[CSUM])?[]:]")  # [C], [C/S], [C: where], as in contract/policy.py
UUID = "0a387816-0990-47da-955c-79081cd9765e"
RUNNING = "6.12.117+deb13-amd64"
# grub.cfg of the VM tier's trixie image (grep -E '^\s*(submenu|menuentry|function|linux|[}])'), shortened.
GRUB_LINES = f"""function gfxmode {{
}}
  menuentry_id_option="--id"
menuentry 'Debian GNU/Linux' --class debian $menuentry_id_option 'gnulinux-simple-{UUID}' {{
	linux	/boot/vmlinuz-{RUNNING} root=UUID={UUID} ro console=ttyS0,115200 quiet
}}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-{UUID}' {{
	menuentry 'Debian GNU/Linux, with Linux {RUNNING}' --class debian $menuentry_id_option 'gnulinux-{RUNNING}-advanced-{UUID}' {{
		linux	/boot/vmlinuz-{RUNNING} root=UUID={UUID} ro console=ttyS0,115200 quiet
	}}
	menuentry 'Debian GNU/Linux, with Linux {RUNNING} (recovery mode)' --class debian $menuentry_id_option 'gnulinux-{RUNNING}-recovery-{UUID}' {{
		linux	/boot/vmlinuz-{RUNNING} root=UUID={UUID} ro single dis_ucode_ldr console=ttyS0,115200
	}}
}}
menuentry 'UEFI Firmware Settings' $menuentry_id_option 'uefi-firmware' {{
}}""".splitlines()  # noqa: E501
SITE = {"name": "site-1", "source": "our lab record 2026-12", "kernel_package": "linux-image-7.0.0-31-generic",
        "kernel_release": "7.0.0-31-generic", "firmware_package": "linux-firmware", "firmware_min": "20260309",
        "mes_min": "0x86"}


# -- the table ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(stacks.PROFILES))
def test_every_row_has_a_source_with_its_tag_and_a_date(name):
    profile = stacks.PROFILES[name]
    assert profile.name == name and re.fullmatch(r"\d{4}-\d{2}-\d{2}", profile.date)
    for field, value in profile.sources().items():
        assert TAG.search(value.source), f"{name}.{field} has no [C]/[S]/[U] tag: {value.source!r}"
        assert re.fullmatch(r"\d{4}-\d{2}(-\d{2})?", value.date), f"{name}.{field}: {value.date!r}"
        if value.value is None:  # a value nobody read says so
            assert "[U]" in value.source or "not read" in value.source, f"{name}.{field}"
    assert {image.role for image in profile.images} == {"llama-vulkan", "llama-hip", "vllm"}
    for image in profile.images:
        assert TAG.search(image.source) and image.date
        assert image.digest is None, "no digest was ever read from a registry: none may be written here"
        assert image.pinned == image.reference  # unpinned until a host resolves it
    stacks.site_profile  # noqa: B018 - the site grammar is tested below


def test_known_releases_have_sources_and_the_current_profile_is_older_than_rocm_10_2():
    assert all(TAG.search(known.source) for known in stacks.KNOWN_RELEASES)
    newer = {(known.what, known.version) for known in stacks.newer_releases(stacks.PROFILES["ubuntu-26.04-2026-12"])}
    assert newer == {("rocm", "10.2"), ("firmware", "20260410"), ("kernel", "7.1.3")}
    fedora = {(k.what, k.version) for k in stacks.newer_releases(stacks.PROFILES["fedora-43-kyuz0"])}
    assert ("rocm", "10.2") not in fedora  # it pins no ROCm: nothing to be older than
    assert ("firmware", "20260410") in fedora and ("kernel", "7.1.3") in fedora


def test_images_and_rocm_rows_follow_the_2026_12_sources():
    assert policy.LLAMA_TOOLBOX_IMAGES["hip"].endswith(":rocm-10.0")
    assert policy.VLLM_IMAGE.endswith(":stable")
    assert policy.rocm_kernel_verdict("10.2.0", True)[0] is policy.Verdict.OK
    assert policy.rocm_kernel_verdict("10.3", True)[0] is policy.Verdict.WARN
    assert "[U]" not in policy.THEROCK_REPOS[10].source
    assert policy.TTM_MODULES == ("amdttm", "amd_ttm", "ttm")  # amd-smi's order


# -- a site's own profile -------------------------------------------------------------------------------------------

def test_site_profile_is_read_with_one_grammar():
    profile = stacks.site_profile(SITE)
    assert profile.site and profile.mes_min.value == 0x86 and profile.kernel_version.value is None
    assert stacks.check_stack(SITE) is None and stacks.check_stack("ubuntu-26.04-2026-12") is None


@pytest.mark.parametrize("change, problem", [
    ({"name": None}, "field 'name' is required"),
    ({"kernel_release": "7.0 ; reboot"}, "must be a kernel release"),
    ({"kernel_package": "Linux Image"}, "must be a Debian package name"),
    ({"firmware_min": "2026-03-09"}, "must be a linux-firmware date YYYYMMDD"),
    ({"mes_min": "134"}, "must be a MES firmware version such as 0x86"),
    ({"colour": "red"}, "unknown field(s) colour"),
    ({"firmware_package": None, "firmware_version": "1"}, "'firmware_version' needs 'firmware_package'"),
    ({"source": 3}, "must be a one-line string"),
])
def test_site_profile_refusals(change, problem):
    value = {key: item for key, item in {**SITE, **change}.items() if item is not None}
    assert problem in stacks.check_stack(value)


def test_halo_stack_through_the_contract():
    with pytest.raises(ConfigError, match="must be a profile of halofleet's table"):
        build_plan("h", {"halo_serve": "none", "halo_stack": "ubuntu-24.04"}, probe())
    with pytest.raises(ConfigError, match="must be a profile name or a mapping"):
        build_plan("h", {"halo_serve": "none", "halo_stack": ["x"]}, probe())


# -- facts ----------------------------------------------------------------------------------------------------------

def test_grub_entries_and_stack_facts_parse():
    entries = parse_grub_entries(GRUB_LINES)
    assert [entry["id"] for entry in entries] == [
        f"gnulinux-simple-{UUID}", f"gnulinux-advanced-{UUID}>gnulinux-{RUNNING}-advanced-{UUID}",
        f"gnulinux-advanced-{UUID}>gnulinux-{RUNNING}-recovery-{UUID}"]
    facts = parse_stack([
        f"@pkg linux-image-{RUNNING} ii 6.12.117-1", "@pkg firmware-amd-graphics hi 20230210-5",
        "@pkg linux-image-old rc 6.1.0-1", "@pkg bad;name ii 1", "@hold firmware-amd-graphics", "@default 0",
        "@carveout /sys/class/drm/card1/device/uma/carveout 3",
        "@option /sys/class/drm/card1/device/uma/carveout_options 0: Minimum (512 MB)",
        "@option /sys/class/drm/card1/device/uma/carveout_options 1: High (64 GB)",
        "@option /sys/class/drm/card1/device/uma/carveout_options garbage", "@module amd_ttm 31457280",
        "@module nvidia 1", *(f"@grub {line}" for line in GRUB_LINES)])
    assert facts["packages"] == {f"linux-image-{RUNNING}": {"version": "6.12.117-1", "installed": True},
                                 "firmware-amd-graphics": {"version": "20230210-5", "installed": True},
                                 "linux-image-old": {"version": "6.1.0-1", "installed": False}}
    assert facts["held"] == ["firmware-amd-graphics"] and facts["grub_default"] == "0"
    assert facts["carveout"] == {"/sys/class/drm/card1/device/uma/carveout": 3}
    assert facts["carveout_options"] == {"/sys/class/drm/card1/device/uma/carveout": {0: 512, 1: 65536}}
    assert facts["ttm_modules"] == {"amd_ttm": 31457280}
    assert len(facts["grub_entries"]) == 3


# -- drift and remediation -------------------------------------------------------------------------------------------

def stack_probe(packages=None, held=(), mes=0x83, firmware="20230210", modules=None, carveout=None, **over):
    state = {"packages": packages or {}, "held": list(held), "grub_entries": parse_grub_entries(GRUB_LINES),
             "grub_default": "0", "carveout": {}, "carveout_options": {},
             "ttm_modules": modules or {}}
    if carveout is not None:
        path = "/sys/class/drm/card1/device/uma/carveout"
        state["carveout"] = {path: carveout}
        state["carveout_options"] = {path: {0: 512, 1: 4096, 2: 65536}}
    fields = {"stack": state, "firmware": firmware, "live_cmdline": [f"BOOT_IMAGE=/boot/vmlinuz-{RUNNING}", "ro"],
              "os": {"id": "debian", "pretty_name": "Debian", "devices": [], "kernel": RUNNING},
              "amdgpu": {"vram": {"card1": 2**29}, "mes": [mes], "firmware_info": "read"}}
    return probe(**{**fields, **over})


def test_drift_of_a_host_from_its_profile():
    profile = stacks.site_profile(SITE)
    items = stack_mod.drift(profile, stack_probe(packages={"linux-firmware": {"version": "20230210-1",
                                                                               "installed": True}}))
    cell = stack_mod.drift_cell(items)
    assert cell == (
        f"drift: kernel {RUNNING} (wants 7.0.0-31-generic); kernel package not installed (wants "
        "linux-image-7.0.0-31-generic (held)); linux-firmware 20230210 (wants >= 20260309); firmware package "
        "20230210-1, not held (wants linux-firmware (held)); MES 0x83 (wants >= 0x86)")
    ok = stack_probe(packages={"linux-image-7.0.0-31-generic": {"version": "7.0.0-31.31", "installed": True},
                               "linux-firmware": {"version": "20260309-0ubuntu1", "installed": True}},
                     held=("linux-image-7.0.0-31-generic", "linux-firmware"), mes=0x86, firmware="20260309",
                     live_cmdline=["BOOT_IMAGE=/boot/vmlinuz-7.0.0-31-generic"])
    assert stack_mod.drift_cell(stack_mod.drift(profile, ok)) == "ok"
    unknown = dict(ok, amdgpu={"mes": []}, firmware=None)
    assert stack_mod.drift_cell(stack_mod.drift(profile, unknown)) == "ok (linux-firmware, MES unknown)"


def test_drift_names_rocm_builds_and_images_of_a_table_profile():
    profile = stacks.PROFILES["ubuntu-26.04-2026-12"]
    items = {item.item: item for item in stack_mod.drift(
        profile, stack_probe(rocm={"version": "10.0.0"}), image="docker.io/kyuz0/amd-strix-halo-toolboxes:rocm-7.14",
        llama_build=11000)}
    assert (items["ROCm"].ok, items["llama.cpp build"].ok, items["image"].ok) == (False, False, False)
    pinned = {item.item: item for item in stack_mod.drift(
        profile, stack_probe(rocm={"version": "10.1.0"}), llama_build=11669,
        image="docker.io/kyuz0/amd-strix-halo-toolboxes:rocm-10.0@sha256:" + "b" * 64)}
    assert (pinned["ROCm"].ok, pinned["llama.cpp build"].ok, pinned["image"].ok) == (True, True, True)


def test_running_kernel_is_the_image_grub_booted():
    assert stack_mod.running_kernel({"live_cmdline": ["BOOT_IMAGE=/boot/vmlinuz-6.12.0-x"],
                                     "os": {"kernel": RUNNING}}) == "6.12.0-x"
    assert stack_mod.running_kernel({"live_cmdline": ["BOOT_IMAGE=(hd0,msdos1)/vmlinuz-7.0.0-31-generic"]}) == \
        "7.0.0-31-generic"
    assert stack_mod.running_kernel({"live_cmdline": ["ro"], "os": {"kernel": RUNNING}}) == RUNNING


def test_grub_default_is_derived_from_the_running_kernels_entry_then_read():
    entries = parse_grub_entries(GRUB_LINES)
    derived = stack_mod.grub_entry_for(entries, "6.12.0-halotest-amd64", RUNNING)
    assert derived == f"gnulinux-advanced-{UUID}>gnulinux-6.12.0-halotest-amd64-advanced-{UUID}"
    assert stack_mod.grub_entry_for(entries, RUNNING, RUNNING) == \
        f"gnulinux-advanced-{UUID}>gnulinux-{RUNNING}-advanced-{UUID}"
    assert stack_mod.grub_entry_for([], "7.0", RUNNING) is None
    assert render_grub_dropin(["iommu=pt"], default=derived).endswith(f'GRUB_DEFAULT="{derived}"\n')
    assert "GRUB_DEFAULT" not in render_grub_dropin(["iommu=pt"])
    assert not stack_mod.safe_entry('x"; reboot; "') and not stack_mod.safe_entry("")
    with pytest.raises(OperationError):
        render_grub_dropin(["iommu=pt"], default="a$(reboot)")


def test_a_refused_host_is_told_the_fix_and_a_profile_turns_the_refusal_into_this_runs_remediation():
    with pytest.raises(HostRefused, match=r"MES firmware 0x83 is refused: .*; fix: halo_stack \(a profile"):
        build_plan("h", {"halo_serve": "none"}, stack_probe())
    plan = build_plan("h", {"halo_serve": "none", "halo_stack": SITE}, stack_probe())
    assert any("halo_stack site-1 installs newer firmware in this run" in w for w in plan.warnings)
    assert plan.stack.kernel == stack_mod.PackageStep("linux-image-7.0.0-31-generic", None, True, True)
    assert plan.stack.firmware == stack_mod.PackageStep("linux-firmware", None, True, True)
    assert plan.stack.grub_entry == f"gnulinux-advanced-{UUID}>gnulinux-7.0.0-31-generic-advanced-{UUID}"
    assert plan.stack.reboot_needed
    # Firmware already at the profile's but MES still 0x83: nothing this run installs fixes it: refused.
    held = stack_probe(packages={"linux-firmware": {"version": "20260309-1", "installed": True}},
                       held=("linux-firmware",), firmware="20260309")
    with pytest.raises(HostRefused, match="fix: halo_stack site-1 installs and holds linux-firmware"):
        build_plan("h", {"halo_serve": "none", "halo_stack": SITE}, held)


def test_cwsr_refusal_names_the_kernel_fix_and_a_profile_kernel_with_the_fix_replaces_it():
    unfixed = {"gfx1151_nodes": 1, "supported": False, "missing": ["cwsr_size"]}
    vllm = {"halo_serve": "vllm", "halo_model": "org/m"}
    with pytest.raises(HostRefused, match="fix: halo_stack .* installs and holds its kernel package"):
        build_plan("h", vllm, stack_probe(mes=0x86, firmware="20260309", cwsr=unfixed))
    plan = build_plan("h", {**vllm, "halo_stack": SITE}, stack_probe(mes=0x86, firmware="20260309", cwsr=unfixed))
    assert any("halo_stack site-1 boots 7.0.0-31-generic in this run" in w for w in plan.warnings)
    old_kernel = {**SITE, "kernel_release": "6.12.0-x", "kernel_package": "linux-image-6.12.0-x"}
    with pytest.raises(HostRefused, match="CWSR"):  # 6.12 predates the fix: booting it fixes nothing
        build_plan("h", {**vllm, "halo_stack": old_kernel}, stack_probe(mes=0x86, firmware="20260309",
                                                                        cwsr=unfixed))


def test_converged_host_plans_no_step():
    pkgs = {"linux-image-7.0.0-31-generic": {"version": "7.0.0-31.31", "installed": True},
            "linux-firmware": {"version": "20260309-1", "installed": True}}
    converged = stack_probe(packages=pkgs, held=tuple(pkgs), mes=0x86, firmware="20260309",
                            live_cmdline=["BOOT_IMAGE=/boot/vmlinuz-7.0.0-31-generic"], carveout=0)
    plan = build_plan("h", {"halo_serve": "none", "halo_stack": SITE}, converged)
    assert (plan.stack.kernel.install, plan.stack.kernel.hold, plan.stack.firmware.install) == (False, False, False)
    assert not plan.stack.reboot_needed and plan.carveout is None
    pinned = build_plan("h", {"halo_serve": "none", "halo_stack": {**SITE, "kernel_version": "7.0.0-31.32"}},
                        converged)
    assert pinned.stack.kernel.install  # installed, but not at the profile's version


def test_carveout_is_set_to_its_smallest_option_with_a_profile_only():
    base = dict(packages={}, mes=0x86, firmware="20260309", carveout=2)
    assert build_plan("h", {"halo_serve": "none", "halo_stack": SITE}, stack_probe(**base)).carveout == (
        "/sys/class/drm/card1/device/uma/carveout", 2, 0)
    assert build_plan("h", {"halo_serve": "none"}, stack_probe(**base)).carveout is None
    fedora = build_plan("h", {"halo_serve": "none", "halo_stack": SITE},
                        stack_probe(**base, os={"id": "fedora", "pretty_name": "Fedora", "devices": []}))
    assert fedora.carveout is None and fedora.stack.kernel is None
    assert any("reported only" in warning for warning in fedora.warnings)


def test_ttm_module_is_the_one_present_in_amd_smis_order():
    plan = build_plan("h", {"halo_serve": "none"}, stack_probe(mes=0x86, modules={"amd_ttm": 0, "ttm": 0}))
    assert plan.ttm_module == "amd_ttm" and "amd_ttm.pages_limit=31457280" in plan.kernel_params
    assert plan.modprobe["amd_ttm"] == {"pages_limit": 31457280}
    assert build_plan("h", {"halo_serve": "none"}, stack_probe(mes=0x86, modules={"ttm": 0})).ttm_module == "ttm"


@pytest.mark.parametrize("kernel, emit, expected", [
    ("7.0.0-31-generic", None, False), ("6.18.9", None, True), ("7.1.3", True, True), ("6.12.1", False, False),
    ("weird", None, True),
])
def test_emit_gttsize_defaults_to_what_the_running_kernel_wants(kernel, emit, expected):
    data = {"halo_serve": "none", **({} if emit is None else {"halo_emit_gttsize": emit})}
    plan = build_plan("h", data, stack_probe(mes=0x86, os={"id": "debian", "pretty_name": "D", "devices": [],
                                                            "kernel": kernel}))
    assert any(param.startswith("amdgpu.gttsize=") for param in plan.kernel_params) is expected
    assert ("amdgpu" in plan.modprobe) is expected


def test_remediation_hint_without_and_with_a_profile():
    assert stack_mod.remediation_hint("kernel", None).startswith("fix: halo_stack (a profile: ubuntu-26.04-2026-12")
    assert stack_mod.remediation_hint("firmware", stacks.PROFILES["ubuntu-26.04-2026-12"]) == (
        "fix: halo_stack ubuntu-26.04-2026-12 installs and holds linux-firmware (>= 20260309) and reboots into it")


def test_check_warns_when_a_profile_is_older_than_a_known_release(tmp_path):
    from halofleet.views.check import check

    inventory = tmp_path / "inventory.py"
    inventory.write_text("hosts = (['a', 'b'], {'halo_serve': 'none', 'halo_stack': 'ubuntu-26.04-2026-12'})\n")
    messages = [finding.message for finding in check(str(inventory)).findings if finding.key == "halo_stack"]
    assert any("pins rocm 10.1; 10.2 is known" in message for message in messages)
    assert any("pins kernel 7.0.0-31-generic; 7.1.3 is known" in message for message in messages)


def test_rollback_reads_back_only_the_holds_and_carveout_writes_halofleet_made():
    from halofleet.operations import halo_stack as ops

    records = ["etc__default__grub.d__zz-halofleet.cfg.absent", "apt-hold__linux-image-7.0.0-31-generic.halofleet",
               "apt-hold__firmware-amd-graphics.halofleet", "apt-hold__Bad Name.halofleet",
               "sys__class__drm__card1__device__uma__carveout.was-3", "sys__class__drm__card1__device__uma__x.was-3",
               "sys__class__drm__card2__device__uma__carveout.was-abc"]
    assert ops.hold_records(records) == ["firmware-amd-graphics", "linux-image-7.0.0-31-generic"]
    assert ops.carveout_records(records) == {"/sys/class/drm/card1/device/uma/carveout": 3}
    assert ops.hold_records(None) == [] and ops.carveout_records([]) == {}


def test_hosts_of_one_profile_on_different_digests_of_one_tag_drift():
    tag = "docker.io/kyuz0/amd-strix-halo-toolboxes:vulkan-radv"
    same = {"a": ("p", tag, "sha256:" + "1" * 64), "b": ("p", tag, "sha256:" + "1" * 64),
            "c": ("q", tag, "sha256:" + "2" * 64)}  # another profile: not compared
    assert stack_mod.digest_drift(same) == {}
    differ = {**same, "b": ("p", tag, "sha256:" + "3" * 64)}
    found = stack_mod.digest_drift(differ)
    assert set(found) == {"a", "b"}
    assert found["a"] == found["b"] == f"image {tag} differs across the profile's hosts (111111111111 on a; " \
                                       "333333333333 on b)"


def test_verify_marks_the_hosts_whose_digest_differs():
    from halofleet.views.verify import image_drift

    tag = "docker.io/kyuz0/vllm-therock-gfx1151:stable"
    rows = [{"host": "a", "stack": "ubuntu-26.04-2026-12: ok", "status": "ok"},
            {"host": "b", "stack": "ubuntu-26.04-2026-12: ok", "status": "unhealthy"}]
    probes = {"a": {"running_image": {"name": tag, "digest": "sha256:" + "a" * 64}},
              "b": {"running_image": {"name": tag, "digest": "sha256:" + "b" * 64}}}
    datas = {name: {"halo_stack": "ubuntu-26.04-2026-12"} for name in probes}
    image_drift(rows, probes, datas)
    assert rows[0]["status"] == "stack drift" and rows[1]["status"] == "unhealthy"
    assert "drift: image docker.io/kyuz0/vllm-therock-gfx1151:stable differs" in rows[0]["stack"]
