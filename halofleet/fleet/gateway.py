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


@dataclass(frozen=True)
class Backend:
    server: str  # haproxy's server name (the inventory name, made safe)
    host: str  # the inventory name
    address: str  # haproxy's address:port text
    keyed: bool  # the engine requires an API key


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
                   keyed=keyed)


def _key_of(name: str, data: dict[str, Any]) -> str | None:
    return option_value(name, "halo_api_key", data.get("halo_api_key"))


def plan_gateway(config: HaloConfig, groups: dict[str, list[tuple[str, dict[str, Any]]]],
                 cert_text: str | None = None) -> GatewayPlan:
    """
    ``groups``: backend group -> the (name, data) of its hosts in inventory order (the stage reads them from the
    inventory); ``cert_text``: the PEM of halo_gateway_tls_cert, read by the caller (None: read it here).
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
