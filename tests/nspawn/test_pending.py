"""
What a run leaves behind is what it says (issue 21), on real hosts: a restart skipped by a halted rollout is not
lost (verify says "pending restart" until the next run makes it live), and an RPC worker whose address is not its
own is refused before any change while its head keeps serving.
"""

from __future__ import annotations

import json

import pytest

from halofleet.testing.tinymodel import write_tiny_llama

from .conftest import TIER_DATA
from .test_rpc import _verify

pytestmark = pytest.mark.nspawn

KEY = "pending-test-key-0123"


def engine_argv(box) -> list[str]:
    """The running engine's real command line (/proc/<MainPID>/cmdline), not what its unit says."""
    pid = box.ssh("systemctl show -p MainPID --value halo-serve.service").stdout.strip()
    assert pid not in ("", "0"), f"{box.name}: no engine running"
    return box.ssh(f"tr '\\0' '\\n' < /proc/{pid}/cmdline").stdout.splitlines()


def ctx_of(argv: list[str]) -> str:
    return argv[argv.index("-c") + 1]


def health(box) -> str:
    return box.ssh("curl -s -o /dev/null -w '%{http_code}' -m 5 http://127.0.0.1:8080/health", check=False).stdout


def test_a_restart_skipped_by_a_halted_rollout_is_pending_until_the_next_run(network, tmp_path):
    model = write_tiny_llama(tmp_path / "tiny.gguf")
    srv1, srv2 = network.boot(["srv1", "srv2"])
    base = {**TIER_DATA, "halo_model": str(model), "halo_model_push": True, "halo_api_key": KEY,
            "halo_restart_batch": 1}

    def describe(ctx: int, broken: bool = False):
        # broken: an argument llama-server itself rejects at start (validation cannot know every flag's values)
        extra = {"halo_llama_args": ["--threads", "many"]} if broken else {}
        return network.write_inventory(tmp_path / "hosts.json",
                                       host_data={box.name: {**base, "halo_ctx": ctx, **extra} for box in (srv1, srv2)})

    first = network.run_pyinfra(describe(512), "deploys/full.py")
    assert first.returncode == 0, first.stderr[-3000:]
    pids = {box.name: box.ssh("systemctl show -p ExecMainPID --value halo-serve.service").stdout.strip()
            for box in (srv1, srv2)}

    # The first batch's engine fails to start: the rollout stops before the second batch's turn. (pyinfra orders
    # a run's hosts by its own set: which one goes first is read from the output.)
    halted = network.run_pyinfra(describe(640, broken=True), "deploys/full.py")
    assert halted.returncode != 0
    skipped = [box for box in (srv1, srv2)
               if f"[{box.name}] halofleet: not restarted: the rollout stopped because" in halted.stderr]
    assert len(skipped) == 1, halted.stderr[-3000:]
    kept, failed = skipped[0], next(box for box in (srv1, srv2) if box is not skipped[0])
    assert halted.summary_line(failed.name).split()[1] == "failed"
    # The reason is llama-server's own, from its journal, and the key is in no line of it.
    log = halted.stderr.split(f"[{failed.name}] halofleet: last lines of the engine log", 1)
    assert len(log) == 2 and 'error while handling argument "--threads"' in log[1], halted.stderr[-3000:]
    assert KEY not in halted.stderr
    # The skipped host: its unit is written, but the old engine still runs (same process, old -c) and serves.
    assert "-c 640" in kept.ssh("systemctl show -p ExecStart --value halo-serve.service").stdout
    assert kept.ssh("systemctl show -p ExecMainPID --value halo-serve.service").stdout.strip() == pids[kept.name]
    assert ctx_of(engine_argv(kept)) == "512" and health(kept) == "200"

    # (The tier's hosts keep the controller's kernel, so their status says "not converged"; the engine column
    # is what this test reads.)
    rows = {row["host"]: row for row in _verify(network, describe(640, broken=True), tmp_path)}
    assert rows[kept.name]["engine"] == "pending restart: unit or environment written but not live", rows[kept.name]
    assert rows[failed.name]["engine"].startswith("pending restart"), rows[failed.name]

    # The config fixed: the failed host comes up, and the skipped host's pending restart happens.
    fixed = network.run_pyinfra(describe(640), "deploys/full.py")
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert ctx_of(engine_argv(srv1)) == "640" and ctx_of(engine_argv(srv2)) == "640"
    assert health(srv1) == "200" and health(srv2) == "200"
    rows = {row["host"]: row for row in _verify(network, describe(640), tmp_path)}
    assert [rows[name]["engine"] for name in ("srv1", "srv2")] == ["live", "live"]
    again = network.run_pyinfra(describe(640), "deploys/full.py")
    assert again.returncode == 0 and again.changed_ops == [], again.stderr[-3000:]

    # Drift: an engine running another command line than its unit's (here a drop-in's ExecStart).
    srv2.ssh("mkdir -p /etc/systemd/system/halo-serve.service.d && printf '[Service]\\nExecStart=\\n"
             "ExecStart=/usr/bin/llama-server --model /var/lib/halofleet/models/tiny.gguf --host 127.0.0.1 "
             "--port 8080 -c 768\\n' > /etc/systemd/system/halo-serve.service.d/zz.conf && "
             "systemctl daemon-reload && systemctl restart halo-serve.service")
    assert ctx_of(engine_argv(srv2)) == "768"
    rows = {row["host"]: row for row in _verify(network, describe(640), tmp_path)}
    assert rows["srv2"]["engine"] == "drift: the engine's command line is not its unit's", rows["srv2"]
    assert rows["srv1"]["engine"] == "live", rows["srv1"]


