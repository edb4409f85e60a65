"""
The gateway's haproxy.cfg read back directive by directive: every backend health-checked on GET /health (a box whose
/health fails gets no traffic), which model names answer 404, 400 or 413 and which group each known name reaches
(worked out by a small reader of the frontend's rules, in haproxy's order: http-request rules, then use_backend),
and the lines that keep the API key out of logs and the stats socket root-only. haproxy itself checks the same file
in tests/nspawn/test_rendered_files.py and serves it in tests/nspawn/test_gateway.py.
"""

from __future__ import annotations

import json
import re

import pytest

from .test_mutants_gateway import KEY, SERVING, plan

TWO_GROUPS = {"a": [("s1", SERVING)], "b": [("s2", {**SERVING, "halo_bind": "10.9.0.5"})]}
ROUTES = {"m1": "a", "m2": "b", "m3": "a"}


def sections(text: str) -> dict[str, list[str]]:
    """{'global': [directives], 'frontend halo_gateway': [...], 'backend halo_a': [...]} (comments dropped)."""
    found: dict[str, list[str]] = {}
    current = None
    for raw in text.splitlines():
        if not raw.strip() or raw.strip().startswith("#"):
            continue
        if not raw[0].isspace():
            current = found.setdefault(raw.strip(), [])
        else:
            assert current is not None, raw
            current.append(raw.strip())
    return found


def _condition_block(block: str, request: dict, variables: dict) -> bool:
    if block == "method POST":
        return request["method"] == "POST"
    if block == "var(txn.model) -m found":
        return "txn.model" in variables
    match = re.fullmatch(r"var\(txn\.model\) -m str (.+)", block)
    if match:
        return variables.get("txn.model") in match.group(1).split()
    match = re.fullmatch(r"req\.body_size gt (\d+)", block)
    if match:
        return request["body_size"] > int(match.group(1))
    match = re.fullmatch(r"req\.body_size,sub\(txn\.body_len\) gt (\d+)", block)
    if match:
        return request["body_size"] - variables.get("txn.body_len", 0) > int(match.group(1))
    raise AssertionError(f"a condition this reader does not know: {block!r}")


def _condition(text: str, request: dict, variables: dict, acls: dict) -> bool:
    """haproxy's implicit AND of terms: ``{ anonymous acl }``, ``!{ ... }``, ``name``, ``!name``."""
    result = True
    for negate, block, name in re.findall(r"(!?)(?:\{ ([^}]*) \}|([a-z_]+))", text):
        value = acls[name] if name else _condition_block(block, request, variables)
        result = result and (not value if negate else value)
    return result


RETURN = re.compile(r"http-request return status (\d{3}) content-type application/json string '(.*)' if (.*)")


def route(config: str, method: str = "POST", model: str | None = None, body_size: int = 100,
          body_len: int | None = None) -> str:
    """Where haproxy sends a request: ``status 404`` (and the like) or ``backend halo_x``."""
    request = {"method": method, "model": model, "body_size": body_size,
               "body_len": body_size if body_len is None else body_len}
    frontend = sections(config)["frontend halo_gateway"]
    variables: dict = {}
    acls: dict = {}
    for directive in frontend:
        if directive.startswith("http-request set-var(txn.model) req.body,json_query('$.model') if "):
            if _condition(directive.rsplit(" if ", 1)[1], request, variables, acls) and model is not None:
                variables["txn.model"] = model
        elif directive.startswith("http-request set-var(txn.body_len) req.body_len if "):
            if _condition(directive.rsplit(" if ", 1)[1], request, variables, acls):
                variables["txn.body_len"] = request["body_len"]
        elif directive.startswith("http-request return "):
            found = RETURN.fullmatch(directive)
            assert found, f"not a JSON return this gateway writes: {directive!r}"
            status, body, condition = found.groups()
            if _condition(condition, request, variables, acls):
                error = json.loads(body)["error"]
                assert error["type"] == "invalid_request_error", error
                return f"status {status} {error['code']}: {error['message']}"
        elif directive.startswith("acl "):
            _, name, rest = directive.split(" ", 2)
            acls[name] = _condition_block(rest, request, variables)
    for directive in frontend:
        if directive.startswith("use_backend "):
            _, backend, _, condition = directive.split(" ", 3)
            if _condition(condition, request, variables, acls):
                return f"backend {backend}"
    defaults = [d.split()[1] for d in frontend if d.startswith("default_backend ")]
    assert len(defaults) == 1, frontend
    return f"backend {defaults[0]}"


def routed() -> str:
    return plan(TWO_GROUPS, halo_gateway_models=ROUTES, halo_gateway_groups=["a", "b"]).config


# -- which model names answer 404, and where the others go -------------------------------------------------------

NOT_FOUND = "status 404 model_not_found: model not served here; this gateway serves m1, m2, m3"


@pytest.mark.parametrize("model, where", [
    ("m1", "backend halo_a"), ("m3", "backend halo_a"), ("m2", "backend halo_b"),
    ("m4", NOT_FOUND), ("M1", NOT_FOUND), ("m", NOT_FOUND), ("m1 m2", NOT_FOUND), ("", NOT_FOUND),
])
def test_each_model_name_reaches_its_group_and_any_other_answers_404(model, where):
    assert route(routed(), model=model) == where


