"""
Bad inventory/host data and refused hosts: each gets a clear error naming host, key, value and what is allowed,
and no command reaches the host. Data errors are caught before any fact is gathered (not even the probe runs);
errors that need the host's facts let only the read-only probe through.

Runs the real deploys/full.py through pyinfra's @fake connector.
"""

from pathlib import Path

import pytest

from halofleet.testing.fake import probe_output, run_fake

GOOD = {"halo_allow_non_strix_halo": True, "halo_reboot": "never", "halo_model": "/srv/models/tiny.gguf",
        "halo_llama_backend": "cpu"}
SECRET = "sk-halofleet-test-0123456789abcdef"
NOT_GGUF = Path(__file__).resolve()  # exists on the control machine, but is no model

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
    ({"halo_rocm_packages": ["rocm; reboot"]}, "must be a non-empty list of package names ([a-z0-9][a-z0-9+.-]+"),
    ({"halo_rocm_packages": ["-o=APT::X"]}, "must be a non-empty list of package names"),
    ({"halo_rocm_version": "7.14", "halo_rocm_repo_suite": "noble"},
     "halo_rocm_repo_suite='noble' is invalid: ROCm 7.14 (TheRock) is published for debian12, debian13, ubuntu2204"),
    ({"halo_rocm_version": "7.14.1", "halo_rocm_packages": ["rocm"]},
     "ROCm 7.14.1 installs TheRock's per-target packages of its series, like amdrocm7.14-gfx1151"),
    ({"halo_rocm_version": "10.0", "halo_rocm_packages": ["amdrocm7.14-gfx1151"]},
     "'amdrocm7.14-gfx1151' is not one"),
    ({"halo_rocm_repo_suite": "noble main"}, "must be an apt suite or directory name"),
    ({"halo_rocm_repo_suite": "noble\nmain"}, "halo_rocm_repo_suite='noble\\nmain' is invalid: must be a single line"),
    ({"halo_reboot_timeout": 5}, "halo_reboot_timeout=5 is invalid: must be between 30 and 7200"),
    # serving
    ({"halo_model": None}, "halo_model=None is invalid: a model is needed for halo_serve: llama-server"),
    ({"halo_model": "models/tiny.gguf"}, "halo_model='models/tiny.gguf' is invalid: must be an absolute path on the host"),
    ({"halo_serve": "vllm", "halo_model": "not a model id"}, "must be an absolute path on the host or a Hugging Face id"),
    ({"halo_model": "/nonexistent/m.gguf", "halo_model_push": True},
     "halo_model='/nonexistent/m.gguf' is invalid: no such file on the control machine"),
    ({"halo_model": str(NOT_GGUF), "halo_model_push": True}, "is invalid: not a GGUF file"),
    ({"halo_port": 80}, "halo_port=80 is invalid: must be between 1024 and 65535"),
    ({"halo_port": 70000}, "halo_port=70000 is invalid: must be between 1024 and 65535"),
    ({"halo_port": "http"}, "halo_port='http' is invalid: must be a whole number"),
    ({"halo_bind": "localhost"}, "halo_bind='localhost' is invalid: must be an IP address to listen on"),
    ({"halo_bind": "300.1.1.1"}, "halo_bind='300.1.1.1' is invalid: must be an IP address"),
    ({"halo_api_key": SECRET + "\nX=1"}, "halo_api_key=<redacted> is invalid: must be a single line"),
    ({"halo_api_key": "short"}, "halo_api_key=<redacted> is invalid: must be 16 to 512 characters"),
    ({"halo_api_key": SECRET + " x"}, "halo_api_key=<redacted> is invalid: must be 16 to 512 characters"),
    ({"halo_image": "kyuz0/toolbox:latest tag"}, "halo_image='kyuz0/toolbox:latest tag' is invalid: must be a fully"),
    ({"halo_vllm_gpu_memory_utilization": 0.95}, "halo_vllm_gpu_memory_utilization=0.95 is invalid: must be between 0.05 and 0.9"),
    ({"halo_vllm_gpu_memory_utilization": "most"}, "halo_vllm_gpu_memory_utilization='most' is invalid: must be a number"),
    ({"halo_llama_ubatch": 4096}, "halo_llama_ubatch=4096 is invalid: must not exceed halo_llama_batch (2048)"),
    ({"halo_llama_args": ["--threads 4"]}, "halo_llama_args=['--threads 4'] is invalid: must be a list of arguments"),
    ({"halo_vllm_args": "--enforce-eager"}, "halo_vllm_args='--enforce-eager' is invalid: must be a list of arguments"),
    ({"halo_model_sha256": "abc"}, "halo_model_sha256='abc' is invalid: must be 64 lower-case hex digits"),
    ({"halo_llama_source": "toolbox"}, "halo_image=None is invalid: the toolbox images are built for vulkan or hip"),
    ({"halo_llama_source": "docker"}, "halo_llama_source='docker' is invalid: must be one of distro, toolbox"),
    ({"halo_ctx": 0}, "halo_ctx=0 is invalid: must be between 256 and 1048576"),
    ({"halo_memory_max_gib": 0}, "halo_memory_max_gib=0 is invalid: must be between 1 and 1024"),
    ({"halo_start_timeout": 3}, "halo_start_timeout=3 is invalid: must be between 30 and 7200"),
    ({"halo_modle": "/m.gguf"}, "halo_modle='/m.gguf' is invalid: unknown key (did you mean 'halo_model'?)"),
    ({"halo_model_push": "sometimes"}, "halo_model_push='sometimes' is invalid: must be true or false"),
    ({"halo_serve": "vllm", "halo_model": "/srv/m.gguf", "halo_model_push": True},
     "halo_model_push=True is invalid: pushing is for single GGUF files"),
    ({"halo_serve": "vllm", "halo_model": "org/m", "halo_runtime": "docker"},
     "halo_runtime='docker' is invalid: the toolbox and vLLM images are served by podman Quadlet units"),
]


