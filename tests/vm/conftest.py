"""
Real hosts for the VM tests: Debian VMs booted by QEMU (TCG) through their own GRUB, reached by pyinfra over SSH.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from halofleet.testing import aptrepo, prereqs
from halofleet.testing import vm as vm_mod

ROOT = Path(__file__).resolve().parents[2]
REPO_IN_VM = "/srv/halofleet-test-repo"


@dataclass
class PyinfraRun:
    returncode: int
    result: dict | None
    stderr: str
    seconds: float

    @property
    def changed_ops(self) -> list[str]:
        """Names of operations that changed something on any host (from pyinfra's own JSON results)."""
        if not self.result or not self.result.get("results"):
            return []
        return [op["name"] for op in self.result["results"]["operations"] if op["success"]]

    @property
    def changed_names(self) -> list[str]:
        """Like changed_ops, without the ``halofleet | <stage> | `` prefix of the packaged deploys."""
        return [name.rsplit(" | ", 1)[-1] for name in self.changed_ops]

    def summary_line(self, host: str) -> str:
        """The host's line of halofleet's end-of-run summary (stderr)."""
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip().startswith(host + " ")]
        return lines[-1] if lines else ""

    @property
    def failed_hosts(self) -> list[str]:
        return self.result["results"]["failed_hosts"] if self.result and self.result.get("results") else []


def run_pyinfra(description: Path, deploy: str, *args: str, timeout: int = 1500, review: bool = False) -> PyinfraRun:
    """
    ``pyinfra -y --json inventories/vm.py DEPLOY`` against the VMs in ``description``, its JSON results parsed.
    ``review=True`` runs ``--dry --diff`` as a person reviewing would (no -y, no --json: pyinfra prints diffs only
    in change detection, which -y skips and --json silences).
    """
    env = {**os.environ, "HALOFLEET_VM_INVENTORY": str(description)}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pyinfra", *(["--dry", "--diff"] if review else ["-y", "--json"]), *args,
         "inventories/vm.py", deploy],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    seconds = time.monotonic() - started
    result = None
    stdout = proc.stdout.strip()
    if stdout.startswith("{"):
        result = json.loads(stdout)
    print(f"pyinfra {deploy} {' '.join(args)}: exit {proc.returncode} in {seconds:.0f} s")
    return PyinfraRun(proc.returncode, result, proc.stderr, seconds)


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
