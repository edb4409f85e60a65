"""
The front door (halo_gateway): its keys through the contract, the haproxy configuration it renders, its
refusals, and the stage through pyinfra's @fake connector (the gateway host alone gets haproxy).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from halofleet.contract.config import ConfigError, HostRefused
from halofleet.facts.gateway import parse_gateway_state
from halofleet.fleet.gateway import gateway_cell, parse_show_stat, plan_gateway, read_cert
from halofleet.models.specs import validate
from halofleet.testing.fake import probe_output, run_fake

KEY = "k" * 24
GATEWAY = {"halo_gateway": True, "halo_gateway_bind": "10.9.0.1", "halo_serve": "none"}
SERVING = {"halo_bind": "10.9.0.2", "halo_api_key": KEY, "halo_model": "/srv/m.gguf"}
CERT = ("-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
        "-----BEGIN PRIVATE KEY-----\nMIIEfake\n-----END PRIVATE KEY-----\n")


def gateway_config(**data):
    return validate("gw", {**GATEWAY, **data}, serving=False)


def plan(groups, cert_text=None, **data):
    return plan_gateway(gateway_config(**data), groups, cert_text=cert_text)


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def section(text: str, header: str) -> list[str]:
    """The lines of one haproxy section (``backend halo_x``), read off the text independently of the template."""
    out, inside = [], False
    for line in lines(text):
        if re.match(r"(global|defaults|frontend|backend)\b", line):
            inside = line == header
            continue
        if inside:
            out.append(line)
    return out


# -- the contract -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("data, refusal", [
    ({"halo_gateway_bind": None}, "halo_gateway_bind=None is invalid: a gateway needs an explicit listener"),
    ({"halo_gateway_bind": "0.0.0.0 ; rm"}, "must be an IP address"),
    ({"halo_gateway_port": 0}, "must be between 1 and 65535"),
    ({"halo_gateway_balance": "random"}, "must be one of leastconn, roundrobin"),
    ({"halo_gateway_groups": []}, "must be a non-empty list of names"),
    ({"halo_gateway_groups": "llama"}, "must be a non-empty list of names"),
    ({"halo_gateway_groups": ["a b"]}, "'a b' is not one"),
    ({"halo_gateway_groups": ["a", "a"]}, "must name each group once"),
    ({"halo_gateway_models": {"m": "g"}}, "routing by model needs halo_gateway_groups"),
    ({"halo_gateway_groups": ["g"], "halo_gateway_models": {"m": "other"}}, "maps models to other"),
    ({"halo_gateway_groups": ["g"], "halo_gateway_models": ["m"]}, "must be a non-empty mapping"),
    ({"halo_gateway_groups": ["g"], "halo_gateway_models": {"m x": "g"}}, "'m x' is not one"),
    ({"halo_gateway_groups": ["g"], "halo_gateway_models": {"m": 3}}, "must be a non-empty mapping"),
    ({"halo_gateway_fall": 0}, "must be between 1 and 100"),
    ({"halo_gateway_max_body_kib": 8}, "must be between 16 and 65536"),
    ({"halo_restart_batch": 0}, "must be between 1 and 10000"),
])
def test_gateway_keys_are_validated_by_the_contract(data, refusal):
    with pytest.raises(ConfigError) as error:
        gateway_config(**data)
    assert refusal in str(error.value)


@pytest.mark.parametrize("model", ["x'y", 'a"b', "a#b", "${HOME}", "a{b}", "a\\b", "-dash", "\u00e9", "a\nb", ""])
def test_model_names_that_would_change_haproxy_config_are_refused(model):
    with pytest.raises(ConfigError, match="halo_gateway_models"):
        gateway_config(halo_gateway_groups=["g"], halo_gateway_models={model: "g"})


def test_a_host_that_is_not_a_gateway_may_leave_the_gateway_keys_alone():
    assert validate("h", {"halo_serve": "none"}).gateway is False


# -- backends and refusals --------------------------------------------------------------------------------------

def test_one_group_renders_one_backend_with_health_checks_and_no_body_buffering():
    result = plan({"fleet": [("a", SERVING), ("b", {**SERVING, "halo_bind": "10.9.0.3", "halo_port": 9000})]})
    backend = section(result.config, "backend halo_fleet")
    assert "server a 10.9.0.2:8080 check" in backend and "server b 10.9.0.3:9000 check" in backend
    assert "balance leastconn" in backend and "http-check send meth GET uri /health" in backend
    assert "http-check expect status 200" in backend and "default-server inter 2s fall 3 rise 2" in backend
    frontend = section(result.config, "frontend halo_gateway")
    assert frontend == ["bind 10.9.0.1:8080", "default_backend halo_fleet"]
    assert "tune.bufsize" not in result.config and result.url == "http://10.9.0.1:8080"


def test_check_timing_and_balance_come_from_the_keys():
    result = plan({"fleet": [("a", SERVING)]}, halo_gateway_balance="roundrobin", halo_gateway_check_inter_s=5,
                  halo_gateway_fall=2, halo_gateway_rise=4, halo_gateway_timeout_s=1200, halo_gateway_port=443)
    backend = section(result.config, "backend halo_fleet")
    assert "balance roundrobin" in backend and "default-server inter 5s fall 2 rise 4" in backend
    assert "timeout server 1200s" in section(result.config, "defaults")
    assert "bind 10.9.0.1:443" in section(result.config, "frontend halo_gateway")


def test_no_header_is_captured_and_the_log_has_no_query_string():
    text = plan({"fleet": [("a", SERVING)]}).config
    settings = "\n".join(lines(text))
    assert "capture" not in settings and "httplog" not in settings
    log_format = next(line for line in lines(text) if line.startswith("log-format"))
    variables = set(re.findall(r"%(?:\{[^}]*\})?([A-Za-z]+)", log_format))
    # request line, URI and query string, captured headers and cookies: none of them is logged
    assert "HPO" in variables and not variables & {"r", "HU", "HQ", "hr", "hrl", "hs", "hsl", "CC", "CS"}


def test_routing_by_model_buffers_the_body_and_answers_unknown_models_with_json():
    groups = {"small": [("a", SERVING), ("b", {**SERVING, "halo_bind": "10.9.0.3"})],
              "big": [("c", {**SERVING, "halo_bind": "fd00::5", "halo_port": 9000})]}
    result = plan(groups, halo_gateway_groups=["small", "big"],
                  halo_gateway_models={"tiny": "small", "qwen3:8b": "small", "glm-4.6": "big"})
    frontend = section(result.config, "frontend halo_gateway")
    assert "option http-buffer-request" in frontend
    assert "use_backend halo_small if { var(txn.model) -m str qwen3:8b tiny }" in frontend
    assert "use_backend halo_big if { var(txn.model) -m str glm-4.6 }" in frontend
    assert frontend[-1] == "default_backend halo_small"  # the first group answers GET /v1/models and /health
    not_found = next(line for line in frontend if "status 404" in line)
    assert "content-type application/json" in not_found and '"code":"model_not_found"' in not_found
    assert any("status 413" in line and "req.body_size gt 1048576" in line for line in frontend)
    assert "tune.bufsize 1114112" in section(result.config, "global")
    assert "server c [fd00::5]:9000 check" in section(result.config, "backend halo_big")


def test_several_groups_need_routes():
    with pytest.raises(ConfigError, match="several groups .* need routing by model name"):
        plan({"a": [("a", SERVING)], "b": [("b", SERVING)]}, halo_gateway_groups=["a", "b"])


def test_a_loopback_backend_is_refused_with_the_reason():
    with pytest.raises(HostRefused) as error:
        plan({"fleet": [("a", SERVING), ("b", {**SERVING, "halo_bind": "127.0.0.1"})]})
    assert "backend b listens on 127.0.0.1 (halo_bind), loopback: the gateway cannot reach it" in str(error.value)


def test_a_backend_listening_everywhere_is_reached_on_its_inventory_address():
    result = plan({"fleet": [("a", {**SERVING, "halo_bind": "0.0.0.0", "ssh_hostname": "10.9.0.7"})]})
    assert "server a 10.9.0.7:8080 check" in section(result.config, "backend halo_fleet")
    with pytest.raises(HostRefused, match="'box.lan' is not an IP address"):
        plan({"fleet": [("a", {**SERVING, "halo_bind": "0.0.0.0", "ssh_hostname": "box.lan"})]})


def test_bad_backend_data_refuses_the_gateway_naming_the_backend():
    with pytest.raises(HostRefused) as error:
        plan({"fleet": [("a", {**SERVING, "halo_port": "80; reboot"})]})
    assert str(error.value).startswith("host 'gw': backend a: host 'a': halo_port=") and "whole number" in str(
        error.value)


def test_non_serving_hosts_and_the_gateway_itself_are_not_backends():
    result = plan({"fleet": [("gw", {**GATEWAY, **SERVING}), ("x", {"halo_serve": "none"}), ("a", SERVING)]})
    assert [backend.host for backend in result.groups["fleet"]] == ["a"]
    with pytest.raises(HostRefused, match="group 'fleet' has no serving host"):
        plan({"fleet": [("x", {"halo_serve": "none"})]})


def test_a_group_whose_hosts_disagree_on_the_key_is_refused_without_showing_it():
    with pytest.raises(HostRefused) as error:
        plan({"fleet": [("a", SERVING), ("b", {**SERVING, "halo_api_key": "z" * 24})]})
    assert "do not share one halo_api_key" in str(error.value) and KEY not in str(error.value)


def test_an_open_gateway_in_front_of_unkeyed_engines_needs_consent():
    open_backend = {"halo_bind": "10.9.0.2", "halo_allow_unauthenticated": True, "halo_model": "/m.gguf"}
    with pytest.raises(ConfigError, match="without an API key \\(a\\) serves anyone"):
        plan({"fleet": [("a", open_backend)]})
    allowed = plan({"fleet": [("a", open_backend)]}, halo_allow_unauthenticated=True)
    assert any("anyone who reaches it is served" in warning for warning in allowed.warnings)
    # On loopback the gateway is this host's business only.
    assert plan({"fleet": [("a", open_backend)]}, halo_gateway_bind="127.0.0.1").warnings == []


def test_tls_binds_with_the_pushed_certificate():
    result = plan({"fleet": [("a", SERVING)]}, cert_text=CERT)
    assert "bind 10.9.0.1:8080 ssl crt /etc/haproxy/halofleet-gateway.pem" in section(result.config,
                                                                                      "frontend halo_gateway")
    assert result.url.startswith("https://") and result.cert == CERT


def test_the_certificate_file_is_checked_on_the_control_machine(tmp_path):
    good, no_key, encrypted = tmp_path / "good.pem", tmp_path / "nokey.pem", tmp_path / "enc.pem"
    good.write_text(CERT)
    no_key.write_text(CERT.split("-----BEGIN PRIVATE")[0])
    encrypted.write_text(CERT.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY"))
    assert read_cert("gw", str(good)) == CERT
    with pytest.raises(ConfigError, match="holding the certificate \\(chain\\) and its private key"):
        read_cert("gw", str(no_key))
    with pytest.raises(ConfigError, match="encrypted private key"):
        read_cert("gw", str(encrypted))
    with pytest.raises(ConfigError, match="no such file on the control machine"):
        read_cert("gw", str(tmp_path / "absent.pem"))
    with pytest.raises(ConfigError, match="is a directory on the control machine, not a regular file"):
        read_cert("gw", str(tmp_path))


@pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy is not installed here (the nspawn test checks it)")
def test_haproxy_accepts_the_rendered_configuration(tmp_path):
    groups = {"small": [("a", SERVING)], "big": [("c", {**SERVING, "halo_bind": "fd00::5"})]}
    text = plan(groups, halo_gateway_groups=["small", "big"],
                halo_gateway_models={"tiny": "small", "glm": "big"}).config
    path = tmp_path / "haproxy.cfg"
    path.write_text(text.replace("chroot /var/lib/haproxy\n", ""))
    result = subprocess.run(["haproxy", "-c", "-dW", "-f", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# -- the stats socket ----------------------------------------------------------------------------------------------

STAT_HEADER = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status"


def test_show_stat_rows_of_halofleet_backends():
    rows = parse_show_stat([
        STAT_HEADER + ",weight,check_status",
        "halo_gateway,FRONTEND,,,0,1,,3,,,,,,,,,,OPEN,,",
        "halo_fleet,a,0,0,0,1,,2,,,,,,,,,,UP,1,L7OK",
        "halo_fleet,b,0,0,0,1,,1,,,,,,,,,,DOWN,1,L4CON",
        "halo_fleet,BACKEND,0,0,0,1,,3,,,,,,,,,,UP,1,",
        "other,c,0,0,0,0,,0,,,,,,,,,,UP,1,L7OK",
        "",
    ])
    assert rows == [{"group": "fleet", "server": "a", "status": "UP", "check": "L7OK"},
                    {"group": "fleet", "server": "b", "status": "DOWN", "check": "L4CON"}]
    assert gateway_cell(rows) == "fleet/a UP, fleet/b DOWN"
    assert parse_show_stat(["garbage"]) == [] and gateway_cell(None) == "-"


def test_gateway_state_fact():
    digest = "a" * 64
    state = parse_gateway_state([f"@sha256 {digest}  /etc/haproxy/haproxy.cfg", f"@sha256 {digest}  /etc/passwd",
                                 "@active active", "@stat", STAT_HEADER, "halo_fleet,a,,,,,,,,,,,,,,,,UP"])
    assert state["files"] == {"/etc/haproxy/haproxy.cfg": digest} and state["active"] == "active"
    assert state["backends"] == [{"group": "fleet", "server": "a", "status": "UP", "check": ""}]
    assert parse_gateway_state(["@active inactive"])["backends"] is None


# -- the stage through pyinfra (@fake) ------------------------------------------------------------------------------

FLEET = {"halo_allow_non_strix_halo": True, "halo_reboot": "never", "halo_llama_backend": "cpu",
         "halo_model": "/srv/models/tiny.gguf", "halo_api_key": KEY}


def test_only_the_gateway_host_gets_haproxy_checked_before_it_is_live():
    run = run_fake("deploys/gateway.py", {
        "gw": ({**GATEWAY, "halo_gateway_groups": ["llama"]}, probe_output()),
        "a": ({**FLEET, "halo_bind": "10.9.0.2"}, probe_output()),
        "b": ({**FLEET, "halo_bind": "10.9.0.3"}, probe_output()),
    }, groups={"llama": ["a", "b"]})
    assert run.errors == [] and run.failed_hosts == set()
    assert run.changes("a") == [] and run.changes("b") == []
    commands = "\n".join(run.changes("gw"))
    assert "haproxy netcat-openbsd" in commands
    assert 'haproxy -c -dW -q -f "$HALO_CANDIDATE"' in commands
    assert "echo reload | nc -N -w 60 -U /run/haproxy-master.sock" in commands and "Success=1" in commands
    assert KEY not in commands


def test_a_gateway_with_a_loopback_backend_is_refused_alone():
    run = run_fake("deploys/gateway.py", {
        "gw": ({**GATEWAY, "halo_gateway_groups": ["llama"]}, probe_output()),
        "a": ({**FLEET, "halo_bind": "127.0.0.1"}, probe_output()),
        "other": ({**GATEWAY, "halo_gateway_bind": "127.0.0.1", "halo_gateway_groups": ["ok"]}, probe_output()),
        "c": ({**FLEET, "halo_bind": "10.9.0.4"}, probe_output()),
    }, groups={"llama": ["a"], "ok": ["c"]})
    assert run.failed_hosts == {"gw"}
    assert any("backend @fake/a listens on 127.0.0.1" in error for error in run.errors)
    assert run.changes("gw") == [] and "haproxy" in " ".join(run.changes("other"))


def test_an_unknown_group_is_refused_naming_it():
    run = run_fake("deploys/gateway.py", {"gw": ({**GATEWAY, "halo_gateway_groups": ["nope"]}, probe_output())})
    assert run.failed_hosts == {"gw"} or any("no host left" in error for error in run.errors)
    assert any("the inventory has no group 'nope'" in error for error in run.errors)


def test_the_certificate_goes_up_private_and_never_into_a_diff_or_command(tmp_path):
    pem = tmp_path / "gw.pem"
    pem.write_text(CERT)
    run = run_fake("deploys/gateway.py", {
        "gw": ({**GATEWAY, "halo_gateway_tls_cert": str(pem)}, probe_output()),
        "a": ({**FLEET, "halo_bind": "10.9.0.2"}, probe_output()),
    }, diff=True)
    assert run.errors == []
    commands = "\n".join(run.changes("gw"))
    assert "chmod 0600 /etc/haproxy/.halofleet-gateway.pem.halofleet-new" in commands
    assert "MIIEfake" not in commands


def test_the_gateway_port_must_not_be_its_own_engines():
    engine = {"halo_serve": "llama-server", "halo_model": "/m.gguf", "halo_api_key": KEY}
    with pytest.raises(ConfigError, match="this host's own engine listens on 0.0.0.0:8080"):
        plan({"fleet": [("a", SERVING)]}, **engine, halo_bind="0.0.0.0")
    # Loopback engine, gateway on the network address: both may use 8080.
    assert plan({"fleet": [("a", SERVING)]}, **engine).url == "http://10.9.0.1:8080"
