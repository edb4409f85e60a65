"""
The front door on real hosts: a gateway container running Debian's haproxy in front of two serving containers
(llama-server on a tiny model, --metrics). Requests through it are balanced (both engines' own /metrics counters
rise), a stopped engine is taken out (haproxy says DOWN, requests still succeed) and put back (UP, in rotation
again), and a second deploy changes nothing.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

import pytest

from halofleet.testing.runs import ROOT
from halofleet.testing.tinymodel import write_tiny_llama

from .conftest import TIER_DATA

pytestmark = pytest.mark.nspawn

KEY = "gateway-test-key-0123"
SHOW_STAT = "echo 'show stat' | nc -N -w 5 -U /run/haproxy/admin.sock"


def counters(box) -> dict[str, float]:
    """The engine's Prometheus counters, read on its own host (the oracle: not through the gateway)."""
    text = box.ssh(f"curl -s -H 'Authorization: Bearer {KEY}' http://{box.address}:8080/metrics").stdout
    values = {}
    for line in text.splitlines():
        match = re.match(r"(llamacpp:[a-z_]+) ([0-9.e+-]+)$", line)
        if match:
            values[match.group(1)] = float(match.group(2))
    assert "llamacpp:prompt_tokens_total" in values, text[:500]
    return values


def states(gateway) -> dict[str, str]:
    """Each server's status in haproxy's own CSV (read here, not with halofleet's parser)."""
    lines = gateway.ssh(SHOW_STAT).stdout.splitlines()
    header = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:] if line]
    return {row["svname"]: row["status"] for row in rows if row["pxname"] == "halo_fleet"
            and row["svname"] not in ("FRONTEND", "BACKEND")}


def wait_for(gateway, server: str, status: str, timeout: float = 60) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if states(gateway).get(server) == status:
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"haproxy never marked {server} {status}: {states(gateway)}")


def test_gateway_balances_fails_over_and_converges(network, tmp_path):
    model = write_tiny_llama(tmp_path / "tiny.gguf")
    gw, srv1, srv2 = network.boot(["gw", "srv1", "srv2"])
    serving = {**TIER_DATA, "halo_model": str(model), "halo_model_push": True, "halo_ctx": 512,
               "halo_api_key": KEY, "halo_llama_args": ["--metrics"]}
    host_data = {
        "gw": {**TIER_DATA, "halo_serve": "none", "halo_gateway": True, "halo_gateway_bind": gw.address,
               "halo_gateway_check_inter_s": 1, "halo_gateway_fall": 2, "halo_gateway_rise": 2},
        "srv1": {**serving, "halo_bind": srv1.address},
        "srv2": {**serving, "halo_bind": srv2.address},
    }
    description = network.write_inventory(tmp_path / "hosts.json", host_data=host_data)
    first = network.run_pyinfra(description, "deploys/full.py")
    assert first.returncode == 0, first.stderr[-3000:]
    assert any(name.startswith("haproxy configuration (http://" + gw.address) for name in first.changed_names)
    # What went live is what the box's own haproxy accepts, and the key is in no gateway file.
    assert gw.ssh("haproxy -c -q -f /etc/haproxy/haproxy.cfg", check=False).returncode == 0
    assert KEY not in gw.ssh("cat /etc/haproxy/haproxy.cfg").stdout
    # Debian's own haproxy.cfg (installed by the package just before) is kept once as the original.
    assert "etc__haproxy__haproxy.cfg" in gw.ssh("ls /var/backups/halofleet/original/").stdout.split()
    debian_cfg = gw.ssh("sha256sum < /var/backups/halofleet/original/etc__haproxy__haproxy.cfg").stdout
    wait_for(gw, "srv1", "UP")
    wait_for(gw, "srv2", "UP")

    def ask(n: int) -> list[int]:
        """n completions through the gateway from the controller side; their HTTP codes."""
        codes = []
        for _ in range(n):
            result = network.run(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "60", "-H",
                 f"Authorization: Bearer {KEY}", "-H", "Content-Type: application/json", "-d",
                 json.dumps({"model": "tiny", "prompt": "hi", "max_tokens": 2}),
                 f"http://{gw.address}:8080/v1/completions"], capture_output=True, text=True)
            codes.append(int(result.stdout or 0))
        return codes

    before = {box.name: counters(box) for box in (srv1, srv2)}
    assert ask(6) == [200] * 6
    after = {box.name: counters(box) for box in (srv1, srv2)}
    for name in ("srv1", "srv2"):  # both engines did part of the work
        assert after[name]["llamacpp:prompt_tokens_total"] > before[name]["llamacpp:prompt_tokens_total"], name
        assert after[name]["llamacpp:tokens_predicted_total"] > before[name]["llamacpp:tokens_predicted_total"]
    # The key is enforced at the engines: through the gateway, no key is no answer.
    no_key = network.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "30", "-d", "{}",
                          f"http://{gw.address}:8080/v1/completions"], capture_output=True, text=True)
    assert no_key.stdout == "401"

    # One box down: haproxy takes it out, and every request still succeeds on the other.
    srv2.ssh("systemctl stop halo-serve.service")
    print(f"srv2 marked DOWN after {wait_for(gw, 'srv2', 'DOWN'):.1f} s")
    held = counters(srv1)
    assert ask(4) == [200] * 4
    assert counters(srv1)["llamacpp:prompt_tokens_total"] > held["llamacpp:prompt_tokens_total"]
    # Back up: in rotation again.
    srv2.ssh("systemctl start halo-serve.service")
    print(f"srv2 marked UP after {wait_for(gw, 'srv2', 'UP'):.1f} s")
    returned = counters(srv2)
    assert ask(4) == [200] * 4
    assert counters(srv2)["llamacpp:prompt_tokens_total"] > returned["llamacpp:prompt_tokens_total"]

    # The verification table shows each backend as haproxy sees it.
    verify = network.run([sys.executable, "-m", "halofleet", "verify", "inventories/vm.py", "--json"], cwd=ROOT,
                         env={**os.environ, "HALOFLEET_VM_INVENTORY": str(description)}, capture_output=True,
                         text=True)
    rows = {row["host"]: row for row in json.loads(verify.stdout)}
    assert rows["gw"]["gateway"] == "fleet/srv1 UP, fleet/srv2 UP", rows["gw"]
    # What each engine's own /v1/models says it serves (the same model on both).
    assert rows["srv1"]["models"] not in ("-", "none") and rows["srv1"]["models"] == rows["srv2"]["models"], rows
    # The key never reached haproxy's log (no header capture, no query string).
    assert KEY not in gw.ssh("journalctl -q --no-pager -t haproxy; cat /var/log/haproxy.log 2>/dev/null",
                             check=False).stdout

    second = network.run_pyinfra(description, "deploys/full.py")
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.changed_ops == []

    # Rolling the gateway back: the haproxy.cfg that was there before halofleet's first touch (here Debian's,
    # from the package) is back byte for byte, ours kept as a generation; a second rollback changes nothing.
    only_gw = network.write_inventory(tmp_path / "gw.json", host_data=host_data, hosts=[gw])
    undone = network.run_pyinfra(only_gw, "deploys/rollback.py")
    assert undone.returncode == 0, undone.stderr[-3000:]
    assert "/etc/haproxy/haproxy.cfg back to the user's own" in undone.changed_names
    assert gw.ssh("sha256sum < /etc/haproxy/haproxy.cfg").stdout == debian_cfg
    assert gw.ssh("grep -l 'Managed by halofleet' /var/backups/halofleet/generations/etc__haproxy__haproxy.cfg.*",
                  check=False).stdout.strip()
    assert network.run(["curl", "-s", "-m", "5", f"http://{gw.address}:8080/health"]).returncode != 0
    again = network.run_pyinfra(only_gw, "deploys/rollback.py")
    assert again.returncode == 0 and again.changed_ops == [], again.stderr[-3000:]


