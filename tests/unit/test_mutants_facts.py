"""
The pure fact parsers on hand-written host outputs (mutation-tested); expected values are literals.

Equivalent survivors (mutmut 3.7 names, halofleet.facts.*; no input can tell them apart):
- halo.x_parse_kfd_nodes__mutmut_16, _19, _20 (``rsplit("/")``, ``rsplit("/", 2)``, ``[+1]`` of a 2-split): the
  last field is the same however often the path is split, and a 2-split's [+1] is its [-1].
- halo.x_parse_os__mutmut_10, _24 (``split(None, 1)``): the line starts with the marker and one space, and the
  value is stripped either way.
- probe.x_parse_probe__mutmut_4 (``current = ""``): no section is named "", like None.
"""

import pytest

from halofleet.facts import halo, halo_files, halo_rocm, halo_serve
from halofleet.facts.probe import PROBE_MARK, parse_probe
from halofleet.testing.fake import kfd_node_lines


def node(index, gfx, *props):
    return [f"@node /sys/class/kfd/kfd/topology/nodes/{index}/", f"gfx_target_version {gfx}", *props]


# -- KFD / CWSR ----------------------------------------------------------------------------------------------

def test_kfd_nodes_parse_names_properties_and_the_gfx_target():
    lines = ["stray line before any node", *node(0, 0), "", "  simd_count   0 ", *node(1, 110501, "cwsr_size 2654208")]
    assert halo.parse_kfd_nodes(lines) == [
        {"node": "0", "gfx_target_version": 0, "properties": {"gfx_target_version": "0", "simd_count": "0"}},
        {"node": "1", "gfx_target_version": 110501,
         "properties": {"gfx_target_version": "110501", "cwsr_size": "2654208"}},
    ]


def test_kfd_node_without_trailing_slash_and_a_non_numeric_target():
    nodes = halo.parse_kfd_nodes(["@node /sys/class/kfd/kfd/topology/nodes/12", "gfx_target_version gfx1151"])
    assert nodes == [{"node": "12", "gfx_target_version": 0, "properties": {"gfx_target_version": "gfx1151"}}]


def test_a_kfd_node_path_without_a_name_is_a_question_mark():
    """``@node /`` (a hostile or broken listing) still makes a node, named '?', never an empty name; only the
    trailing slashes go, never the name's own last letters."""
    assert [found["node"] for found in halo.parse_kfd_nodes(["@node /", "@node //", "@node /n/XX/"])] == [
        "?", "?", "XX"]


def test_gfx1150_is_not_strix_halo():
    status = halo.cwsr_status(halo.parse_kfd_nodes(node(1, 110500, "cwsr_size 1", "ctl_stack_size 2")))
    assert status == {"gfx1151_nodes": 0, "supported": None, "missing": []}


@pytest.mark.parametrize("present, missing", [("cwsr_size 2654208", ["ctl_stack_size"]),
                                              ("ctl_stack_size 20480", ["cwsr_size"])])
def test_a_node_with_only_one_cwsr_property_is_not_fixed(present, missing):
    status = halo.cwsr_status(halo.parse_kfd_nodes(node(1, 110501, present)))
    assert status == {"gfx1151_nodes": 1, "supported": False, "missing": missing}


def test_every_gfx1151_node_must_have_both_properties():
    lines = node(1, 110501, "cwsr_size 1", "ctl_stack_size 2") + node(2, 110501, "cwsr_size 1")
    assert halo.cwsr_status(halo.parse_kfd_nodes(lines)) == {
        "gfx1151_nodes": 2, "supported": False, "missing": ["ctl_stack_size"]}
    fixed = kfd_node_lines(1, 110501, True) + kfd_node_lines(2, 110501, True)
    assert halo.cwsr_status(halo.parse_kfd_nodes(fixed)) == {"gfx1151_nodes": 2, "supported": True, "missing": []}


# -- memory, boot, packages ------------------------------------------------------------------------------------

def test_memtotal():
    assert halo.parse_memtotal_kib(["MemFree: 5 kB", "MemTotal:       131072000 kB"]) == 131072000
    assert halo.parse_memtotal_kib(["MemTotal: 12 MB"]) is None
    assert halo.parse_memtotal_kib([]) is None


