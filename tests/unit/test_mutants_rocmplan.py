"""
The ROCm stage's plan per stream, field by field (mutation-tested). Expected URLs, suites and keys are AMD's as
../shared/DOMAIN.md "ROCm 7.14+ and 10.x" and "ROCm versions" give them; paths are halofleet's own.
"""

import pytest

from halofleet.box.rocm import gpu_target, plan_rocm, suite_dir_of, therock_pin_version
from halofleet.contract.config import ConfigError
from halofleet.contract.policy import RocmStream
from halofleet.models.specs import validate

UBUNTU_2404 = {"id": "ubuntu", "version_id": "24.04", "pretty_name": "Ubuntu 24.04.4 LTS"}
LEGACY_721 = {"legacy": "7.2.1", "package_version": "7.2.1.70201-81~24.04", "stream": "legacy", "therock": {}}


def plan(data, os_info=UBUNTU_2404, rocm=None):
    config = validate("h", {"halo_serve": "none", **data})
    return plan_rocm(config, {"os": os_info, "rocm": rocm or {}, "kfd_nodes": []})


def test_no_release_no_plan():
    assert plan({}) is None


def test_legacy_721_with_amds_defaults():
    result = plan({"halo_rocm_version": "7.2.1"}, rocm=LEGACY_721)
    assert (result.stream, result.therock, result.url, result.suite, result.suite_dir) == (
        RocmStream.LEGACY, False, "https://repo.radeon.com/rocm/apt/7.2.1", "noble", None)
    assert (result.key_url, result.key_path, result.key_binary) == (
        "https://repo.radeon.com/rocm/rocm.gpg.key", "/etc/apt/keyrings/halofleet-rocm.asc", False)
    assert (result.sources_path, result.deb822) == ("/etc/apt/sources.list.d/halofleet-rocm.sources", True)
    assert result.packages == ["rocm"] and result.pin_version == "7.2.1.*" and "rocm-core" in result.pin_packages
    assert (result.installed, result.remove_legacy, result.installed_packages) == ("7.2.1", None, {})
    assert set(result.stale_files) == {"/etc/apt/sources.list.d/halofleet-rocm.list",
                                       "/etc/apt/keyrings/halofleet-amdrocm.gpg",
                                       "/etc/apt/keyrings/halofleet-amdrocm-stable.gpg"}


def test_legacy_with_a_mirror_and_a_trusted_repo():
    result = plan({"halo_rocm_version": "7.2.4", "halo_rocm_repo_url": "file:/srv/repo", "halo_rocm_repo_suite": "x1",
                   "halo_rocm_repo_trusted": True, "halo_rocm_packages": ["rocm-hip-runtime"]})
    assert (result.url, result.suite, result.key_url, result.packages) == (
        "file:/srv/repo", "x1", None, ["rocm-hip-runtime"])


def test_therock_714_patch_on_ubuntu_2404_replacing_legacy():
    installed = {"amdrocm7.14-gfx1151": "7.14.0-3"}
    result = plan({"halo_rocm_version": "7.14.1"}, rocm={**LEGACY_721, "therock": installed})
    assert (result.stream, result.therock) == (RocmStream.THEROCK, True)
    assert (result.url, result.suite, result.suite_dir, result.deb822) == (
        "https://repo.amd.com/rocm/packages-multi-arch/ubuntu2404", "stable", "ubuntu2404", False)
    assert (result.key_url, result.key_path, result.key_binary) == (
        "https://repo.amd.com/rocm/packages-multi-arch/gpg/rocm.gpg", "/etc/apt/keyrings/halofleet-amdrocm.gpg", True)
    assert result.sources_path == "/etc/apt/sources.list.d/halofleet-rocm.list"
    assert (result.packages, result.pin_packages, result.pin_version, result.target) == (
        ["amdrocm7.14-gfx1151"], ["amdrocm7.14-gfx1151"], "7.14.1-*", "gfx1151")
    assert (result.installed, result.installed_packages, result.remove_legacy) == ("7.14.0", installed, "7.2.1")
    assert "/etc/apt/keyrings/halofleet-rocm.asc" in result.stale_files
    assert "/etc/apt/sources.list.d/halofleet-rocm.list" not in result.stale_files


def test_therock_10_series_deb822_on_debian_13_with_an_sdk():
    result = plan({"halo_rocm_version": "10.0", "halo_rocm_packages": ["amdrocm-core-sdk10.0-gfx1151"]},
                  os_info={"id": "debian", "version_id": "13"})
    assert (result.url, result.suite, result.deb822, result.sources_path) == (
        "https://stable.repo.amd.com/rocm/core/packages/debian13/", "stable", True,
        "/etc/apt/sources.list.d/halofleet-rocm.sources")
    assert (result.key_url, result.key_path) == ("https://stable.repo.amd.com/rocm/gpg/packages.gpg",
                                                 "/etc/apt/keyrings/halofleet-amdrocm-stable.gpg")
    assert result.pin_packages == ["amdrocm-core-sdk10.0-gfx1151", "amdrocm10.0-gfx1151"]
    assert (result.pin_version, result.installed, result.remove_legacy) == ("10.0.*", None, None)


def test_therock_suite_named_by_host_data_wins_and_an_unknown_os_is_refused():
    assert plan({"halo_rocm_version": "7.14", "halo_rocm_repo_suite": "ubuntu2604"}).suite_dir == "ubuntu2604"
    with pytest.raises(ConfigError) as error:
        plan({"halo_rocm_version": "7.14"}, os_info={"id": "fedora", "version_id": "43", "pretty_name": "Fedora 43"})
    assert str(error.value) == (
        "host 'h': halo_rocm_repo_suite=None is invalid: AMD publishes ROCm 7.14 for debian12, debian13, ubuntu2204, "
        "ubuntu2404, ubuntu2604, and this host runs 'Fedora 43': set halo_rocm_repo_suite to the directory to use")
    with pytest.raises(ConfigError, match="this host runs 'arch 1'"):
        plan({"halo_rocm_version": "7.14"}, os_info={"id": "arch", "version_id": "1"})


@pytest.mark.parametrize("os_info, directory", [
    ({"id": "ubuntu", "version_id": "22.04"}, "ubuntu2204"), ({"id": "debian", "version_id": "12"}, "debian12"),
    ({"id": "debian", "version_id": "14"}, None), ({"id": "ubuntu"}, None), ({}, None),
])
def test_suite_directories(os_info, directory):
    assert suite_dir_of(os_info) == directory


def test_pin_versions_and_the_gpu_target():
    assert therock_pin_version("7.14.1") == "7.14.1-*" and therock_pin_version("10.1") == "10.1.*"
    assert gpu_target({"kfd_nodes": [{"gfx_target_version": 0}, {"gfx_target_version": 110501}]}) == "gfx1151"
    assert gpu_target({}) == "gfx1151"  # hosts allowed without the GPU install for the Strix Halo target