def test_routing_by_model_and_tls(network, tmp_path):
    """Two groups serving different models behind one TLS endpoint: the JSON 'model' picks the group."""
    model = write_tiny_llama(tmp_path / "tiny.gguf")
    gw, small, big = network.boot(["gw", "small1", "big1"])
    pem = tmp_path / "gw.pem"
    network.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                 f"/CN={gw.address}", "-keyout", str(pem), "-out", str(pem)], check=True, capture_output=True)
    serving = {**TIER_DATA, "halo_model": str(model), "halo_model_push": True, "halo_ctx": 512,
               "halo_api_key": KEY, "halo_llama_args": ["--metrics"]}
    host_data = {
        "gw": {**TIER_DATA, "halo_serve": "none", "halo_gateway": True, "halo_gateway_bind": gw.address,
               "halo_gateway_port": 8443, "halo_gateway_tls_cert": str(pem),
               "halo_gateway_groups": ["small", "big"], "halo_gateway_check_inter_s": 1,
               "halo_gateway_models": {"tiny-chat": "small", "big-coder": "big"}},
        "small1": {**serving, "halo_bind": small.address},
        "big1": {**serving, "halo_bind": big.address},
    }
    description = network.write_inventory(tmp_path / "hosts.json", host_data=host_data)
    inventory = json.loads(description.read_text())
    inventory["groups"] = {"small": ["small1"], "big": ["big1"]}
    description.write_text(json.dumps(inventory))
    first = network.run_pyinfra(description, "deploys/full.py")
    assert first.returncode == 0, first.stderr[-3000:]
    # The key file of the certificate: root's alone; the private key never in pyinfra's output.
    assert gw.ssh("stat -c '%a %U' /etc/haproxy/halofleet-gateway.pem").stdout.split() == ["600", "root"]
    assert "PRIVATE KEY" not in first.stderr

    def post(body: dict) -> tuple[int, str]:
        request = tmp_path / "request.json"
        request.write_text(json.dumps(body))
        result = network.run(
            ["curl", "-s", "--cacert", str(pem), "-m", "60", "-w", "\n%{http_code}", "-H",
             f"Authorization: Bearer {KEY}", "-H", "Content-Type: application/json", "--data-binary",
             f"@{request}",
             f"https://{gw.address}:8443/v1/completions"], capture_output=True, text=True)
        text, _, code = result.stdout.rpartition("\n")
        return int(code or 0), text

    for box in (small, big):
        for _ in range(40):
            if network.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(pem),
                            f"https://{gw.address}:8443/health"], capture_output=True, text=True).stdout == "200":
                break
            time.sleep(0.5)
    before = {box.name: counters(box) for box in (small, big)}
    for _ in range(3):
        assert post({"model": "big-coder", "prompt": "hi", "max_tokens": 2})[0] == 200
    middle = {box.name: counters(box) for box in (small, big)}
    assert middle["big1"]["llamacpp:prompt_tokens_total"] > before["big1"]["llamacpp:prompt_tokens_total"]
    assert middle["small1"]["llamacpp:prompt_tokens_total"] == before["small1"]["llamacpp:prompt_tokens_total"]
    assert post({"model": "tiny-chat", "prompt": "hi", "max_tokens": 2})[0] == 200
    after = {box.name: counters(box) for box in (small, big)}
    assert after["small1"]["llamacpp:prompt_tokens_total"] > middle["small1"]["llamacpp:prompt_tokens_total"]
    assert after["big1"]["llamacpp:prompt_tokens_total"] == middle["big1"]["llamacpp:prompt_tokens_total"]

    code, text = post({"model": "gpt-5", "prompt": "hi"})
    assert code == 404 and json.loads(text)["error"]["code"] == "model_not_found", text
    code, text = post({"prompt": "hi"})
    assert code == 400 and json.loads(text)["error"]["code"] == "model_required", text
    # A body too large for the routing buffer is refused with a clear 413, not misrouted.
    code, text = post({"model": "tiny-chat", "prompt": "x" * (1100 * 1024)})
    assert code == 413 and json.loads(text)["error"]["code"] == "request_too_large", text
    # Just below the limit the model is still read and the request reaches the engine (which has its own say).
    code, text = post({"prompt": "x " * (450 * 1024), "model": "tiny-chat", "max_tokens": 1})
    print(f"a 900 KiB body through the gateway: HTTP {code} {text[:160]}")
    assert code != 413 and "model_required" not in text and "model_not_found" not in text, text[:300]

    # verify: the routes next to what each group's engine answers on /v1/models.
    verify = network.run([sys.executable, "-m", "halofleet", "verify", "inventories/vm.py", "--json"], cwd=ROOT,
                         env={**os.environ, "HALOFLEET_VM_INVENTORY": str(description)}, capture_output=True,
                         text=True)
    rows = {row["host"]: row for row in json.loads(verify.stdout)}
    assert rows["gw"]["gateway"].endswith("; routes: big-coder -> big (big1); tiny-chat -> small (small1)"), rows
    assert not rows["gw"]["status"].startswith("unhealthy: the gateway routes"), rows["gw"]
    assert rows["small1"]["models"] not in ("-", "none"), rows["small1"]

    second = network.run_pyinfra(description, "deploys/full.py")
    assert second.returncode == 0 and second.changed_ops == []