def test_boot_config_grub_joins_the_lines():
    assert halo.parse_boot_config([" grub ", " console=ttyS0 quiet", "amd_iommu=off "]) == {
        "kind": "grub", "cmdline": ["console=ttyS0", "quiet", "amd_iommu=off"]}
    assert halo.parse_boot_config([]) == {"kind": "unknown", "cmdline": []}
    assert halo.parse_boot_config(["  "]) == {"kind": "unknown", "cmdline": []}


def test_boot_config_grubby_reads_the_args():
    assert halo.parse_boot_config(["grubby", 'args="ro rhgb amd_iommu=off"']) == {
        "kind": "grubby", "cmdline": ["ro", "rhgb", "amd_iommu=off"]}
    assert halo.parse_boot_config(["grubby"]) == {"kind": "grubby", "cmdline": []}
    # a grub host's cmdline is taken as is, even if it looks like grubby output
    assert halo.parse_boot_config(["grub", 'args="x"'])["cmdline"] == ['args="x"']


def test_dpkg_status_keeps_installed_packages_only():
    lines = ["rocm-core installed 7.2.1.70201-81~24.04", "amdgpu-dkms config-files 1:6.12", "broken line",
             "a installed 1 extra"]
    assert halo_rocm.parse_dpkg_status(lines) == {"rocm-core": "7.2.1.70201-81~24.04"}


def test_rocm_from_dpkg_wins_over_opt_rocm_info_version():
    rocm = halo_rocm.parse_rocm(["rocm-core installed 6.4.4.60404-1~24.04", "@info 7.2.1-81"])
    assert rocm == {"version": "6.4.4", "amdgpu_dkms": False, "package_version": "6.4.4.60404-1~24.04",
                    "stream": "legacy", "legacy": "6.4.4", "therock": {}, "core": None}


def test_rocm_from_opt_rocm_info_version_when_no_package_says():
    assert halo_rocm.parse_rocm(["@info 7.2.1-81"]) == {
        "version": "7.2.1", "amdgpu_dkms": False, "package_version": None, "stream": "legacy", "legacy": "7.2.1",
        "therock": {}, "core": None}
    assert halo_rocm.parse_rocm([]) == {"version": None, "amdgpu_dkms": False, "package_version": None, "stream": None,
                                   "legacy": None, "therock": {}, "core": None}


def test_rocm_from_rpm_and_dkms_detection():
    assert halo_rocm.parse_rocm(["@rpm rocm-core 6.4.2", "@info 7.0.0"])["version"] == "6.4.2"
    assert halo_rocm.parse_rocm(["amdgpu-dkms installed 1:6.12.12-2194681.24.04"])["amdgpu_dkms"] is True
    module = "@dkms /lib/modules/6.8.0-60-generic/updates/dkms/amdttm.ko.zst"
    assert halo_rocm.parse_rocm([module])["amdgpu_dkms"] is True
    assert halo_rocm.parse_rocm(["amdgpu-dkms config-files 1:6.12"])["amdgpu_dkms"] is False


def test_firmware_release_date():
    assert halo.parse_firmware(["firmware-amd-graphics installed 20251125-1", "linux-firmware installed 20260110"]) \
        == "20251125"
    assert halo.parse_firmware(["linux-firmware installed 19991231"]) is None
    assert halo.parse_firmware([]) is None


def test_gtt_state():
    lines = ["ttm_pages_limit 31457280", "amdgpu_gttsize -1", "amdttm_pages_limit  5 ", "junk",
             "other_param 7", "ttm_pages_limit x",
             "/sys/class/drm/card1/device/mem_info_gtt_total 128849018880"]
    assert halo.parse_gtt(lines) == {"ttm_pages_limit": 31457280, "amdttm_pages_limit": 5, "amdgpu_gttsize": -1,
                                     "cards": {"card1": 128849018880}}
    assert halo.parse_gtt([]) == {"ttm_pages_limit": None, "amdttm_pages_limit": None, "amdgpu_gttsize": None,
                                  "cards": {}}


def test_gtt_lines_naming_no_card_file_are_skipped_without_raising():
    """A DRM path that stops at the card (or before it) is read as that card or skipped: a parser never raises."""
    assert halo.parse_gtt(["/sys/class/drm/ 5", "/sys/class/drm/card0 7"])["cards"] == {"card0": 7}


def test_runtimes():
    assert halo.parse_runtimes(["podman podman version 5.4.2 ", "lxc 1", " docker Docker version 26.1.5"]) == {
        "podman": "podman version 5.4.2", "docker": "Docker version 26.1.5"}


