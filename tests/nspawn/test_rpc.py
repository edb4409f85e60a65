"""
One model across boxes: two llama.cpp RPC workers and a head on the test's private network, provisioned by the
packaged deploy over SSH, and an outsider on the same network that must not reach the workers.
"""

from __future__ import annotations

import json
import re
import sys

import pytest

from halofleet.testing.runs import ROOT
from halofleet.testing.tinymodel import write_tiny_llama

from .conftest import TIER_DATA

pytestmark = pytest.mark.nspawn

KEY = "rpc-group-test-key-1"


def _connects(source, target, port: int) -> bool:
    """A TCP connect from one container to another (nc -z: connect, then close at once)."""
    return source.ssh(f"nc -z -w 3 {target.address} {port}", check=False).returncode == 0


def _monotonic(box, unit: str, prop: str = "ActiveEnterTimestampMonotonic") -> int:
    return int(box.ssh(f"systemctl show -p {prop} --value {unit}").stdout.strip())


def _listeners(box, port: int) -> list[str]:
    out = box.ssh(f"ss -Hltn 'sport = :{port}'").stdout
    return sorted(line.split()[3].rsplit(":", 1)[0] for line in out.splitlines() if line.strip())


def _complete(head) -> dict:
    body = json.dumps({"prompt": "hi", "n_predict": 2})
    out = head.ssh(f"curl -s -m 120 -H 'Authorization: Bearer {KEY}' -H 'Content-Type: application/json' "
                   f"-d '{body}' http://127.0.0.1:8080/completion").stdout
    return json.loads(out)


def _buffers(head) -> dict[str, float]:
    """What the head's current llama-server start put on each RPC endpoint (its own log, not halofleet's fact)."""
    invocation = head.ssh("systemctl show -p InvocationID --value halo-serve.service").stdout.strip()
    log = head.ssh(f"journalctl -q -o cat _SYSTEMD_INVOCATION_ID={invocation}").stdout
    found: dict[str, float] = {}
    for endpoint, mib in re.findall(r"RPC\d+\[([0-9.:]+)\] model buffer size = +([0-9.]+) MiB", log):
        found[endpoint] = found.get(endpoint, 0.0) + float(mib)
    return found


def _verify(network, description, tmp_path) -> list[dict]:
    """``halofleet verify --json`` and ``report`` as an operator runs them, from the controller's side."""
    env = ["env", f"HALOFLEET_VM_INVENTORY={description}", sys.executable, "-m", "halofleet"]
    verify = network.run([*env, "verify", "inventories/vm.py", "--json"], cwd=ROOT, capture_output=True, text=True)
    assert verify.stdout.startswith("["), verify.stderr[-3000:]
    report = network.run([*env, "report", "inventories/vm.py", "--md", str(tmp_path / "status.md")], cwd=ROOT,
                         capture_output=True, text=True)
    assert (tmp_path / "status.md").exists(), report.stderr[-3000:]
    return json.loads(verify.stdout)


