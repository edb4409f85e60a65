"""
The front door, pure: from the gateway host's validated data and the other hosts' data (read from the pyinfra
inventory by the stage) to haproxy's configuration, or a refusal that names the host, the key and the rule.

Why haproxy: it is packaged by Debian (and every other distribution halofleet supports), established, and does
what the front door needs itself: active health checks with rise/fall, balancing, TLS, routing on a request's
JSON field (``json_query``) and a local stats socket. LiteLLM is on PyPI only (its 1.82.7 and 1.82.8 releases
were malicious) and llama-swap is not packaged: both would put an unvetted download in front of the fleet.
"""

from __future__ import annotations

import csv
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..contract import localfiles
from ..contract.config import NO_ENDPOINT, ConfigError, HaloConfig, HostRefused, option_value
from ..contract.paths import GATEWAY_CERT
from ..contract.templating import render

STATS_SOCKET = "/run/haproxy/admin.sock"  # Debian's path; root only (mode 600)
DEFAULT_GROUP = "fleet"  # the one backend when halo_gateway_groups is unset
SERVER_NAME = re.compile(r"[^A-Za-z0-9_.:-]")
PEM_CERT = "-----BEGIN CERTIFICATE-----"
PEM_KEY = re.compile(r"-----BEGIN (?:RSA |EC |ENCRYPTED )?PRIVATE KEY-----")
# Headers and haproxy's rewrite reserve share the buffer with the body (tune.maxrewrite is at most 1024 bytes).
BUFFER_HEADROOM = 64 * 1024
METRICS_PORT = 8405  # haproxy's Prometheus exporter frontend (the port haproxy's own documentation uses)


@dataclass(frozen=True)
class Backend:
    server: str  # haproxy's server name (the inventory name, made safe)
    host: str  # the inventory name
    address: str  # haproxy's address:port text
    keyed: bool  # the engine requires an API key
    engine: str = "llama-server"
    # The model names it answers for, from its data (None: one model without a name, which llama-server answers
    # whatever name a request carries [U]).
    models: frozenset[str] | None = None


@dataclass
class GatewayPlan:
    config: str  # haproxy.cfg
    cert: str | None  # PEM to push, or None (plain HTTP)
    groups: dict[str, list[Backend]]  # backend group -> servers, in inventory order
    routes: dict[str, str]  # model name -> group (empty: no routing)
    url: str
    warnings: list[str] = field(default_factory=list)


def _address(ip: str, port: int) -> str:
    parsed = ipaddress.ip_address(ip)
    return f"[{parsed}]:{port}" if parsed.version == 6 else f"{parsed}:{port}"


def backend_of(gateway: str, name: str, data: dict[str, Any]) -> Backend | None:
    """
    One serving host as haproxy reaches it, through the contract (None: it serves nothing). A loopback bind is
    refused: haproxy on another host cannot reach it.
    """
    try:
        if option_value(name, "halo_serve", data.get("halo_serve")) in NO_ENDPOINT:
            return None
        bind = option_value(name, "halo_bind", data.get("halo_bind"))
        port = option_value(name, "halo_port", data.get("halo_port"))
        keyed = option_value(name, "halo_api_key", data.get("halo_api_key")) is not None
        engine = option_value(name, "halo_serve", data.get("halo_serve"))
        models = served_models(name, engine, data)
    except ConfigError as error:
        raise HostRefused(gateway, f"backend {name}: {error}") from None
    address = ipaddress.ip_address(bind)
    if address.is_loopback:
        raise HostRefused(
            gateway, f"backend {name} listens on {bind} (halo_bind), loopback: the gateway cannot reach it there; "
            "set its halo_bind to the address of its interface on the gateway's network",
        )
    if address.is_unspecified:
        # Listening everywhere: the gateway needs one address of it, the one the inventory connects to.
        reach = str(data.get("ssh_hostname") or name)
        try:
            address = ipaddress.ip_address(reach)
        except ValueError:
            raise HostRefused(
                gateway, f"backend {name} listens on {bind} (every address) and its inventory address {reach!r} is "
                "not an IP address; set its halo_bind to the address the gateway reaches it on",
            ) from None
    return Backend(server=SERVER_NAME.sub("_", name)[:64], host=name, address=_address(str(address), port),
                   keyed=keyed, engine=engine, models=models)


