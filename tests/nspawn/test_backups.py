"""
Backups that cannot collide (issue 21), on real hosts: a gateway host whose haproxy already ran with the user's own
haproxy.cfg, and a serving host with a unit file of the user's at halofleet's unit path. After deploys (two, the
second changing the gateway) and a rollback, both files are the user's again byte for byte (sha256), with their mode
and owner; the user's haproxy answers again; /etc/halofleet is gone; a second rollback changes nothing.
"""

from __future__ import annotations

import pytest

from halofleet.testing.tinymodel import write_tiny_llama

from .conftest import TIER_DATA

pytestmark = pytest.mark.nspawn

USERS_HAPROXY = """# the user's own haproxy, before halofleet
global
    log /dev/log local0
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend users_own
    bind 127.0.0.1:9999
    http-request return status 200 content-type text/plain string users-own
"""
USERS_UNIT = """[Unit]
Description=the user's own unit at halofleet's path
[Service]
ExecStart=/bin/true
"""
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
SERVE_UNIT = "/etc/systemd/system/halo-serve.service"


def identity(box, path: str) -> str:
    """sha256, mode and owner: what must come back exactly."""
    return box.ssh(f"echo $(sha256sum < {path}) $(stat -c '%a %U:%G' {path})").stdout.strip()


def test_rollback_restores_the_users_own_files_exactly(network, tmp_path):
    model = write_tiny_llama(tmp_path / "tiny.gguf")
    gw, srv1 = network.boot(["gw", "srv1"])
    # The user's haproxy, running with their own configuration (mode 0640, owned by daemon:adm).
    gw.ssh("DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy >/dev/null 2>&1")
    gw.ssh(f"cat > {HAPROXY_CFG} <<'EOF'\n{USERS_HAPROXY}EOF\n"
           f"chown daemon:adm {HAPROXY_CFG} && chmod 0640 {HAPROXY_CFG} && systemctl restart haproxy.service")
    assert gw.ssh("curl -s -m 5 http://127.0.0.1:9999/").stdout == "users-own"
    srv1.ssh(f"cat > {SERVE_UNIT} <<'EOF'\n{USERS_UNIT}EOF\nchown daemon:adm {SERVE_UNIT} && chmod 0600 {SERVE_UNIT}")
    before = {"gw": identity(gw, HAPROXY_CFG), "srv1": identity(srv1, SERVE_UNIT)}
    assert before["gw"].endswith(" 640 daemon:adm") and before["srv1"].endswith(" 600 daemon:adm")

    def describe(check_inter: int):
        return network.write_inventory(tmp_path / "hosts.json", host_data={
            "gw": {**TIER_DATA, "halo_serve": "none", "halo_gateway": True, "halo_gateway_bind": gw.address,
                   "halo_gateway_check_inter_s": check_inter, "halo_reboot": "never"},
            "srv1": {**TIER_DATA, "halo_model": str(model), "halo_model_push": True, "halo_ctx": 512,
                     "halo_bind": srv1.address, "halo_api_key": "backups-test-key-01", "halo_reboot": "never"},
        })

    first = network.run_pyinfra(describe(1), "deploys/full.py")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Managed by halofleet" in gw.ssh(f"head -n 1 {HAPROXY_CFG}").stdout
    # A second change of the gateway: halofleet's own content replaces its own; the user's original stays put.
    second = network.run_pyinfra(describe(2), "deploys/full.py")
    assert second.returncode == 0, second.stderr[-3000:]
    assert identity(gw, "/var/backups/halofleet/original/etc__haproxy__haproxy.cfg") == before["gw"]
    assert identity(srv1, "/var/backups/halofleet/original/etc__systemd__system__halo-serve.service") == \
        before["srv1"]
    assert gw.ssh("ls /var/backups/halofleet/generations/ | grep -c '^etc__haproxy__haproxy.cfg[.]'").stdout.strip() \
        == "2"  # the user's file, then halofleet's first one: each replaced version kept

    undone = network.run_pyinfra(describe(2), "deploys/rollback.py")
    assert undone.returncode == 0, undone.stderr[-3000:]
    assert identity(gw, HAPROXY_CFG) == before["gw"]
    assert identity(srv1, SERVE_UNIT) == before["srv1"]
    # The oracle is the user's haproxy itself: running again with their configuration.
    assert gw.ssh("curl -s -m 5 http://127.0.0.1:9999/").stdout == "users-own"
    for box in (gw, srv1):
        assert box.ssh("test -e /etc/halofleet", check=False).returncode == 1, box.name
    # The service account halofleet created is gone, with its home.
    assert srv1.ssh("id halo", check=False).returncode != 0
    assert srv1.ssh("test -e /var/lib/halo", check=False).returncode == 1
    again = network.run_pyinfra(describe(2), "deploys/rollback.py")
    assert again.returncode == 0 and again.changed_ops == [], (again.changed_ops, again.stderr[-3000:])
    assert identity(gw, HAPROXY_CFG) == before["gw"] and identity(srv1, SERVE_UNIT) == before["srv1"]