@pytest.mark.parametrize("data, message", DATA_ERRORS, ids=[str(d) for d, _ in DATA_ERRORS])
def test_bad_data_reaches_no_host(data, message):
    run = run_fake("deploys/full.py", {"bad": ({**GOOD, **data}, probe_output()), "good": (GOOD, probe_output())})
    assert run.failed_hosts == {"bad"}
    assert any("host '@fake/bad'" in error and message in error for error in run.errors), run.errors
    assert run.commands["bad"] == []  # not even the probe
    assert run.changes("good")  # the other host was deployed
    assert not any(SECRET in error for error in run.errors)


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
    ({"halo_rocm_version": "7.14.1"}, {"os_release": ["ID=debian", 'PRETTY_NAME="Debian GNU/Linux forky/sid"']},
     "halo_rocm_repo_suite=None is invalid: AMD publishes ROCm 7.14.1 for debian12"),
    # serving
    ({}, {"model": ["@parent root 755", "@missing"]}, "model /srv/models/tiny.gguf does not exist on the host"),
    ({}, {"model": ["@parent root 755", "@file 10 1 root", "@magic 7f454c46"]}, "is not a GGUF file"),
    ({}, {"model": ["@parent root 755", "@dir"]}, "is not a file (llama-server needs one GGUF file)"),
    ({"halo_serve": "vllm", "halo_model": "/srv/models/qwen"}, {"model": ["@dir"], "gfx1151": True},
     "model directory /srv/models/qwen has no config.json"),
    ({"halo_model_sha256": "0" * 64}, {"model": ["@file 10 1 root", "@magic 47475546", "@sha256 " + "1" * 64]},
     "not halo_model_sha256: corrupt or replaced"),
    ({}, {"listeners": ["0100007F:1F90"]}, "port 8080 is already in use on 127.0.0.1 by another program"),
    ({"halo_bind": "0.0.0.0"}, {"listeners": ["0100007F:1F90"]}, "port 8080 is already in use on 127.0.0.1"),
    ({"halo_memory_max_gib": 20}, {}, "halo_memory_max_gib=20 is invalid: must be below the 15 GiB of RAM"),
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


def test_port_held_by_our_own_engine_is_fine():
    run = run_fake("deploys/full.py", {"h": (GOOD, probe_output(listeners=["0100007F:1F90"], serve_active="active"))})
    assert run.failed_hosts == set(), run.errors


def test_api_key_never_reaches_a_command_or_log():
    run = run_fake("deploys/full.py", {"h": ({**GOOD, "halo_api_key": SECRET, "halo_bind": "0.0.0.0"},
                                             probe_output())})
    assert run.failed_hosts == set(), run.errors
    assert not any(SECRET in command for command in run.commands["h"])


def test_counts(capsys):
    """The corpus stays at least as large as the issues ask (25 bad inputs), and says how large it is."""
    assert len(DATA_ERRORS) >= 15
    assert len(DATA_ERRORS) + len(HOST_ERRORS) >= 25
    with capsys.disabled():
        print(f"\nbad-input corpus: {len(DATA_ERRORS)} data errors + {len(HOST_ERRORS)} host refusals = "
              f"{len(DATA_ERRORS) + len(HOST_ERRORS)} bad inputs tried, each with 0 changes leaked")
