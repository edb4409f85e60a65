"""
Real hosts for the VM tests: Debian VMs booted by QEMU (TCG) through their own GRUB, reached by pyinfra over SSH.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from halofleet.testing import aptrepo, prereqs
from halofleet.testing import vm as vm_mod
from halofleet.testing.runs import run_pyinfra  # noqa: F401 (the VM tests import it from here)

ROOT = Path(__file__).resolve().parents[2]
REPO_IN_VM = "/srv/halofleet-test-repo"

# The whole VM tier takes about 2.5 hours under QEMU's TCG (KVM fails on these machines: "emulation failure"), far
# over CI's budget: the modules marked with WHOLE_TIER_ONLY run only with HALOFLEET_VM_ALL=1 (docs/testing.md).
WHOLE_TIER_ENV = "HALOFLEET_VM_ALL"
WHOLE_TIER_ONLY = pytest.mark.skipif(
    os.environ.get(WHOLE_TIER_ENV) != "1",
    reason=f"a 3-VM module takes an hour or more under TCG: set {WHOLE_TIER_ENV}=1 to run it")


@pytest.fixture(scope="session", autouse=True)
def prerequisites() -> None:
    """Stop at once, in one line, when this machine cannot build or boot the VMs (what is missing, how to get it)."""
    try:
        prereqs.check(modules=prereqs.DEMO_MODULES)
    except prereqs.MissingPrerequisite as error:
        pytest.exit(f"halofleet VM tests: {error}", returncode=2)


@pytest.fixture(scope="session")
def base_image() -> Path:
    return vm_mod.base_image("trixie")


@pytest.fixture(scope="session")
def serving_image() -> Path:
    return vm_mod.base_image(vm_mod.SERVING_SUITE, vm_mod.SERVING_PACKAGES)


@pytest.fixture(scope="session")
def rocm_repo(tmp_path_factory) -> Path:
    return aptrepo.build_repo(tmp_path_factory.mktemp("rocm-repo"))


@pytest.fixture(scope="session")
def vm_workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("vms")


def rocm_group_data(version: str) -> dict:
    return {
        "halo_serve": "none",  # trixie has no llama-server package; serving is tested on forky (test_serve.py)
        "halo_rocm_version": version,
        "halo_rocm_repo_url": f"file:{REPO_IN_VM}",
        "halo_rocm_repo_suite": aptrepo.SUITE,
        "halo_rocm_repo_trusted": True,
    }


def therock_group_data(version: str, repo_dir: str) -> dict:
    """A TheRock release from the local repository's copy of AMD's layout (``therock/<repo_dir>``, suite stable)."""
    return {
        "halo_serve": "none",
        "halo_rocm_version": version,
        "halo_rocm_repo_url": f"file:{REPO_IN_VM}/therock/{repo_dir}",
        "halo_rocm_repo_trusted": True,
    }