def test_os_release_kernel_and_devices():
    info = halo.parse_os(['ID=linuxmint', 'ID_LIKE="ubuntu debian"', 'PRETTY_NAME="Linux Mint 22"',
                          'HOME_URL="https://example.org/?a=b"', 'VARIANT="Xfce Edition X"',
                          "@kernel 6.17.0-19-generic ", "@dev /dev/kfd", "@dev /dev/dri/renderD128", "garbage"])
    assert info == {"id": "linuxmint", "id_like": "ubuntu debian", "pretty_name": "Linux Mint 22",
                    "home_url": "https://example.org/?a=b", "variant": "Xfce Edition X",
                    "kernel": "6.17.0-19-generic", "devices": ["/dev/kfd", "/dev/dri/renderD128"]}


def test_kernel_and_device_lines_keep_the_rest_of_the_line():
    """Everything after the marker is the value, spaces included (what ``uname -r`` printed is shown as it was)."""
    info = halo.parse_os(["@kernel 6.17.0 odd build", "@dev /dev/dri/render D128"])
    assert (info["kernel"], info["devices"]) == ("6.17.0 odd build", ["/dev/dri/render D128"])


def test_os_release_single_quoted_values():
    # os-release(5): values may be in double or single quotes
    info = halo.parse_os(["ID='rocky'", "ID_LIKE='rhel centos fedora'"])
    assert (info["id"], info["id_like"]) == ("rocky", "rhel centos fedora")


def test_sha256sums():
    digest = "a" * 64
    assert halo_files.parse_sha256sums([f"{digest}  /etc/x", f"{'b' * 63}  /etc/y", f"{digest}  ", "junk"]) == {
        "/etc/x": digest}


def test_accounts():
    lines = ["root:0:0", "halo:990:985", "bad:x:1", "short:1", "@group", "video:44", "render:993", "bad:x",
             "root:0:0"]
    assert halo_serve.parse_accounts(lines) == {"users": {"root": (0, 0), "halo": (990, 985)},
                                          "groups": {"video": 44, "render": 993}}
    assert halo_serve.parse_accounts(["video:44"]) == {"users": {}, "groups": {}}


# -- serving facts ---------------------------------------------------------------------------------------------

def test_hex_addresses_of_proc_net_tcp():
    assert halo_serve._hex_address("0100007F") == "127.0.0.1"
    assert halo_serve._hex_address("00000000") == "0.0.0.0"
    assert halo_serve._hex_address("0101A8C0") == "192.168.1.1"
    assert halo_serve._hex_address("00000000000000000000000001000000") == "::1"


def test_serve_state():
    lines = ["@active active", "@enabled generated", "@listen 0100007F:1F90",
             "@listen 00000000000000000000000001000000:0050",
             "@listen zz:1F90", "@listen nocolon", "@stamp file:/m.gguf:5:6", "@cache halo 755",
             "@url http://[::1]:9000", "@other x", "@other 0100007F:0050", "@argv 2f6c2d7300612062000000"]
    assert halo_serve.parse_serve_state(lines) == {
        "active": "active", "enabled": "generated", "listeners": [["127.0.0.1", 8080], ["::1", 80]],
        "stamp": "file:/m.gguf:5:6", "cache": "halo 755", "port": 9000, "argv": ["/l-s", "a b", "", ""]}


def test_serve_state_defaults_and_empty_values():
    assert halo_serve.parse_serve_state([]) == {"active": "unknown", "enabled": "unknown", "listeners": [],
                                                "stamp": None, "cache": None, "port": None, "argv": None}
    state = halo_serve.parse_serve_state(["@active", "@enabled", "@url http://127.0.0.1:99999"])
    assert (state["active"], state["enabled"], state["port"]) == ("unknown", "not-found", None)


def test_argv_hex():
    assert halo_serve.parse_argv_hex("2f6200782000") == ["/b", "x "]  # one trailing NUL ends the last argument
    assert halo_serve.parse_argv_hex("") is None  # no readable command line (a kernel thread, a gone process)
    assert halo_serve.parse_argv_hex("zz") is None
    assert halo_serve.parse_argv_hex("ff00") == ["\ufffd"]


