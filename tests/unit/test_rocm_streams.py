"""
Both ROCm streams: the matrix edges and the stream of each release, the suite directory chosen from os-release,
the plan of each stream (source, key, format, packages, pin), and the commands the rocm stage sends through the
@fake connector: legacy unchanged, TheRock 7.14 (one-line source, binary keyring), 10.x (deb822), the legacy
stack removed first, a converged TheRock host left alone.

Probe lines for TheRock are constructed from DOMAIN.md "ROCm 7.14+ and 10.x" (package names, X.Y.Z-N versions,
/opt/rocm/core-X.Y); the legacy rocm-core version is the one captured from AMD's Ubuntu repo (see the
halo.RocmInstall fact fixtures).
"""

from __future__ import annotations

import pytest

from halofleet.box.rocm import plan_rocm, suite_dir_of, therock_pin_version
from halofleet.contract import policy
from halofleet.contract.config import ConfigError
from halofleet.contract.paths import (
    ROCM_KEY,
    ROCM_KEY_THEROCK,
    ROCM_KEY_THEROCK_STABLE,
    ROCM_LIST,
    ROCM_PIN,
    ROCM_SOURCES,
)
from halofleet.facts.probe import parse_probe
from halofleet.models.specs import validate
from halofleet.operations.halo_rocm import render_pin, render_sources
from halofleet.testing.fake import probe_output, run_fake

BASE = {"halo_allow_non_strix_halo": True, "halo_reboot": "never", "halo_serve": "none"}
UBUNTU_2404 = ["ID=ubuntu", 'VERSION_ID="24.04"', 'PRETTY_NAME="Ubuntu 24.04.4 LTS"']
LEGACY_721 = "7.2.1.70201-81~24.04"  # captured from AMD's Ubuntu repo


def _os(distro: str, version_id: str | None) -> list[str]:
    lines = [f"ID={distro}", f'PRETTY_NAME="{distro} {version_id or "testing"}"']
    return lines + ([f'VERSION_ID="{version_id}"'] if version_id else [])


# -- matrix and streams -------------------------------------------------------------------------------------

@pytest.mark.parametrize("version, stream, cwsr, verdict", [
    ("7.2.4", "legacy", policy.Verdict.OK, "ok"),  # the last legacy release
    ("7.2.5", "legacy", policy.Verdict.WARN, "not in the support matrix"),  # never released: unknown
    ("7.14.0", "therock", policy.Verdict.OK, "ok"),
    ("7.14.1", "therock", policy.Verdict.OK, "ok"),
    ("7.14", "therock", policy.Verdict.OK, "ok"),
    ("10.0", "therock", policy.Verdict.OK, "assumed like 7.14 [U]"),
    ("10.1.0", "therock", policy.Verdict.OK, "assumed like 7.14 [U]"),
    ("7.15", "therock", policy.Verdict.WARN, "not in the support matrix"),  # a future release warns
    ("10.2", "therock", policy.Verdict.OK, "known release"),  # out (DOMAIN.md 'Refreshed 2026-12'), no matrix row
    ("10.3", "therock", policy.Verdict.WARN, "not in the support matrix"),
    ("11.0", "therock", policy.Verdict.WARN, "not in the support matrix"),
])
def test_matrix_edges_and_streams(version, stream, cwsr, verdict):
    assert policy.rocm_stream(version).value == stream
    result, message = policy.rocm_kernel_verdict(version, True)
    assert result is cwsr and verdict in message


@pytest.mark.parametrize("version", ["7.14.0", "7.14.1", "10.0", "10.1"])
def test_therock_on_an_old_kernel_warns(version):
    assert policy.rocm_kernel_verdict(version, False)[0] is policy.Verdict.WARN


def test_gfx_target_from_kfd():
    assert policy.gfx_target(110501) == "gfx1151"
    assert policy.gfx_target(90010) == "gfx90a"


# -- the plan of each stream --------------------------------------------------------------------------------

@pytest.mark.parametrize("os_lines, expected", [
    (_os("ubuntu", "22.04"), "ubuntu2204"),
    (_os("ubuntu", "24.04"), "ubuntu2404"),
    (_os("ubuntu", "26.04"), "ubuntu2604"),
    (_os("debian", "12"), "debian12"),
    (_os("debian", "13"), "debian13"),
    (_os("debian", None), None),  # forky/sid: no VERSION_ID
    (_os("ubuntu", "25.10"), None),
    (_os("fedora", "43"), None),
])
def test_suite_dir_from_os_release(os_lines, expected):
    assert suite_dir_of(parse_probe(probe_output(os_release=os_lines))["os"]) == expected