def served_models(name: str, engine: str, data: dict[str, Any]) -> frozenset[str] | None:
    """
    The names a host's engine answers for in /v1/models, from its data: the halo_models entries, else
    halo_model_alias, else vLLM's model id (its default served name); None: llama-server with one unnamed model.
    """
    entries = option_value(name, "halo_models", data.get("halo_models")) or []
    names = {entry.get("name") for entry in entries if isinstance(entry, dict)}
    if names and all(isinstance(each, str) for each in names):
        return frozenset(names)
    alias = option_value(name, "halo_model_alias", data.get("halo_model_alias"))
    if alias:
        return frozenset({alias})
    model = option_value(name, "halo_model", data.get("halo_model"))
    if engine == "vllm" and model:
        return frozenset({model})
    return None


def _what(backend: Backend) -> str:
    models = ", ".join(sorted(backend.models)) if backend.models is not None else "one unnamed model"
    return f"{backend.host}: {backend.engine} ({models})"


def check_pools(config: HaloConfig, resolved: dict[str, list[Backend]], routes: dict[str, str]) -> None:
    """
    A group balances requests over its hosts, so they must serve the same engine and models (unless the data
    says halo_gateway_mixed_pools); every routed model name must be one a host of its group serves.
    """
    for group, backends in resolved.items():
        kinds = {(backend.engine, backend.models) for backend in backends}
        if len(kinds) > 1 and not config.gateway_mixed_pools:
            raise ConfigError(
                config.host, "halo_gateway_groups", config.gateway_groups,
                f"group {group!r} pools hosts that serve different engines or models "
                f"({'; '.join(_what(backend) for backend in backends)}): a request balanced to the wrong one fails; "
                "put them in separate groups (halo_gateway_groups, halo_gateway_models), or set "
                "halo_gateway_mixed_pools: true on the gateway",
            )
    for model, group in sorted(routes.items()):
        backends = resolved.get(group, [])
        if any(backend.models is None for backend in backends):
            continue  # an unnamed single model answers any name [U]
        if not any(model in backend.models for backend in backends):
            served = sorted({name for backend in backends for name in backend.models})
            raise ConfigError(
                config.host, "halo_gateway_models", {model: group},
                f"no host of group {group!r} serves a model named {model!r} (they serve {', '.join(served)}): "
                "route the name a host serves (halo_models name, halo_model_alias)",
            )


def _key_of(name: str, data: dict[str, Any]) -> str | None:
    return option_value(name, "halo_api_key", data.get("halo_api_key"))


def plan_gateway(config: HaloConfig, groups: dict[str, list[tuple[str, dict[str, Any]]]],
                 cert_text: str | None = None, metrics_source: str | None = None) -> GatewayPlan:
    """
    ``groups``: backend group -> the (name, data) of its hosts in inventory order (the stage reads them from the
    inventory); ``cert_text``: the PEM of halo_gateway_tls_cert, read by the caller (None: read it here);
    ``metrics_source``: the monitor host's address (halo_monitor_bind): haproxy's Prometheus exporter is served to
    it alone, on :data:`METRICS_PORT` of the gateway's address (None: no exporter).
    """
    gateway = config.host
    warnings: list[str] = []
    resolved: dict[str, list[Backend]] = {}
    for group, members in groups.items():
        backends, keys = [], set()
        for name, data in members:
            if name == gateway:
                continue  # the gateway in front of itself: never a backend
            backend = backend_of(gateway, name, data)
            if backend is None:
                continue
            backends.append(backend)
            keys.add(_key_of(name, data))
        if not backends:
            raise HostRefused(gateway, f"group {group!r} has no serving host (halo_serve other than none, not the "
                                       "gateway itself): nothing to balance")
        if len(keys) > 1:
            # A client sends one key: hosts of one backend group that disagree would fail every other request.
            raise HostRefused(gateway, f"the hosts of group {group!r} do not share one halo_api_key (or some have "
                                       "none): a client's key would be refused by some of them")
        names = [backend.server for backend in backends]
        if len(set(names)) != len(names):
            raise HostRefused(gateway, f"group {group!r}: two host names map to the same haproxy server name "
                                       f"({', '.join(sorted(names))}); rename one")
        resolved[group] = backends

    bind = ipaddress.ip_address(config.gateway_bind)
    own = ipaddress.ip_address(config.bind)
    if config.serve not in NO_ENDPOINT and config.port == config.gateway_port and (
        own == bind or own.is_unspecified or bind.is_unspecified
    ):
        raise ConfigError(gateway, "halo_gateway_port", config.gateway_port,
                          f"this host's own engine listens on {config.bind}:{config.port} (halo_bind, halo_port): "
                          "choose another port for the gateway")
    unkeyed = sorted({backend.host for backends in resolved.values() for backend in backends if not backend.keyed})
    if not bind.is_loopback and unkeyed:
        if not config.allow_unauthenticated:
            raise ConfigError(
                gateway, "halo_gateway_bind", config.gateway_bind,
                f"a gateway beyond loopback in front of engines without an API key ({', '.join(unkeyed)}) serves "
                "anyone who reaches it; set halo_api_key on those hosts (it is enforced there), or "
                "halo_allow_unauthenticated: true on the gateway host",
            )
        warnings.append(f"the gateway on {config.gateway_bind}:{config.gateway_port} forwards to engines without "
                        f"an API key ({', '.join(unkeyed)}): anyone who reaches it is served")

    routes = dict(config.gateway_models or {})
    if len(resolved) > 1 and not routes:
        raise ConfigError(gateway, "halo_gateway_models", None,
                          f"several groups ({', '.join(resolved)}) need routing by model name: map each model "
                          "name clients send to its group")
    check_pools(config, resolved, routes)
    for group in resolved:
        if routes and group not in routes.values():
            warnings.append(f"group {group!r} serves no model of halo_gateway_models: no completion reaches it")

    if cert_text is None and config.gateway_tls_cert is not None:
        cert_text = read_cert(gateway, config.gateway_tls_cert)
    scheme = "https" if cert_text else "http"
    default = next(iter(resolved))
    text = render(
        "haproxy.cfg.j2",
        bind=_address(str(bind), config.gateway_port), cert_path=GATEWAY_CERT if cert_text else None,
        stats_socket=STATS_SOCKET, groups=resolved, default_group=default,
        routes=_routes_by_group(routes), models=sorted(routes), balance=config.gateway_balance,
        inter=config.gateway_check_inter_s, fall=config.gateway_fall, rise=config.gateway_rise,
        timeout=config.gateway_timeout_s, max_body=config.gateway_max_body_kib * 1024,
        bufsize=config.gateway_max_body_kib * 1024 + BUFFER_HEADROOM,
        metrics={"bind": _address(str(bind), METRICS_PORT), "source": metrics_source} if metrics_source else None,
    )
    return GatewayPlan(config=text, cert=cert_text, groups=resolved, routes=routes,
                       url=f"{scheme}://{_address(str(bind), config.gateway_port)}", warnings=warnings)