def test_a_post_without_a_model_is_400_and_a_get_goes_to_the_first_group():
    config = routed()
    assert route(config, model=None) == ('status 400 model_required: a JSON body with a "model" is needed: this '
                                         "gateway routes by model (m1, m2, m3)")
    assert route(config, method="GET") == "backend halo_a"


def test_bodies_over_the_limit_or_not_complete_in_the_buffer_are_413():
    config = plan(TWO_GROUPS, halo_gateway_models=ROUTES, halo_gateway_groups=["a", "b"],
                  halo_gateway_max_body_kib=64).config
    assert route(config, model="m2", body_size=64 * 1024) == "backend halo_b"
    assert route(config, model="m2", body_size=64 * 1024 + 1) == (
        "status 413 request_too_large: request body over 65536 bytes: the gateway cannot read its model "
        "(halo_gateway_max_body_kib)")
    assert route(config, model="m2", body_size=5000, body_len=4000) == (
        "status 413 request_too_large: request body not complete in the gateway buffer: the gateway cannot read "
        "its model (halo_gateway_max_body_kib)")
    # The whole body must fit one buffer: the limit plus 64 KiB for the headers.
    assert f"tune.bufsize {64 * 1024 + 64 * 1024}" in sections(config)["global"]


def test_the_404_and_400_bodies_name_the_models_served():
    frontend = " ".join(sections(routed())["frontend halo_gateway"])
    assert "this gateway serves m1, m2, m3" in frontend
    assert "this gateway routes by model (m1, m2, m3)" in frontend


def test_one_group_without_routes_sends_every_request_to_it():
    config = plan({"fleet": [("s1", SERVING)]}).config
    for model in ("anything", None):
        assert route(config, model=model) == "backend halo_fleet"
    frontend = sections(config)["frontend halo_gateway"]
    assert not [d for d in frontend if d.startswith(("http-request", "acl", "use_backend", "option"))]
    assert "tune.bufsize" not in config


# -- the health check --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("data, timing", [({}, "inter 2s fall 3 rise 2"),
                                          ({"halo_gateway_check_inter_s": 7, "halo_gateway_fall": 5,
                                            "halo_gateway_rise": 4}, "inter 7s fall 5 rise 4")])
def test_every_backend_checks_get_health_and_wants_200(data, timing):
    found = sections(plan(TWO_GROUPS, halo_gateway_models=ROUTES, halo_gateway_groups=["a", "b"], **data).config)
    for name, servers in (("backend halo_a", ["server s1 10.9.0.2:8080 check"]),
                          ("backend halo_b", ["server s2 10.9.0.5:8080 check"])):
        backend = found[name]
        assert backend[:5] == ["balance leastconn", "option httpchk", "http-check send meth GET uri /health",
                               "http-check expect status 200", f"default-server {timing}"], backend
        assert [d for d in backend if d.startswith("server ")] == servers
        assert len(backend) == 5 + len(servers)


def test_balance_follows_the_host_data():
    config = plan({"fleet": [("s1", SERVING)]}, halo_gateway_balance="roundrobin").config
    backend = sections(config)["backend halo_fleet"]
    assert backend[0] == "balance roundrobin"


# -- what keeps secrets out of logs and the socket root-only -----------------------------------------------------

def test_global_and_defaults_line_by_line():
    found = sections(plan({"fleet": [("s1", SERVING)]}, halo_gateway_timeout_s=300).config)
    assert found["global"] == [
        "log /dev/log local0", "chroot /var/lib/haproxy", "stats socket /run/haproxy/admin.sock mode 600 level admin",
        "stats timeout 30s", "user haproxy", "group haproxy", "daemon"]
    defaults = found["defaults"]
    assert defaults == [
        "log global", "mode http", "option dontlognull", defaults[3], "timeout connect 5s",
        "timeout http-request 30s", "timeout client 300s", "timeout server 300s", "retries 1", "option redispatch"]
    log_format = defaults[3]
    assert log_format.startswith('log-format "') and "%HPO" in log_format
    # No request line (%r), URI with query (%HU, %HQ) or captured headers (%hr, %hrl): a key in a header or
    # query string never reaches the log.
    for field in ("%r", "%HU", "%HQ", "%hr", "%hrl", "%hs", "%hsl", "%{+Q}r"):
        assert field + " " not in log_format + " " and field + '"' not in log_format, field
    assert not [d for d in found["frontend halo_gateway"] if "capture" in d]


def test_tls_binds_with_the_certificate_and_a_floor_of_tls_1_2(tmp_path):
    from halofleet.contract.paths import GATEWAY_CERT

    cert = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\ny\n" \
           "-----END PRIVATE KEY-----\n"
    gateway = plan({"fleet": [("s1", SERVING)]}, cert_text=cert)
    found = sections(gateway.config)
    assert "ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets" in found["global"]
    assert found["frontend halo_gateway"][0] == f"bind 10.9.0.1:8080 ssl crt {GATEWAY_CERT}"
    assert gateway.url == "https://10.9.0.1:8080" and KEY not in gateway.config
    plain = sections(plan({"fleet": [("s1", SERVING)]}).config)
    assert plain["frontend halo_gateway"][0] == "bind 10.9.0.1:8080"
    assert not [d for d in plain["global"] if "ssl" in d]