def _plan(data: dict, **probe):
    probe_data = parse_probe(probe_output(**probe))
    return plan_rocm(validate("h", {**BASE, **data}), probe_data)


def test_legacy_plan_is_as_before():
    plan = _plan({"halo_rocm_version": "7.2.1"})
    assert (plan.url, plan.suite, plan.key_url, plan.key_path, plan.sources_path, plan.deb822) == (
        "https://repo.radeon.com/rocm/apt/7.2.1", "noble", policy.ROCM_APT_KEY_URL, ROCM_KEY, ROCM_SOURCES, True)
    assert plan.packages == ["rocm"] and plan.pin_version == "7.2.1.*" and plan.remove_legacy is None
    assert set(plan.stale_files) == {ROCM_LIST, ROCM_KEY_THEROCK, ROCM_KEY_THEROCK_STABLE}


def test_therock_714_plan():
    plan = _plan({"halo_rocm_version": "7.14.1"}, os_release=UBUNTU_2404, rocm_core=LEGACY_721, gfx1151=True)
    assert plan.url == "https://repo.amd.com/rocm/packages-multi-arch/ubuntu2404"
    assert (plan.suite, plan.key_url, plan.key_path, plan.key_binary) == (
        "stable", "https://repo.amd.com/rocm/packages-multi-arch/gpg/rocm.gpg", ROCM_KEY_THEROCK, True)
    assert (plan.sources_path, plan.deb822) == (ROCM_LIST, False)
    assert plan.packages == ["amdrocm7.14-gfx1151"] and plan.pin_version == "7.14.1-*"
    assert plan.remove_legacy == "7.2.1"
    assert set(plan.stale_files) == {ROCM_SOURCES, ROCM_KEY, ROCM_KEY_THEROCK_STABLE}


def test_therock_10_plan():
    plan = _plan({"halo_rocm_version": "10.0"}, os_release=_os("debian", "13"))
    assert plan.url == "https://stable.repo.amd.com/rocm/core/packages/debian13/"
    assert (plan.suite, plan.key_url, plan.key_path) == (
        "stable", "https://stable.repo.amd.com/rocm/gpg/packages.gpg", ROCM_KEY_THEROCK_STABLE)
    assert (plan.sources_path, plan.deb822) == (ROCM_SOURCES, True)
    assert plan.packages == ["amdrocm10.0-gfx1151"] and plan.pin_version == "10.0.*"
    assert plan.remove_legacy is None


def test_suite_override_and_sdk_packages():
    plan = _plan({"halo_rocm_version": "7.14", "halo_rocm_repo_suite": "ubuntu2604",
                  "halo_rocm_packages": ["amdrocm7.14-gfx1151", "amdrocm-core-sdk7.14-gfx1151"]},
                 os_release=_os("debian", None))
    assert plan.url.endswith("/ubuntu2604") and plan.pin_packages == [
        "amdrocm-core-sdk7.14-gfx1151", "amdrocm7.14-gfx1151"]


def test_unknown_distro_is_refused_naming_the_override():
    with pytest.raises(ConfigError) as error:
        _plan({"halo_rocm_version": "7.14.1"}, os_release=_os("debian", None))
    assert "halo_rocm_repo_suite" in str(error.value) and "debian13" in str(error.value)


def test_pin_versions():
    assert therock_pin_version("7.14.0") == "7.14.0-*"
    assert therock_pin_version("7.14") == "7.14.*"
    assert therock_pin_version("10.1.0") == "10.1.0-*"


def test_rendered_files():
    assert render_sources("https://repo.amd.com/rocm/packages-multi-arch/ubuntu2404", "stable", ROCM_KEY_THEROCK,
                          deb822=False).splitlines()[-1] == (
        "deb [arch=amd64 signed-by=/etc/apt/keyrings/halofleet-amdrocm.gpg] "
        "https://repo.amd.com/rocm/packages-multi-arch/ubuntu2404 stable main")
    deb822 = render_sources("https://stable.repo.amd.com/rocm/core/packages/ubuntu2404/", "stable",
                            ROCM_KEY_THEROCK_STABLE)
    assert "URIs: https://stable.repo.amd.com/rocm/core/packages/ubuntu2404/\nSuites: stable\n" in deb822
    assert f"Signed-By: {ROCM_KEY_THEROCK_STABLE}" in deb822
    pin = render_pin("7.14.1", ["amdrocm7.14-gfx1151"], "7.14.1-*")
    assert "Package: amdrocm7.14-gfx1151\nPin: version 7.14.1-*\nPin-Priority: 1001" in pin
    with pytest.raises(ValueError):
        render_sources("https://x/ y", "stable", None)
    with pytest.raises(ValueError):
        render_pin("7.14.1", ["amdrocm7.14-gfx1151; rm"], "7.14.1-*")
    with pytest.raises(ValueError):
        render_pin("7.14.1", ["amdrocm7.14-gfx1151"], "7.14.1 *")


