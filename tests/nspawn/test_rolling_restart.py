"""
Rolling engine restarts on real hosts: two serving containers with halo_restart_batch 1 get a flag change; a
poller on the controller side (inside the test's namespace) records both engines' /health the whole time, and
they were never down together. The same change with a batch of two restarts both at once (the oracle can fail).
"""

from __future__ import annotations

import json
import sys
import time

import pytest

from halofleet.testing.tinymodel import write_tiny_llama

from .conftest import HEALTH_POLLER as POLLER
from .conftest import TIER_DATA

pytestmark = pytest.mark.nspawn

def record(network, tmp_path, boxes, name: str):
    """Start the poller; returns a function that stops it and gives the rounds [(t, up1, up2), ...]."""
    out = tmp_path / f"{name}.jsonl"
    process = network.popen([sys.executable, "-c", POLLER, str(out)] + [f"http://{box.address}:8080"
                                                                       for box in boxes])
    deadline = time.monotonic() + 20
    while not (out.exists() and out.read_text().count("\n") >= 5):
        assert time.monotonic() < deadline, "the poller did not start"
        time.sleep(0.1)

    def stop():
        time.sleep(1)
        process.terminate()
        process.wait(timeout=10)
        return [json.loads(line) for line in out.read_text().splitlines() if line.endswith("]")]
    return stop


def test_engines_restart_one_at_a_time_and_never_both_down(network, tmp_path):
    model = write_tiny_llama(tmp_path / "tiny.gguf")
    srv1, srv2 = network.boot(["srv1", "srv2"])
    base = {**TIER_DATA, "halo_model": str(model), "halo_model_push": True, "halo_ctx": 512,
            "halo_api_key": "rolling-test-key-0123"}

    def describe(**extra):
        data = {box.name: {**base, "halo_bind": box.address, **extra} for box in (srv1, srv2)}
        return network.write_inventory(tmp_path / "hosts.json", host_data=data)

    first = network.run_pyinfra(describe(halo_restart_batch=1), "deploys/full.py")
    assert first.returncode == 0, first.stderr[-3000:]

    # A flag change with halo_restart_batch 1: one engine at a time.
    stop = record(network, tmp_path, (srv1, srv2), "rolling")
    rolling = network.run_pyinfra(describe(halo_restart_batch=1, halo_ctx=640), "deploys/full.py")
    rounds = stop()
    assert rolling.returncode == 0, rolling.stderr[-3000:]
    assert sum("llama-server serving on" in name for name in rolling.changed_names) == 1  # one op, both hosts
    for box in (srv1, srv2):
        assert "-c 640" in box.ssh("systemctl show -p ExecStart --value halo-serve.service").stdout
    down = {index: [t for t, *ups in rounds if ups[index] is False] for index in (0, 1)}
    assert down[0] and down[1], "each engine was restarted, so each was seen down for a moment"
    both = [t for t, up1, up2 in rounds if up1 is False and up2 is False]
    assert both == [], f"both engines down at {both[:5]}"
    # One after the other: srv-a's outage ended before srv-b's began (in whichever order pyinfra ran them).
    first_out, second_out = sorted((down[0], down[1]), key=min)
    assert max(first_out) < min(second_out)
    assert rounds[-1][1:] == [True, True]  # both answer after the run
    print(f"rolling: {len(rounds)} rounds over {rounds[-1][0] - rounds[0][0]:.1f} s; down {len(down[0])} and "
          f"{len(down[1])} rounds; run {rolling.seconds:.1f} s")

    again = network.run_pyinfra(describe(halo_restart_batch=1, halo_ctx=640), "deploys/full.py")
    assert again.returncode == 0 and again.changed_ops == []

    # The control: the same kind of change with a batch of two restarts both together.
    stop = record(network, tmp_path, (srv1, srv2), "together")
    together = network.run_pyinfra(describe(halo_restart_batch=2, halo_ctx=768), "deploys/full.py")
    rounds = stop()
    assert together.returncode == 0, together.stderr[-3000:]
    overlap = [t for t, up1, up2 in rounds if up1 is False and up2 is False]
    print(f"all at once: both down for {len(overlap)} rounds")
    assert overlap, "restarting both at once must show both down at some point (else this oracle is blind)"
