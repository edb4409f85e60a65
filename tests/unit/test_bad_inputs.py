"""
Bad inventory/host data and refused hosts: each gets a clear error naming host, key, value and what is allowed,
and no command reaches the host. Data errors are caught before any fact is gathered (not even the probe runs);
errors that need the host's facts let only the read-only probe through.

Runs the real deploys/full.py through pyinfra's @fake connector.
"""

import pytest

from halofleet.testing.fake import probe_output, run_fake

GOOD = {"halo_allow_non_strix_halo": True, "halo_reboot": "never"}

DATA_ERRORS = [
    ({"halo_serve": "ollama"}, "halo_serve='ollama' is invalid: must be one of llama-server, vllm, none"),
    ({"halo_serve": "llama_server"}, "did you mean 'llama-server'?"),
    ({"halo_rocm_version": "7.0.1"}, "halo_rocm_version='7.0.1' is invalid: ROCm 7.0.1 is refused"),
    ({"halo_rocm_version": "7.x"}, "must be 'none' or a ROCm release like 7.2.1 (X.Y or X.Y.Z)"),
    ({"halo_rocm_version": "latest"}, "halo_rocm_version='latest' is invalid"),
    ({"halo_rocm_version": 7.2}, "halo_rocm_version=7.2 is invalid: must be a string, not float"),
    ({"halo_iommu": "amd_iommu=pt"}, "amd_iommu=pt is not a valid kernel option"),
    ({"halo_iommu": "on"}, "halo_iommu='on' is invalid: must be one of off, pt"),
    ({"halo_gtt_gib": "lots"}, "halo_gtt_gib='lots' is invalid: must be a whole number"),
    ({"halo_gtt_gib": True}, "halo_gtt_gib=True is invalid: must be a whole number"),
    ({"halo_os_reserve_gib": 0}, "halo_os_reserve_gib=0 is invalid: must be between 4 and 1024"),
    ({"halo_os_reserve_gib": -2}, "halo_os_reserve_gib=-2 is invalid: must be between 4 and 1024"),
    ({"halo_os_reserve_gib": 5000}, "halo_os_reserve_gib=5000 is invalid: must be between 4 and 1024"),
    ({"halo_cwsr_policy": "strict"}, "halo_cwsr_policy='strict' is invalid: must be one of enforce, warn"),
    ({"halo_reboot": "sometimes"}, "halo_reboot='sometimes' is invalid: must be one of auto, never"),
    ({"halo_emit_gttsize": "maybe"}, "halo_emit_gttsize='maybe' is invalid: must be true or false"),
    ({"halo_rocm_verison": "7.2.1"}, "halo_rocm_verison='7.2.1' is invalid: unknown key (did you mean 'halo_rocm_version'?)"),
    ({"halo_runtime": "lxc"}, "halo_runtime='lxc' is invalid: must be one of podman, docker"),
    ({"halo_service_user": "root"}, "halo_service_user='root' is invalid: must be a non-root system user name"),
    ({"halo_rocm_packages": []}, "halo_rocm_packages=[] is invalid: must be a non-empty list of package names"),
    ({"halo_rocm_repo_url": "ftp://mirror/rocm"}, "must be an http://, https:// or file:/ URL"),
    ({"halo_rocm_version": "7.2.1", "halo_rocm_repo_key_url": None},
     "halo_rocm_repo_key_url=None is invalid: a signing key URL is needed unless halo_rocm_repo_trusted is true"),
    ({"halo_rocm_repo_suite": "noble\nmain"}, "halo_rocm_repo_suite='noble\\nmain' is invalid: must be a single line"),
    ({"halo_reboot_timeout": 5}, "halo_reboot_timeout=5 is invalid: must be between 30 and 7200"),
]


@pytest.mark.parametrize("data, message", DATA_ERRORS, ids=[str(d) for d, _ in DATA_ERRORS])
def test_bad_data_reaches_no_host(data, message):
    run = run_fake("deploys/full.py", {"bad": ({**GOOD, **data}, probe_output()), "good": (GOOD, probe_output())})
    assert run.failed_hosts == {"bad"}
    assert any("host '@fake/bad'" in error and message in error for error in run.errors), run.errors
    assert run.commands["bad"] == []  # not even the probe
    assert run.changes("good")  # the other host was deployed


HOST_ERRORS = [
    ({"halo_gtt_gib": 200}, {}, "halo_gtt_gib=200 is invalid: must be at most 7 GiB"),
    ({}, {"rocm_core": "7.0.1.70001-1"}, "ROCm 7.0.1 is installed and refused"),
    ({"halo_allow_non_strix_halo": False}, {}, "no gfx1151 (Strix Halo) GPU found"),
    ({}, {"firmware": "20251125"}, "linux-firmware 20251125 is refused"),
    ({}, {"amdgpu_dkms": True}, "amdgpu-dkms is installed"),
    ({"halo_serve": "vllm"}, {"gfx1151": False}, "vLLM on ROCm needs a kernel exporting the CWSR properties"),
    ({}, {"boot_kind": "systemd-boot"}, "bootloader 'systemd-boot' is not supported"),
    ({"halo_rocm_version": "6.4.4"}, {"gfx1151": True}, "ROCm 6.4.4 on a kernel with the CWSR fix is bad"),
    ({"halo_rocm_version": "7.2.0"}, {"gfx1151": False}, "ROCm 7.2.0 on a kernel without the CWSR fix is bad"),
    ({}, {"os_release": ["ID=alpine", 'PRETTY_NAME="Alpine Linux v3.20"']}, "unsupported distribution 'Alpine"),
    ({}, {"memtotal_kib": 6 * 1024 * 1024}, "must leave at least 4 GiB of the 6 GiB Linux sees"),
]


@pytest.mark.parametrize("data, probe, message", HOST_ERRORS, ids=[m[:40] for _, _, m in HOST_ERRORS])
def test_refused_host_gets_only_the_probe(data, probe, message):
    run = run_fake("deploys/full.py", {"bad": ({**GOOD, **data}, probe_output(**probe))})
    assert run.failed_hosts == {"bad"}
    assert any(message in error for error in run.errors), run.errors
    assert len(run.commands["bad"]) == 1 and run.changes("bad") == []


def test_cwsr_warn_policy_lets_vllm_through_with_a_warning():
    run = run_fake("deploys/full.py", {"h": ({**GOOD, "halo_serve": "vllm", "halo_cwsr_policy": "warn"},
                                             probe_output(gfx1151=False))})
    assert run.failed_hosts == set()
    assert run.changes("h")


def test_counts():
    """The corpus stays at least as large as the issues ask (15 data errors, 25 bad inputs in all)."""
    assert len(DATA_ERRORS) >= 15
    assert len(DATA_ERRORS) + len(HOST_ERRORS) >= 25