# -- commands through the @fake connector -------------------------------------------------------------------

def _commands(data: dict, **probe) -> list[str]:
    run = run_fake("deploys/rocm.py", {"h": ({**BASE, **data}, probe_output(**probe))})
    assert not run.failed_hosts, run.errors
    return run.changes("h")


def test_legacy_commands_unchanged():
    text = "\n".join(_commands({"halo_rocm_version": "7.2.1"}))
    assert "halofleet-rocm.asc" in text and "BEGIN PGP PUBLIC KEY BLOCK" in text
    assert ("apt-get install -y --allow-downgrades --no-install-recommends -o DPkg::Lock::Timeout=300 "
            "-- rocm-core rocm") in text
    assert "amdrocm" not in text and "purge" not in text


def test_therock_714_commands_remove_legacy_first():
    commands = _commands({"halo_rocm_version": "7.14.1"}, os_release=UBUNTU_2404, rocm_core=LEGACY_721,
                         files={ROCM_SOURCES: "a" * 64, ROCM_KEY: "b" * 64, ROCM_PIN: "c" * 64})
    text = "\n".join(commands)
    # the other stream's files go (backed up), the binary keyring is checked, not armored, no gpg on the host
    assert "halofleet-rocm.sources" in text and "halofleet-rocm.asc" in text
    assert "od -An -tx1 -N1" in text and "gpg --" not in text and "gpg -" not in text.replace("rocm.gpg", "")
    assert "halofleet-amdrocm.gpg" in text and "halofleet-rocm.list" in text
    purge = next(i for i, c in enumerate(commands) if "apt-get purge" in c)
    install = next(i for i, c in enumerate(commands) if "apt-get install" in c)
    assert purge < install
    assert commands[purge] == "DEBIAN_FRONTEND=noninteractive apt-get purge -y -o DPkg::Lock::Timeout=300 rocm-core"
    assert commands[install].endswith("-o DPkg::Lock::Timeout=300 amdrocm7.14-gfx1151")
    assert "7.14.1-*) ;;" in commands[install + 1]


def test_therock_10_commands_use_deb822_and_its_key():
    text = "\n".join(_commands({"halo_rocm_version": "10.0"}, os_release=_os("debian", "12"), gfx1151=True))
    assert "https://stable.repo.amd.com/rocm/gpg/packages.gpg" in text and "halofleet-amdrocm-stable.gpg" in text
    assert "halofleet-rocm.sources" in text and "purge" not in text
    assert "amdrocm10.0-gfx1151" in text and "10.0.*) ;;" in text


def test_converged_therock_host_gets_nothing():
    import hashlib

    sources = render_sources

    def sha(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    data = {"halo_rocm_version": "7.14.0", "halo_rocm_repo_url": "file:/srv/repo", "halo_rocm_repo_trusted": True}
    files = {ROCM_LIST: sha(sources("file:/srv/repo", "stable", None, deb822=False)),
             ROCM_PIN: sha(render_pin("7.14.0", ["amdrocm7.14-gfx1151"], "7.14.0-*"))}
    commands = _commands(data, os_release=_os("debian", "13"), files=files,
                         rocm_lines=["amdrocm7.14-gfx1151 installed 7.14.0-3", "@core /opt/rocm/core-7.14"])
    assert commands == []


def test_therock_patch_move_reinstalls():
    data = {"halo_rocm_version": "7.14.1", "halo_rocm_repo_url": "file:/srv/repo", "halo_rocm_repo_trusted": True}
    commands = _commands(data, os_release=_os("debian", "13"),
                         rocm_lines=["amdrocm7.14-gfx1151 installed 7.14.0-3", "@core /opt/rocm/core-7.14"])
    assert any("apt-get install -y --allow-downgrades" in c for c in commands)
    assert not any("purge" in c for c in commands)