def test_a_worker_whose_address_is_not_its_own_is_refused_and_its_head_keeps_serving(network, tmp_path):
    model = write_tiny_llama(tmp_path / "tiny.gguf")
    head, w1 = network.boot(["head", "w1"])
    data = {
        "head": {**TIER_DATA, "halo_model": str(model), "halo_model_push": True, "halo_ctx": 512,
                 "halo_api_key": KEY, "halo_rpc_address": head.address, "halo_rpc_workers": ["w1"]},
        "w1": {**TIER_DATA, "halo_serve": "rpc-worker", "halo_rpc_address": w1.address},
    }
    description = network.write_inventory(tmp_path / "hosts.json", host_data=data)
    first = network.run_pyinfra(description, "deploys/full.py")
    assert first.returncode == 0, first.stderr[-3000:]
    before = {box.name: box.ssh("sha256sum /etc/systemd/system/halo-*.service; "
                                "systemctl show -p ExecMainPID --value halo-serve.service halo-rpc.service").stdout
              for box in (head, w1)}

    # A typo: the worker's address is another host's (the network's gateway, .1).
    data["w1"]["halo_rpc_address"] = network.gateway
    network.write_inventory(tmp_path / "hosts.json", host_data=data)
    typo = network.run_pyinfra(description, "deploys/full.py")
    assert typo.returncode != 0
    assert "halo_rpc_address" in typo.stderr and "is not an address of this host" in typo.stderr, typo.stderr[-3000:]
    assert typo.changed_ops == [], typo.changed_ops  # refused in preflight: nothing changed anywhere
    after = {box.name: box.ssh("sha256sum /etc/systemd/system/halo-*.service; "
                               "systemctl show -p ExecMainPID --value halo-serve.service halo-rpc.service").stdout
             for box in (head, w1)}
    assert after == before
    body = json.dumps({"prompt": "hi", "n_predict": 2})
    answer = head.ssh(f"curl -s -m 120 -H 'Authorization: Bearer {KEY}' -H 'Content-Type: application/json' "
                      f"-d '{body}' http://127.0.0.1:8080/completion").stdout
    assert json.loads(answer)["tokens_predicted"] == 2  # the head answers, still through its worker
