"""
Draining at the gateway: where a host is a backend (:func:`slots_of`), the drain and ready scripts run against a
stand-in for haproxy's admin socket (a fake ``nc`` answering as haproxy does), and the rolling restart's order on
fake hosts: each engine drained at the gateway before its restart and put back after, one host at a time; a
failed restart leaves its backend drained and stops the rollout.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess

import pytest

from halofleet.fleet.gateway import STATS_SOCKET, Slot, drain_script, ready_script, slots_of
from halofleet.models.specs import validate
from halofleet.testing.fake import probe_output, run_fake

KEY = "d" * 24
GATEWAY = {"halo_gateway": True, "halo_gateway_bind": "127.0.0.1", "halo_serve": "none",
           "halo_allow_non_strix_halo": True, "halo_reboot": "never"}
SERVES = {"halo_allow_non_strix_halo": True, "halo_reboot": "never", "halo_model": "/srv/models/tiny.gguf",
          "halo_llama_backend": "cpu", "halo_api_key": KEY}


def test_slots_are_the_backends_a_host_is_behind():
    gateway = validate("gw", GATEWAY, serving=False)
    groups = {"fleet": [("gw", GATEWAY), ("a.lan", {**SERVES, "halo_bind": "10.0.0.2"}),
                        ("idle", {"halo_serve": "none"})]}
    other = validate("gw2", {**GATEWAY, "halo_gateway_timeout_s": 30, "halo_gateway_check_inter_s": 2}, serving=False)
    gateways = [(gateway, groups), (other, {"small": groups["fleet"]})]
    assert slots_of("a.lan", gateways) == [Slot("gw", "halo_fleet", "a.lan", 600, 2 * (2 + 2) + 10),
                                           Slot("gw2", "halo_small", "a.lan", 30, 2 * (2 + 2) + 10)]
    assert slots_of("idle", gateways) == []  # serves nothing: no backend
    assert slots_of("gw", gateways) == []  # a gateway serving nothing is nobody's backend


FAKE_NC = """#!/bin/sh
# haproxy's admin socket, as far as these scripts use it: answers from files in $FAKE_DIR.
read -r line
echo "$line" >> "$FAKE_DIR/log"
case "$line" in
  "set server"*) cat "$FAKE_DIR/set" 2>/dev/null;;
  "show stat")
    n=$(cat "$FAKE_DIR/count"); echo $((n + 1)) > "$FAKE_DIR/count"
    row=$(sed -n "$((n + 1))p" "$FAKE_DIR/rows"); [ -n "$row" ] || row=$(tail -n 1 "$FAKE_DIR/rows")
    scur=${row% *}; status=${row#* }
    echo "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,"
    echo "halo_fleet,other,0,0,7,0,,0,0,0,,0,,0,0,0,0,UP,"
    echo "halo_fleet,srv1,0,0,$scur,0,,0,0,0,,0,,0,0,0,0,$status,"
    ;;
esac
"""


@pytest.fixture
def haproxy(tmp_path):
    """A unix socket at a test path, a fake nc first on PATH; returns a runner for a script against them."""
    folder = tmp_path / "fake"
    folder.mkdir()
    (folder / "count").write_text("0")
    nc = folder / "nc"
    nc.write_text(FAKE_NC)
    nc.chmod(nc.stat().st_mode | stat.S_IXUSR)
    sock_path = tmp_path / "admin.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))

    def run(script: str, rows: list[str], answer: str = "", with_socket: bool = True):
        (folder / "rows").write_text("\n".join(rows) + "\n")
        (folder / "set").write_text(answer)
        (folder / "log").write_text("")
        text = script.replace(STATS_SOCKET, str(sock_path) if with_socket else str(tmp_path / "absent.sock"))
        proc = subprocess.run(["sh", "-c", text], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PATH": f"{folder}:{os.environ['PATH']}", "FAKE_DIR": str(folder)})
        return proc, (folder / "log").read_text().splitlines()

    yield run
    server.close()


SLOT = Slot("gw", "halo_fleet", "srv1", drain_s=5, up_s=5)


def test_drain_waits_for_the_requests_in_flight(haproxy):
    proc, asked = haproxy(drain_script(SLOT), ["2 UP", "1 UP", "0 UP"])
    assert proc.returncode == 0, proc.stderr
    assert asked[0] == "set server halo_fleet/srv1 state drain"
    assert asked[1:] == ["show stat"] * 3  # read until srv1 (not 'other', which has 7) had none in flight


def test_drain_gives_up_after_its_bound_and_says_so(haproxy):
    proc, _ = haproxy(drain_script(Slot("gw", "halo_fleet", "srv1", drain_s=1, up_s=5)), ["3 UP"])
    assert proc.returncode == 1
    assert "halo_fleet/srv1 still has 3 request(s) in flight after 1 s of draining" in proc.stderr


def test_ready_waits_until_haproxy_sees_it_up(haproxy):
    proc, asked = haproxy(ready_script(SLOT), ["0 DOWN", "0 DOWN 1/2", "0 UP"])
    assert proc.returncode == 0, proc.stderr
    assert asked == ["set server halo_fleet/srv1 state ready"] + ["show stat"] * 3


def test_ready_fails_when_it_never_comes_up(haproxy):
    proc, _ = haproxy(ready_script(Slot("gw", "halo_fleet", "srv1", drain_s=5, up_s=1)), ["0 DOWN"])
    assert proc.returncode == 1 and "is not UP in haproxy 1 s after its restart (DOWN)" in proc.stderr


def test_an_unknown_server_or_no_haproxy_is_nothing_to_drain(haproxy):
    proc, asked = haproxy(drain_script(SLOT), ["5 UP"], answer="No such server.\n")
    assert proc.returncode == 0 and asked == ["set server halo_fleet/srv1 state drain"]
    proc, asked = haproxy(drain_script(SLOT), ["5 UP"], with_socket=False)
    assert proc.returncode == 0 and asked == []


def test_haproxy_refusing_the_state_is_a_failure(haproxy):
    proc, _ = haproxy(drain_script(SLOT), ["0 UP"], answer="Permission denied\n")
    assert proc.returncode == 1 and "haproxy refused 'state drain': Permission denied" in proc.stderr


def hosts(restart_ok: bool = True) -> dict:
    failing = {} if restart_ok else {"fake_responses": {"systemctl restart halo-serve.service": {
        "success": False, "stderr": "halofleet: no completion"}}}
    return {"gw": (GATEWAY, probe_output()),
            "a": ({**SERVES, "halo_bind": "10.0.0.2", **failing}, probe_output()),
            "b": ({**SERVES, "halo_bind": "10.0.0.3", **failing}, probe_output())}


def gateway_steps(run) -> list[tuple[str, str]]:
    steps = []
    for command in run.commands["gw"]:
        for state in ("drain", "ready"):
            for server in ("_fake_a", "_fake_b"):
                if f"set server halo_fleet/{server} state {state}" in command:
                    steps.append((state, server))
    return steps


def test_each_engine_is_drained_before_its_restart_and_put_back_after():
    run = run_fake("deploys/serve.py", hosts())
    assert run.errors == [] and run.failed_hosts == set()
    steps = gateway_steps(run)
    assert sorted(steps) == [("drain", "_fake_a"), ("drain", "_fake_b"), ("ready", "_fake_a"), ("ready", "_fake_b")]
    first = steps[0][1]  # one host at a time: the first is back before the other is drained
    assert steps[:2] == [("drain", first), ("ready", first)]


def test_a_failed_restart_leaves_its_backend_drained_and_stops_the_rollout():
    run = run_fake("deploys/serve.py", hosts(restart_ok=False))
    assert gateway_steps(run) in ([("drain", "_fake_a")], [("drain", "_fake_b")])
    assert {"a", "b"} <= run.failed_hosts


def test_the_review_shows_the_restart_and_the_drain(tmp_path):
    from halofleet.views.review import review

    from .test_review import write_inventory

    inventory = write_inventory(tmp_path, {name: (data, probe) for name, (data, probe) in hosts().items()})
    reviews = {item.host: item for item in review(inventory, "deploys/serve.py")}
    (restart,) = [change for change in reviews["@fake/a"].operations if "serving on" in change.name]
    text = "\n".join(restart.commands)
    assert "# drained at gateway @fake/gw (halo_fleet/_fake_a) first, put back once haproxy sees it UP" in text
    assert "systemctl restart halo-serve.service" in text and "/v1/completions" in text
    assert KEY not in text
