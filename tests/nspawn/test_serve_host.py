"""
tests/vm/test_serve.py's serving scenarios that need no kernel, GRUB, reboot, sysfs overlay or podman, on two forky
containers booted once for the module (written once in halofleet/testing/servecases.py, called by both tiers):
the review of a fresh host (``halofleet diff`` and ``--dry --diff``: every file and command, neither the API key
nor the Hub token shown; here with a Hub model behind a token from a mirror on the test network, so the token
file is among the changes), stopping the engine leaves none behind and the next run only starts it, a hostile
pushed model name refused in preflight while the other host carries on, and a corrupt model failing its host
without a crash loop. The tests share the containers and run in file order.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from halofleet.testing import nspawn, servecases
from halofleet.testing.runs import ROOT
from halofleet.testing.tinymodel import write_tiny_llama

from .conftest import TIER_DATA, module_network

pytestmark = pytest.mark.nspawn

API_KEY = "sk-halofleet-nspawn-serve-7d2e91"
TOKEN = "hf_nspawn_serve_review_token_789"
MIRROR_PORT = 8000


class Rig:
    def __init__(self, net: nspawn.Network, workdir: Path):
        self.net, self.workdir = net, workdir
        self.model = write_tiny_llama(workdir / "tiny-llama.gguf")
        hub = workdir / "mirror" / "hub" / "acme" / "tiny"
        hub.mkdir(parents=True)
        write_tiny_llama(hub / "beta.gguf", seed=2)
        net.popen([sys.executable, "-m", "halofleet.testing.hubmirror", str(workdir / "mirror"), net.gateway,
                   str(MIRROR_PORT), str(workdir / "mirror.log"), TOKEN], cwd=ROOT)
        self.boxes = {box.name: box for box in net.boot(["srv1", "srv2"])}
        # The mirror answers before the first run's preflight asks it (any status: it is listening).
        net.run(["curl", "-s", "-o", "/dev/null", "--retry-connrefused", "--retry", "30", "--retry-delay", "1",
                 f"http://{net.gateway}:{MIRROR_PORT}/"], check=True, timeout=60)
        self.runs = 0

    def description(self, host_data: dict[str, dict]) -> Path:
        self.runs += 1
        return self.net.write_inventory(self.workdir / f"hosts-{self.runs}.json",
                                        host_data={name: {**TIER_DATA, **data} for name, data in host_data.items()},
                                        hosts=[self.boxes[name] for name in host_data])

    def deploy(self, host_data: dict[str, dict], deploy_file: str, review: bool = False):
        return self.net.run_pyinfra(self.description(host_data), deploy_file, review=review)

    def diff(self, host_data: dict[str, dict], out: Path) -> str:
        proc = self.net.run(["env", f"HALOFLEET_VM_INVENTORY={self.description(host_data)}", sys.executable, "-m",
                             "halofleet.cli", "diff", "inventories/vm.py", "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return out.read_text()

    def host(self, name: str) -> servecases.ServeHost:
        box = self.boxes[name]

        def sh(command: str, check: bool = True) -> str:
            return box.ssh(command, check=check).stdout.strip()

        return servecases.ServeHost(name=name, sh=sh, deploy=self.deploy, diff=self.diff, manages_boot=False)

    def serving(self, **extra) -> dict:
        return {"halo_model": str(self.model), "halo_model_push": True, "halo_ctx": 512, "halo_api_key": API_KEY,
                **extra}


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    with module_network(tmp_path_factory, "serve") as (net, workdir):
        yield Rig(net, workdir)


def test_review_of_a_fresh_host_shows_every_change_and_no_secret(rig, tmp_path):
    data = {"halo_models": [{"name": "beta", "hf": "acme/tiny", "include": "*.gguf", "ctx": 512}],
            "halo_hf_endpoint": f"http://{rig.net.gateway}:{MIRROR_PORT}", "halo_hf_token": TOKEN,
            "halo_api_key": API_KEY}
    servecases.review_of_a_fresh_host(rig.host("srv1"), data, tmp_path / "review.md")


PREPARED = {"halo_serve": "none"}


@pytest.fixture(scope="module")
def converged(rig):
    """srv1 serving the pushed model, srv2 only prepared: one full run for both (where the VM tier's earlier tests
    leave its srv1 and srv3)."""
    run = rig.deploy({"srv1": rig.serving(), "srv2": PREPARED}, "deploys/full.py")
    assert run.returncode == 0, run.stderr[-3000:]


def test_stopping_leaves_no_engine_behind(rig, converged):
    servecases.stopping_leaves_no_engine_behind(rig.host("srv1"), rig.serving())


def test_hostile_model_file_name_is_refused_and_nothing_runs_anywhere(rig, converged, tmp_path):
    servecases.hostile_model_name_refused(rig.host("srv1"), rig.serving(), rig.model, tmp_path, rig.host("srv2"),
                                          PREPARED)


def test_corrupt_model_is_a_clear_error_not_a_crash_loop(rig, tmp_path):
    servecases.corrupt_model_fails_without_a_crash_loop(rig.host("srv1"), rig.serving(), rig.model, tmp_path)