def test_model_file():
    lines = ["@parent halo 755", "@file 497440 1795442225 halo", "@magic 47475546", "@sha256 " + "c" * 64 + "  /m"]
    assert halo_serve.parse_model(lines) == {"kind": "file", "size": 497440, "mtime": 1795442225, "owner": "halo",
                                       "magic": "GGUF", "sha256": "c" * 64, "parent": "halo 755"}


def test_model_short_or_empty_values():
    assert halo_serve.parse_model(["@file", "@magic", "@sha256", "@parent "]) == {
        "kind": "file", "size": 0, "mtime": 0, "owner": "", "magic": "", "sha256": None}


def test_model_dir_missing_and_none():
    assert halo_serve.parse_model(["@dir", "@config"]) == {"kind": "dir", "has_config": True}
    assert halo_serve.parse_model(["@parent root 755", "@missing"]) == {"kind": "missing", "parent": "root 755"}
    assert halo_serve.parse_model([]) == {"kind": "none"}


def test_container_image():
    assert halo_serve.parse_container_image(["@present"]) == {"runtime": True, "present": True}
    assert halo_serve.parse_container_image(["@absent "]) == {"runtime": True, "present": False}
    assert halo_serve.parse_container_image(["@noruntime"]) == {"runtime": False, "present": False}


HEALTHY = ["@engine llama-server distro", "@active active", "@health 200", "@models 200", "@completion 200 0.41",
           "@tokens 2"]


def test_serve_health_healthy():
    assert halo_serve.parse_serve_health(HEALTHY) == {
        "configured": True, "engine": "llama-server", "flavour": "distro", "active": "active", "health": 200,
        "models": 200, "completion": 200, "latency_s": 0.41, "tokens": 2, "healthy": True}


@pytest.mark.parametrize("replace", [
    ("@active active", "@active activating"),
    ("@health 200", "@health 503"),
    ("@completion 200 0.41", "@completion 500 0.41"),
    ("@tokens 2", "@tokens 0"),
    ("@tokens 2", "@tokens "),
    ("@engine llama-server distro", "@none"),
])
def test_serve_health_unhealthy(replace):
    lines = [replace[1] if line == replace[0] else line for line in HEALTHY]
    assert halo_serve.parse_serve_health(lines)["healthy"] is False


def test_serve_health_odd_values():
    health = halo_serve.parse_serve_health(["@none", "@nocurl", "@active", "@health abc", "@completion 000 x",
                                            "@tokens -1"])
    assert health == {"configured": False, "engine": None, "flavour": None, "active": "unknown", "health": None,
                      "models": None, "completion": 0, "latency_s": None, "tokens": None,
                      "error": "curl is missing on the host", "healthy": False}


def test_probe_sections_go_to_their_own_parser():
    lines = [f"{PROBE_MARK}memtotal_kib", "MemTotal: 1048576 kB", f"{PROBE_MARK}kfd_nodes",
             *node(1, 110501, "cwsr_size 1"), f"{PROBE_MARK}unknown_part", "MemTotal: 5 kB",
             f"{PROBE_MARK}model", "@dir", f"{PROBE_MARK}health", *HEALTHY]
    probe = parse_probe(lines)
    assert probe["memtotal_kib"] == 1048576
    assert probe["cwsr"] == {"gfx1151_nodes": 1, "supported": False, "missing": ["ctl_stack_size"]}
    assert probe["model"] == {"kind": "dir"}
    assert probe["health"]["healthy"] is True
    assert "bench" not in probe and "image" not in probe
    assert probe["live_cmdline"] == [] and probe["runtimes"] == {} and probe["files"] == {}


def test_one_generated_token_is_healthy():
    lines = [line if line != "@tokens 2" else "@tokens 1" for line in HEALTHY]
    assert halo_serve.parse_serve_health(lines)["healthy"] is True


def test_line_based_facts_join_their_lines():
    assert halo.LiveCmdline().process(["ro quiet", "x=1"]) == ["ro", "quiet", "x=1"]
    stored = ['{"model": "/m.gguf",', '"model_file_bytes": 1000,',
              '"llama_bench": [{"n_prompt": 512, "n_gen": 0, "avg_ts": 884.0, "backends": "Vulkan"}]}']
    figures = halo_serve.BenchResult().process(stored)
    assert (figures.model, figures.model_bytes, figures.pp_tps, figures.tg_tps, figures.backend) == (
        "/m.gguf", 1000, 884.0, None, "Vulkan")