def test_a_configuration_haproxy_cannot_load_never_goes_live(network, tmp_path):
    """haproxy -c accepts a listener on a port sshd holds; the reload fails: the previous file is put back."""
    model = write_tiny_llama(tmp_path / "tiny.gguf")
    gw, srv1 = network.boot(["gw", "srv1"])
    gateway = {**TIER_DATA, "halo_serve": "none", "halo_gateway": True, "halo_gateway_bind": gw.address,
               "halo_gateway_check_inter_s": 1}
    serving = {**TIER_DATA, "halo_model": str(model), "halo_model_push": True, "halo_ctx": 512,
               "halo_api_key": KEY, "halo_bind": srv1.address}

    def describe(**extra):
        return network.write_inventory(tmp_path / "hosts.json", host_data={"gw": {**gateway, **extra},
                                                                           "srv1": serving})

    first = network.run_pyinfra(describe(), "deploys/full.py")
    assert first.returncode == 0, first.stderr[-3000:]
    live = gw.ssh("sha256sum /etc/haproxy/haproxy.cfg").stdout

    taken = network.run_pyinfra(describe(halo_gateway_port=22), "deploys/full.py")
    assert taken.returncode != 0 and "gw" in taken.failed_hosts
    assert "cannot bind socket" in taken.stderr and "the previous file is back in place" in taken.stderr
    assert gw.ssh("sha256sum /etc/haproxy/haproxy.cfg").stdout == live
    # Still serving on the old listener, and the next run with the old data has nothing to do.
    health = network.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "10",
                          f"http://{gw.address}:8080/health"], capture_output=True, text=True)
    assert health.stdout == "200"
    again = network.run_pyinfra(describe(), "deploys/full.py")
    assert again.returncode == 0 and again.changed_ops == []
