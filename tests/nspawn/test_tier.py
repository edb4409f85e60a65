"""
The tier itself: a container is a real host for the packaged deploy (full, twice: the second run changes nothing),
its engine answers, and the test network reaches nothing but its own hosts.
"""

from __future__ import annotations

import json

import pytest

from halofleet.testing.tinymodel import write_tiny_llama

from .conftest import TIER_DATA

pytestmark = pytest.mark.nspawn


def test_full_deploy_serves_on_a_container_and_converges(network, tmp_path):
    model = write_tiny_llama(tmp_path / "tiny.gguf")
    srv1, outsider = network.boot(["srv1", "outsider"])
    data = {**TIER_DATA, "halo_model": str(model), "halo_model_push": True, "halo_ctx": 512,
            "halo_bind": srv1.address, "halo_api_key": "tier-test-key-123"}
    description = network.write_inventory(tmp_path / "hosts.json", host_data={"srv1": data}, hosts=[srv1])

    first = network.run_pyinfra(description, "deploys/full.py")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "llama-server serving on http://" + srv1.address + ":8080" in first.changed_names
    # The container's kernel is the controller's: nothing may try GRUB or a reboot, only say what is missing.
    assert "halo_boot: external" in first.stderr
    assert not [name for name in first.changed_names if "GRUB" in name or "Reboot" in name]

    second = network.run_pyinfra(description, "deploys/full.py")
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.changed_ops == []

    # A completion from another host on the private network, with the key; without it the engine says no.
    body = json.dumps({"prompt": "hi", "n_predict": 2})

    def ask(key: str, *extra: str) -> str:
        return outsider.ssh(f"curl -s -m 60 -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' "
                            f"-d '{body}' {' '.join(extra)} http://{srv1.address}:8080/completion").stdout

    assert json.loads(ask("tier-test-key-123"))["tokens_predicted"] == 2
    assert ask("wrong", "-o /dev/null", "-w '%{http_code}'") == "401"
    # The key lives in a 0600 file of root's, not in the unit or the process list.
    assert srv1.ssh("stat -c '%a %U' /etc/halofleet/serve.env").stdout.split() == ["600", "root"]
    assert "tier-test-key-123" not in srv1.ssh("ps -eo args").stdout


def test_the_test_network_reaches_only_its_own_hosts(network):
    first, second = network.boot(["a", "b"])
    # Between containers and to the controller's side: yes (a listener on b, a connect from a).
    second.ssh("systemd-run --unit probe-listener nc -l -p 4444")
    assert first.ssh(f"nc -z -w 5 {second.address} 4444", check=False).returncode == 0
    # No route beyond the bridge: the namespaces have no uplink.
    assert "unreachable" in first.ssh("ip route get 192.0.2.1 2>&1", check=False).stdout
    assert network.run(["ip", "route", "get", "192.0.2.1"], capture_output=True, text=True).returncode != 0