def _routes_by_group(routes: dict[str, str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for model, group in sorted(routes.items()):
        grouped.setdefault(group, []).append(model)
    return grouped


def read_cert(gateway: str, path: str) -> str:
    """The TLS PEM on the control machine: a certificate and its private key, in one file as haproxy wants."""
    key = "halo_gateway_tls_cert"
    try:
        text = localfiles.read_bounded(path, localfiles.CERT_BYTES).decode()
    except localfiles.LocalFileRefused as error:
        raise ConfigError(gateway, key, path, str(error)) from None
    except UnicodeError:
        raise ConfigError(gateway, key, path, "is not text (a PEM file is ASCII)") from None
    if PEM_CERT not in text or not PEM_KEY.search(text):
        raise ConfigError(gateway, key, path, "must be a PEM file holding the certificate (chain) and its private "
                                              "key, as haproxy's 'crt' expects")
    if "ENCRYPTED PRIVATE KEY" in text or "Proc-Type: 4,ENCRYPTED" in text:
        raise ConfigError(gateway, key, path, "holds an encrypted private key: haproxy cannot ask for a passphrase")
    return text if text.endswith("\n") else text + "\n"


def inventory_groups(config: HaloConfig, inventory: Any) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """The backend groups from a pyinfra inventory: named groups, or every host as one group."""
    def members(hosts: Iterable[Any]) -> list[tuple[str, dict[str, Any]]]:
        return [(each.name, each.data.dict()) for each in hosts]

    if config.gateway_groups is None:
        return {DEFAULT_GROUP: members(inventory)}
    groups = {}
    for group in config.gateway_groups:
        hosts = inventory.get_group(group, default=None)
        if hosts is None:
            raise ConfigError(config.host, "halo_gateway_groups", config.gateway_groups,
                              f"the inventory has no group {group!r}")
        groups[group] = members(hosts)
    return groups


def parse_show_stat(lines: list[str]) -> list[dict[str, str]]:
    """
    haproxy's ``show stat`` CSV (header ``# pxname,svname,...``): one row per server of halofleet's backends, with
    its status (UP, DOWN, MAINT, ``UP 1/2`` while rising...) and last check.
    """
    text = [line for line in lines if line.strip()]
    if not text or not text[0].startswith("# "):
        return []
    reader = csv.DictReader([text[0][2:]] + text[1:])
    rows = []
    for row in reader:
        proxy, server = row.get("pxname") or "", row.get("svname") or ""
        if not proxy.startswith("halo_") or server in ("FRONTEND", "BACKEND", ""):
            continue
        rows.append({"group": proxy[len("halo_"):], "server": server, "status": row.get("status") or "?",
                     "check": row.get("check_status") or ""})
    return rows


def gateway_cell(rows: list[dict[str, str]] | None) -> str:
    """The verification table's 'gateway' cell: each backend's state as haproxy sees it."""
    if rows is None:
        return "-"
    if not rows:
        return "no backends"
    return ", ".join(f"{row['group']}/{row['server']} {row['status']}" for row in rows)


# -- draining: a backend is taken out of rotation before its engine stops, and put back once haproxy sees it up --

@dataclass(frozen=True)
class Slot:
    """One place a host serves behind a gateway: haproxy's backend and server names on that gateway host."""

    gateway: str  # the gateway's inventory name
    proxy: str  # haproxy backend (halo_<group>)
    server: str
    drain_s: int  # longest wait for the requests in flight to finish (halo_gateway_timeout_s)
    up_s: int  # longest wait for haproxy's own checks to see the engine up again


Groups = dict[str, list[tuple[str, dict[str, Any]]]]  # backend group -> (name, data) of its hosts


def slots_of(name: str, gateways: list[tuple[HaloConfig, Groups]]) -> list[Slot]:
    """Every gateway backend ``name`` is a server of: ``gateways`` holds each gateway's config and its groups."""
    slots = []
    for config, groups in gateways:
        if config.host == name:
            continue
        for group, members in groups.items():
            data = dict(members).get(name)
            if data is None or backend_of(config.host, name, data) is None:
                continue
            slots.append(Slot(gateway=config.host, proxy=f"halo_{group}", server=SERVER_NAME.sub("_", name)[:64],
                              drain_s=config.gateway_timeout_s,
                              up_s=config.gateway_check_inter_s * (config.gateway_rise + 2) + 10))
    return slots


def _socket_script(slot: Slot, state: str, wait: str) -> str:
    """Shell for the gateway host: set the server's admin state, then wait (bounded) for ``wait`` to hold."""
    target = f"{slot.proxy}/{slot.server}"
    fail = f"halofleet: gateway {slot.gateway}: {target}"
    return "\n".join([
        f"sock={STATS_SOCKET}",
        # No haproxy here yet (the gateway's first deploy comes later): nothing reaches the engine through it.
        '[ -S "$sock" ] || exit 0',
        "ask() { printf '%s\\n' \"$1\" | nc -N -w 5 -U \"$sock\"; }",
        f"out=$(ask 'set server {target} state {state}')",
        # Not in the live configuration (added by this run's gateway stage, later): no request goes there yet.
        'case "$out" in *"No such"*) exit 0;; "") ;; *) '
        f"echo \"{fail}: haproxy refused 'state {state}': $out\" >&2; exit 1;; esac",
        f"field() {{ ask 'show stat' | awk -F, -v p={slot.proxy} -v s={slot.server} -v f=\"$1\" "
        "'$1==p && $2==s {print $f}'; }",
        wait,
    ])


def drain_script(slot: Slot) -> str:
    """Take the server out of rotation (haproxy ``state drain``: no new request) and wait for its requests in
    flight (``scur``, the 5th column of ``show stat``) to finish, at most ``drain_s`` seconds."""
    return _socket_script(slot, "drain", "\n".join([
        f"i=0; while [ $i -lt {int(slot.drain_s)} ]; do n=$(field 5); [ \"${{n:-0}}\" = 0 ] && exit 0; "
        "sleep 1; i=$((i+1)); done",
        f"echo \"halofleet: gateway {slot.gateway}: {slot.proxy}/{slot.server} still has $n request(s) in flight "
        f"after {int(slot.drain_s)} s of draining; the engine is not restarted\" >&2; exit 1",
    ]))


def ready_script(slot: Slot) -> str:
    """Put the server back (``state ready``) and wait until haproxy's own health checks say UP (``status``, the
    18th column), at most ``up_s`` seconds: the next batch drains only once this one takes requests again."""
    return _socket_script(slot, "ready", "\n".join([
        f"i=0; while [ $i -lt {int(slot.up_s)} ]; do [ \"$(field 18)\" = UP ] && exit 0; sleep 1; i=$((i+1)); done",
        f"echo \"halofleet: gateway {slot.gateway}: {slot.proxy}/{slot.server} is not UP in haproxy "
        f"{int(slot.up_s)} s after its restart ($(field 18)); the rolling restart stops here\" >&2; exit 1",
    ]))
