"""
A rolling change through the gateway drops no request: three serving containers behind a gateway container, a
bounded client sending completions through the gateway the whole time (from the test's namespace), while a flag
changes on every engine and then while ``halofleet bench`` runs on the fleet. Each engine is drained in haproxy
before it stops and put back once haproxy sees it UP, one host at a time (halo_restart_batch's default): the
client sees 0 failed requests, and a poller of the engines' own /health never sees more than one engine down.
The control, every engine restarted at once outside halofleet, shows failed requests and several engines down at
once (the oracles can fail).
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from halofleet.testing.runs import ROOT
from halofleet.testing.tinymodel import write_tiny_llama

from .conftest import HEALTH_POLLER as POLLER
from .conftest import TIER_DATA

pytestmark = pytest.mark.nspawn

KEY = "gateway-rolling-key-0123"

# Bounded client: sequential completions through the gateway until the stop file exists (or 600 s pass), one
# JSON line per request: [start time, HTTP status or the exception's name]. A request is never cut short here.
CLIENT = """
import json, os, sys, time, urllib.error, urllib.request
out, url, key, stop = sys.argv[1:5]
deadline = time.time() + 600
body = json.dumps({"model": "tiny", "prompt": "Hello", "max_tokens": 4}).encode()
with open(out, "w") as handle:
    while not os.path.exists(stop) and time.time() < deadline:
        started = time.time()
        request = urllib.request.Request(url + "/v1/completions", data=body, headers={
            "Authorization": "Bearer " + key, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                result = response.status if b'"choices"' in response.read() else "no choices"
        except urllib.error.HTTPError as error:
            result = error.code
        except Exception as error:
            result = type(error).__name__
        handle.write(json.dumps([started, result]) + "\\n")
        handle.flush()
"""

def wait_lines(path, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().count("\n") >= count):
        assert time.monotonic() < deadline, f"{path.name}: fewer than {count} lines after {timeout} s"
        time.sleep(0.1)


def watch(network, tmp_path, gateway, engines, name: str):
    """Start the client and the poller; returns a function that stops both and gives (requests, rounds)."""
    requests, rounds, stop_file = (tmp_path / f"{name}-requests.jsonl", tmp_path / f"{name}-rounds.jsonl",
                                   tmp_path / f"{name}.stop")
    client = network.popen([sys.executable, "-c", CLIENT, str(requests), f"http://{gateway.address}:8080", KEY,
                            str(stop_file)])
    poller = network.popen([sys.executable, "-c", POLLER, str(rounds)]
                           + [f"http://{box.address}:8080" for box in engines])
    wait_lines(requests, 3)
    wait_lines(rounds, 5)

    def stop():
        time.sleep(1)
        stop_file.touch()
        client.wait(timeout=120)
        poller.terminate()
        poller.wait(timeout=10)
        return ([json.loads(line) for line in requests.read_text().splitlines() if line.endswith("]")],
                [json.loads(line) for line in rounds.read_text().splitlines() if line.endswith("]")])
    return stop


def judge(requests, rounds, what: str) -> list[int]:
    failed = [result for result in requests if result[1] != 200]
    most_down = max(sum(up is False for up in ups) for _, *ups in rounds)
    down = [sum(ups[index] is False for _, *ups in rounds) for index in range(len(rounds[0]) - 1)]
    print(f"{what}: {len(requests)} requests through the gateway, {len(failed)} failed; {len(rounds)} health "
          f"rounds, at most {most_down} engine(s) down at once; rounds down per engine {down}")
    assert failed == [], f"{what}: failed requests {failed[:5]}"
    assert most_down <= 1, f"{what}: {most_down} engines down at once"
    return down


def test_a_rolling_restart_and_a_bench_through_the_gateway_drop_no_request(network, tmp_path):
    model = write_tiny_llama(tmp_path / "tiny.gguf")
    gw, *engines = network.boot(["gw", "srv1", "srv2", "srv3"])
    serving = {**TIER_DATA, "halo_model": str(model), "halo_model_push": True, "halo_ctx": 512,
               "halo_api_key": KEY, "halo_bench_repetitions": 1}
    gateway = {**TIER_DATA, "halo_serve": "none", "halo_gateway": True, "halo_gateway_bind": gw.address,
               "halo_gateway_check_inter_s": 1, "halo_gateway_fall": 2, "halo_gateway_rise": 2}

    def describe(**extra):
        data = {"gw": gateway, **{box.name: {**serving, "halo_bind": box.address, **extra} for box in engines}}
        return network.write_inventory(tmp_path / "hosts.json", host_data=data)

    first = network.run_pyinfra(describe(), "deploys/full.py")
    assert first.returncode == 0, first.stderr[-3000:]

    # A flag changes on every engine: each is restarted in turn (no halo_restart_batch in the data: the default).
    stop = watch(network, tmp_path, gw, engines, "rolling")
    rolling = network.run_pyinfra(describe(halo_ctx=640), "deploys/full.py")
    requests, rounds = stop()
    assert rolling.returncode == 0, rolling.stderr[-3000:]
    for box in engines:
        assert "-c 640" in box.ssh("systemctl show -p ExecStart --value halo-serve.service").stdout
    down = judge(requests, rounds, "rolling restart")
    assert all(down), "every engine was restarted, so each was seen down for a moment (else the poller is blind)"
    during = [t for t, _ in requests if rounds[0][0] <= t <= rounds[-1][0]]
    assert len(during) >= 10, "the client kept sending during the restart"

    # halofleet bench on the fleet: llama-bench needs the engine stopped, one host at a time, drained first.
    stop = watch(network, tmp_path, gw, engines, "bench")
    bench = network.run([sys.executable, "-m", "halofleet", "bench", "inventories/vm.py"], cwd=ROOT,
                        env={**os.environ, "HALOFLEET_VM_INVENTORY": str(describe(halo_ctx=640))},
                        capture_output=True, text=True, timeout=900)
    requests, rounds = stop()
    assert bench.returncode == 0, bench.stdout + bench.stderr[-3000:]
    assert all(box.name in bench.stdout for box in engines)
    down = judge(requests, rounds, "bench")
    assert all(down), "every engine was stopped for its benchmark"

    # The control: every engine stopped at once behind halofleet's back (systemctl on each box together), started
    # again once the client has met the outage. The client must see failures then (else its 0 above proves
    # nothing), and the poller all engines down together. Stop, then start: a restart of a tiny model can be quicker
    # than the client's next request on a loaded machine, which would make the control prove nothing.
    stop = watch(network, tmp_path, gw, engines, "together")
    with ThreadPoolExecutor(len(engines)) as pool:
        list(pool.map(lambda box: box.ssh("systemctl stop halo-serve.service"), engines))
        log, deadline = tmp_path / "together-requests.jsonl", time.monotonic() + 60
        while time.monotonic() < deadline and not any(
                json.loads(line)[1] != 200 for line in log.read_text().splitlines() if line.endswith("]")):
            time.sleep(0.2)
        list(pool.map(lambda box: box.ssh("systemctl start halo-serve.service"), engines))
    requests, rounds = stop()
    failed = [result for result in requests if result[1] != 200]
    most_down = max(sum(up is False for up in ups) for _, *ups in rounds)
    print(f"all at once: {len(requests)} requests, {len(failed)} failed; at most {most_down} engines down at once")
    assert failed and most_down >= 2