def test_rpc_group_splits_one_model_over_two_workers_behind_their_firewalls(network, tmp_path):
    model = write_tiny_llama(tmp_path / "tiny.gguf")
    head, w1, w2, outsider = network.boot(["head", "w1", "w2", "outsider"])
    worker = {**TIER_DATA, "halo_serve": "rpc-worker"}
    data = {
        # The head first in the inventory: the stage order, not the host order, must start the workers first.
        "head": {**TIER_DATA, "halo_model": str(model), "halo_model_push": True, "halo_ctx": 512,
                 "halo_api_key": KEY, "halo_rpc_address": head.address, "halo_rpc_workers": ["w1", "w2"]},
        "w1": {**worker, "halo_rpc_address": w1.address, "halo_rpc_cache": True},
        "w2": {**worker, "halo_rpc_address": w2.address, "halo_rpc_device": "CPU"},
    }
    description = network.write_inventory(tmp_path / "hosts.json", host_data=data, hosts=[head, w1, w2])

    # The review before anything changes: the workers' firewall and units, the head's --rpc.
    review = network.run(["env", f"HALOFLEET_VM_INVENTORY={description}", sys.executable, "-m", "halofleet", "diff",
                          "inventories/vm.py"], cwd=ROOT, capture_output=True, text=True)
    assert review.returncode == 0, review.stderr[-3000:]
    assert f"RPC firewall: port 50052 from head ({head.address}) only" in review.stdout
    assert f"+\t\ttcp dport 50052 ip saddr {head.address} accept" in review.stdout
    assert f"--rpc {w1.address}:50052,{w2.address}:50052" in review.stdout
    first = network.run_pyinfra(description, "deploys/full.py")
    assert first.returncode == 0, first.stderr[-4000:]
    # The KV-aware split in preflight, in llama.cpp's device order (workers first, the head last).
    split = [line.split("preflight memory plan: ", 1)[1] for line in first.stderr.splitlines()
             if "[head] preflight memory plan: " in line]
    assert split[0].startswith("split of tiny.gguf") and split[-1].endswith("fits"), split
    assert [line.split()[0] for line in split[1:-1]] == ["w1", "w2", "head"]
    endpoints = [f"{w1.address}:50052", f"{w2.address}:50052"]
    assert "llama-server serving on http://127.0.0.1:8080" in first.changed_names

    # The workers were listening before the head's engine started (one clock: the containers share a kernel).
    head_started = _monotonic(head, "halo-serve.service")
    for box in (w1, w2):
        assert box.ssh("systemctl is-active halo-rpc.service halo-rpc-firewall.service").stdout.split() == \
            ["active", "active"]
        assert _monotonic(box, "halo-rpc.service") < head_started
        # ggml-rpc-server runs as the service user, bound to the private address only.
        assert _listeners(box, 50052) == [box.address]
        assert box.ssh("ps -o user= -C ggml-rpc-server").stdout.split() == ["halo"]
    # -c with its cache directory (LLAMA_CACHE) owned by the service user; -d as ggml-rpc-server takes it.
    assert w1.ssh("stat -c '%U %a' /var/lib/halofleet/rpc-cache").stdout.split() == ["halo", "750"]
    assert f"-H {w1.address} -p 50052 -c" in w1.ssh("ps -o args= -C ggml-rpc-server").stdout
    assert f"-H {w2.address} -p 50052 -d CPU" in w2.ssh("ps -o args= -C ggml-rpc-server").stdout
    unit = head.ssh("systemctl cat halo-serve.service").stdout
    assert f"--rpc {','.join(endpoints)}" in unit  # inventory order

    # The model really spread: each worker holds part of the weights, and the head answers a completion.
    buffers = _buffers(head)
    assert set(buffers) == set(endpoints) and all(mib > 0 for mib in buffers.values()), buffers
    assert _complete(head)["tokens_predicted"] == 2

    # RPC is unauthenticated: the port answers the head and no one else, the other worker included.
    for box in (w1, w2):
        assert _connects(head, box, 50052)
        assert not _connects(outsider, box, 50052)
    assert not _connects(w2, w1, 50052)
    assert not _connects(w1, w2, 50052)
    # Our own table only: the rest of the ruleset is untouched (here: empty).
    assert w1.ssh("nft list tables").stdout.split() == ["table", "inet", "halofleet_rpc"]

    second = network.run_pyinfra(description, "deploys/full.py")
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.changed_ops == []

    # verify sees the group: the head's engine used both workers, each worker listens on its address only.
    rows = {row["host"]: row for row in _verify(network, description, tmp_path)}
    assert rows["head"]["rpc"].startswith("head: w1 ok (") and ", w2 ok (" in rows["head"]["rpc"], rows["head"]
    assert rows["head"]["completion"].startswith("2 tokens"), rows["head"]
    assert rows["w1"]["rpc"] == f"worker of head: listening on {w1.address}:50052 only", rows["w1"]
    assert rows["w2"]["rpc"] == f"worker of head: listening on {w2.address}:50052 only", rows["w2"]
    report = (tmp_path / "status.md").read_text()
    assert "## RPC groups" in report and "| head | w1: ok" in report, report

    # A worker's port change restarts the head, which then reaches the worker on the new port.
    data["w1"]["halo_rpc_port"] = 50053
    network.write_inventory(tmp_path / "hosts.json", host_data=data, hosts=[head, w1, w2])
    third = network.run_pyinfra(description, "deploys/full.py")
    assert third.returncode == 0, third.stderr[-3000:]
    assert _monotonic(head, "halo-serve.service") > head_started
    assert _listeners(w1, 50053) == [w1.address] and _listeners(w1, 50052) == []
    assert set(_buffers(head)) == {f"{w1.address}:50053", f"{w2.address}:50052"}
    assert _connects(head, w1, 50053) and not _connects(outsider, w1, 50053)
    assert _complete(head)["tokens_predicted"] == 2
    fourth = network.run_pyinfra(description, "deploys/full.py")
    assert fourth.returncode == 0 and fourth.changed_ops == [], fourth.stderr[-3000:]

    # A worker that went down (a crash, a reboot) is started again, and its head reloads onto it.
    w2.ssh("systemctl stop halo-rpc.service")
    head_started = _monotonic(head, "halo-serve.service")
    fifth = network.run_pyinfra(description, "deploys/full.py")
    assert fifth.returncode == 0, fifth.stderr[-3000:]
    assert _listeners(w2, 50052) == [w2.address] and _monotonic(head, "halo-serve.service") > head_started
    assert set(_buffers(head)) == {f"{w1.address}:50053", f"{w2.address}:50052"}
    assert _complete(head)["tokens_predicted"] == 2

    # nftables.service flushes the whole ruleset when it restarts: our table comes back with it.
    w1.ssh("systemctl restart nftables.service")
    assert "halofleet_rpc" in w1.ssh("nft list tables").stdout
    assert not _connects(outsider, w1, 50053) and _connects(head, w1, 50053)
    # A ruleset flushed by hand: the next run loads the table again.
    w1.ssh("nft flush ruleset")
    assert _connects(outsider, w1, 50053)
    sixth = network.run_pyinfra(description, "deploys/full.py")
    assert sixth.returncode == 0, sixth.stderr[-3000:]
    assert not _connects(outsider, w1, 50053) and _connects(head, w1, 50053)
    assert _complete(head)["tokens_predicted"] == 2

    # Rollback of a worker: its units, nft file and table go (the rest of the ruleset stays); a second one is a no-op.
    w2.ssh("nft add table inet users_own")  # a table of the user's, which must survive
    data["w2"]["halo_reboot"] = "never"
    network.write_inventory(tmp_path / "hosts.json", host_data=data, hosts=[head, w1, w2])
    undo = network.run_pyinfra(description, "deploys/rollback.py", "--limit", "w2")
    assert undo.returncode == 0, undo.stderr[-3000:]
    assert w2.ssh("nft list tables").stdout.split() == ["table", "inet", "users_own"]
    assert w2.ssh("ls /etc/systemd/system/halo-rpc.service /etc/systemd/system/halo-rpc-firewall.service "
                  "/etc/halofleet/rpc.nft 2>/dev/null; systemctl is-active halo-rpc.service", check=False
                  ).stdout.split() == ["inactive"]
    assert _listeners(w2, 50052) == []
    again = network.run_pyinfra(description, "deploys/rollback.py", "--limit", "w2")
    assert again.returncode == 0 and again.changed_ops == [], again.stderr[-3000:]
