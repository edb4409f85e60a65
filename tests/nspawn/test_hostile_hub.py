"""
A hostile Hub on the test network (issue 25), for a real fleet run: its tree API redirects to another origin, whose
answer links the next page to file:///etc/passwd. The host that names it is refused in preflight with the rule, the
token never reaches the other origin, and the other host of the same run is provisioned.
"""

from __future__ import annotations

import json
import sys
import time

import pytest

from halofleet.contract.paths import MODPROBE_FILE

from .conftest import TIER_DATA

pytestmark = pytest.mark.nspawn

TOKEN = "hf_nspawn_hostile_token_456"
# Two origins on the controller's side of the network (the same address, two ports): the "Hub" redirects its tree
# to the other, which answers an empty page whose next link is a local file. Each request is logged as JSON.
SERVER = """
import json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
address, hub_port, other_port, log = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        port = self.server.server_address[1]
        with open(log, "a") as handle:
            handle.write(json.dumps({"port": port, "path": self.path,
                                     "auth": self.headers.get("Authorization")}) + "\\n")
        if port == hub_port:
            self.send_response(302)
            self.send_header("Location", f"http://{address}:{other_port}/tree")
            self.end_headers()
            return
        body = b"[]"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Link", '<file:///etc/passwd>; rel="next"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

servers = [ThreadingHTTPServer((address, port), Handler) for port in (hub_port, other_port)]
threading.Thread(target=servers[1].serve_forever, daemon=True).start()
servers[0].serve_forever()
"""


def test_a_hostile_hub_refuses_its_host_alone_and_never_gets_the_token_elsewhere(network, tmp_path):
    log = tmp_path / "requests.log"
    hub_port, other_port = 8010, 8011
    network.popen([sys.executable, "-c", SERVER, network.gateway, str(hub_port), str(other_port), str(log)])
    bad, good = network.boot(["bad", "good"])
    hub = f"http://{network.gateway}:{hub_port}"
    data = {
        "bad": {**TIER_DATA, "halo_models": [{"name": "m", "hf": "acme/evil", "include": "*.gguf"}],
                "halo_hf_endpoint": hub, "halo_hf_token": TOKEN},
        "good": {**TIER_DATA, "halo_serve": "none"},
    }
    inventory = network.write_inventory(tmp_path / "hosts.json", host_data=data)
    probe = f"import socket; socket.create_connection(({network.gateway!r}, {hub_port}), 1).close()"
    for _ in range(50):  # the server is up before the run asks it
        if network.run([sys.executable, "-c", probe], capture_output=True).returncode == 0:
            break
        time.sleep(0.1)

    run = network.run_pyinfra(inventory, "deploys/full.py")
    assert run.returncode != 0  # one host failed
    refusal = run.summary_line("bad")
    assert refusal.split()[1] == "failed", refusal
    assert "file:///etc/passwd is not an http(s) URL: only http and https are followed" in refusal
    assert "root:x:0:0" not in run.stderr and TOKEN not in run.stderr
    # The other host of the same run was provisioned, and the refused one got nothing.
    assert run.summary_line("good").split()[1] == "changed", run.summary_line("good")
    assert good.ssh(f"test -f {MODPROBE_FILE}", check=False).returncode == 0
    assert bad.ssh(f"test -e {MODPROBE_FILE}", check=False).returncode != 0
    # The token went to the Hub's origin only: not along its redirect to the other port.
    requests = [json.loads(line) for line in log.read_text().splitlines()]
    assert [entry["port"] for entry in requests] == [hub_port, other_port]
    assert requests[0]["auth"] == f"Bearer {TOKEN}" and requests[1]["auth"] is None
