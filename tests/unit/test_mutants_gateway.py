"""
The front door at its edges (mutation-tested): every refusal and warning of the gateway plan word for word, the
haproxy server names, the stats socket line, and haproxy's ``show stat`` rows. The expected texts are written out
by hand from the rules gateway.py states; none is computed by the code under test.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from halofleet.contract.config import ConfigError, HostRefused
from halofleet.fleet.gateway import gateway_cell, inventory_groups, parse_show_stat, plan_gateway, read_cert
from halofleet.models.specs import validate

KEY = "k" * 24
GATEWAY = {"halo_gateway": True, "halo_gateway_bind": "10.9.0.1", "halo_serve": "none"}
SERVING = {"halo_bind": "10.9.0.2", "halo_api_key": KEY, "halo_model": "/srv/m.gguf"}
OPEN = {"halo_bind": "10.9.0.3", "halo_allow_unauthenticated": True, "halo_model": "/m.gguf"}


def plan(groups, cert_text=None, **data):
    return plan_gateway(validate("gw", {**GATEWAY, **data}, serving=False), groups, cert_text=cert_text)


def refused(kind, groups, **data) -> str:
    with pytest.raises(kind) as error:
        plan(groups, **data)
    return str(error.value)


def test_group_refusals_word_for_word():
    assert refused(HostRefused, {"fleet": [("x", {"halo_serve": "none"})]}) == (
        "host 'gw': group 'fleet' has no serving host (halo_serve other than none, not the gateway itself): "
        "nothing to balance")
    assert refused(HostRefused, {"fleet": [("a", SERVING), ("b", {**SERVING, "halo_api_key": "z" * 24})]}) == (
        "host 'gw': the hosts of group 'fleet' do not share one halo_api_key (or some have none): a client's key "
        "would be refused by some of them")
    assert refused(HostRefused, {"fleet": [("a/b", SERVING), ("a_b", SERVING)]}) == (
        "host 'gw': group 'fleet': two host names map to the same haproxy server name (a_b, a_b); rename one")


def test_backend_refusals_word_for_word():
    assert refused(HostRefused, {"fleet": [("b", {**SERVING, "halo_bind": "127.0.0.1"})]}) == (
        "host 'gw': backend b listens on 127.0.0.1 (halo_bind), loopback: the gateway cannot reach it there; set "
        "its halo_bind to the address of its interface on the gateway's network")
    assert refused(HostRefused, {"fleet": [("b", {**SERVING, "halo_bind": "0.0.0.0", "ssh_hostname": "box"})]}) == (
        "host 'gw': backend b listens on 0.0.0.0 (every address) and its inventory address 'box' is not an IP "
        "address; set its halo_bind to the address the gateway reaches it on")


@pytest.mark.parametrize("data, start", [
    ({**SERVING, "halo_serve": "bogus"}, "host 'gw': backend b: host 'b': halo_serve='bogus' is invalid: "),
    ({**SERVING, "halo_bind": "nowhere"}, "host 'gw': backend b: host 'b': halo_bind='nowhere' is invalid: "),
    ({**SERVING, "halo_api_key": "short"}, "host 'gw': backend b: host 'b': halo_api_key=<redacted> is invalid: "),
])
def test_a_backends_own_refusal_names_it(data, start):
    assert refused(HostRefused, {"fleet": [("b", data)]}).startswith(start)


def test_server_names_are_made_safe_and_cut_at_64():
    result = plan({"fleet": [("a/b", SERVING), ("n" * 70, SERVING)]})
    assert [backend.server for backend in result.groups["fleet"]] == ["a_b", "n" * 64]
    assert "stats socket /run/haproxy/admin.sock mode 600 level admin" in result.config


def test_the_gateway_port_refusal_word_for_word():
    engine = {"halo_serve": "llama-server", "halo_model": "/m.gguf", "halo_api_key": KEY, "halo_bind": "0.0.0.0"}
    assert refused(ConfigError, {"fleet": [("a", SERVING)]}, **engine) == (
        "host 'gw': halo_gateway_port=8080 is invalid: this host's own engine listens on 0.0.0.0:8080 (halo_bind, "
        "halo_port): choose another port for the gateway")


def test_unkeyed_engines_refusal_and_warning_word_for_word():
    groups = {"fleet": [("b", OPEN), ("a", OPEN)]}
    assert refused(ConfigError, groups) == (
        "host 'gw': halo_gateway_bind='10.9.0.1' is invalid: a gateway beyond loopback in front of engines without "
        "an API key (a, b) serves anyone who reaches it; set halo_api_key on those hosts (it is enforced there), or "
        "halo_allow_unauthenticated: true on the gateway host")
    assert plan(groups, halo_allow_unauthenticated=True, halo_gateway_port=9000).warnings == [
        "the gateway on 10.9.0.1:9000 forwards to engines without an API key (a, b): anyone who reaches it is served"]


def test_routing_refusal_and_warning_word_for_word():
    groups = {"g1": [("a", SERVING)], "g2": [("b", SERVING)]}
    assert refused(ConfigError, groups) == (
        "host 'gw': halo_gateway_models=None is invalid: several groups (g1, g2) need routing by model name: map "
        "each model name clients send to its group")
    routed = plan(groups, halo_gateway_groups=["g1", "g2"], halo_gateway_models={"m": "g1"})
    assert routed.warnings == ["group 'g2' serves no model of halo_gateway_models: no completion reaches it"]
    assert routed.routes == {"m": "g1"}
    both = plan(groups, halo_gateway_groups=["g1", "g2"], halo_gateway_models={"m": "g1", "n": "g2"})
    assert both.warnings == []


def test_an_unreadable_certificate_is_refused_naming_the_key(tmp_path):
    missing = str(tmp_path / "none.pem")
    assert refused(ConfigError, {"fleet": [("a", SERVING)]}, halo_gateway_tls_cert=missing) == (
        f"host 'gw': halo_gateway_tls_cert='{missing}' is invalid: no such file on the control machine")


def test_show_stat_rows_at_the_edges():
    assert parse_show_stat([]) == []
    assert parse_show_stat(["pxname,svname,status", "halo_g,s1,UP"]) == []
    assert parse_show_stat(["# pxname,svname,status,check_status", "halo_g,,UP,L7OK", "halo_g,s1,,",
                            ",s2,UP,L7OK"]) == [{"group": "g", "server": "s1", "status": "?", "check": ""}]


def test_gateway_cell_without_rows():
    assert (gateway_cell(None), gateway_cell([])) == ("-", "no backends")


def cert_refusal(path) -> str:
    with pytest.raises(ConfigError) as error:
        read_cert("gw", str(path))
    return str(error.value)


def test_certificate_refusals_word_for_word_and_the_final_newline(tmp_path):
    pem = tmp_path / "c.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nx\n")
    assert cert_refusal(pem) == (f"host 'gw': halo_gateway_tls_cert='{pem}' is invalid: must be a PEM file holding "
                                 "the certificate (chain) and its private key, as haproxy's 'crt' expects")
    pem.write_text("-----BEGIN CERTIFICATE-----\n-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    encrypted = (f"host 'gw': halo_gateway_tls_cert='{pem}' is invalid: holds an encrypted private key: haproxy "
                 "cannot ask for a passphrase")
    assert cert_refusal(pem) == encrypted
    pem.write_text("-----BEGIN CERTIFICATE-----\n-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n")
    assert cert_refusal(pem) == encrypted
    pem.write_text("-----BEGIN CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\nk")
    assert read_cert("gw", str(pem)) == "-----BEGIN CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\nk\n"


class Inventory:
    """A pyinfra inventory with the named groups only."""

    def __init__(self, groups):
        self.groups = groups

    def get_group(self, name, default=None):
        return self.groups.get(name, default)


def test_an_unknown_inventory_group_word_for_word():
    config = validate("gw", {**GATEWAY, "halo_gateway_groups": ["g1", "g9"]}, serving=False)
    host = SimpleNamespace(name="a", data=SimpleNamespace(dict=lambda: {"halo_bind": "10.9.0.2"}))
    with pytest.raises(ConfigError) as error:
        inventory_groups(config, Inventory({"g1": [host]}))
    assert str(error.value) == ("host 'gw': halo_gateway_groups=['g1', 'g9'] is invalid: the inventory has no group "
                                "'g9'")
