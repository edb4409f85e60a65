"""
Seeing the fleet, pure: from the inventory's data to the monitor host's Prometheus (its configuration, file-based
service discovery, credentials and alert rules) and to each host's node exporter (its address and basic auth).

Who is scraped: every host's node exporter (with the ``drm`` collector and halofleet's textfile gauges), every
llama-server or vLLM engine's ``/metrics`` (with the host's API key, from a 0600 file handed to Prometheus by
systemd's ``LoadCredential``) and each gateway's haproxy built-in Prometheus exporter (a frontend that lets the
monitor's address in only). Every target carries a ``host`` label (the inventory name) and a ``kind`` label
(``node``, ``engine``, ``haproxy``): the rules join an engine's speed with its host's bench figure on ``host``.

The rules file is data (:data:`RULES`: one entry per alert): a new alert is one more entry.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import bcrypt

from ..contract.config import NO_ENDPOINT, ConfigError, HaloConfig, HostRefused, option_value
from ..contract.paths import (
    PROMETHEUS_CFG,
    PROMETHEUS_CREDS_DIR,
    PROMETHEUS_RULES,
    PROMETHEUS_SD_DIR,
    PROMETHEUS_SERVICE,
    PROMETHEUS_STORAGE,
)
from ..contract.templating import render
from .gateway import METRICS_PORT

EXPORTER_USER = "halofleet"  # node exporter's basic-auth user name
CREDENTIALS_RUNTIME = f"/run/credentials/{PROMETHEUS_SERVICE}"  # where LoadCredential puts them for the unit
CREDENTIAL_PREFIX = "halo"  # LoadCredential=halo:<dir>: each file becomes credential "halo_<file name>"
BCRYPT_COST = 10  # node exporter checks the hash (it caches successful logins); 10 is exporter-toolkit's example
MANAGED_HEADER = "# Managed by halofleet (the monitor stage): local edits are overwritten.\n"
FILE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Target:
    host: str  # inventory name
    kind: str  # node | engine | haproxy
    address: str  # host:port as Prometheus reaches it
    secret: str | None = None  # the engine's API key or the exporter's password (None: none needed)
    basic_auth: bool = False  # the secret is a basic-auth password (else a bearer token)

    @property
    def job(self) -> str:
        return f"{self.kind}/{self.host}"

    @property
    def file_name(self) -> str:
        """A file name for this job (SD file, credential): the host name made safe, plus a digest (no clashes)."""
        digest = hashlib.sha256(self.host.encode()).hexdigest()[:8]
        return f"{self.kind}-{FILE_NAME.sub('_', self.host)[:48]}-{digest}"


@dataclass
class MonitorPlan:
    """What the monitor host writes: its files by path (content, mode) and what it scrapes."""

    config: HaloConfig
    targets: list[Target]
    prometheus_yml: str
    rules_yml: str
    sd_files: dict[str, str]  # path -> JSON
    credentials: dict[str, str]  # path -> secret (0600 root)
    unit: str
    warnings: list[str] = field(default_factory=list)


def listen_address(ip: str, port: int) -> str:
    """``ip:port`` (``[ip]:port`` for IPv6), as Prometheus and node exporter write an address."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def value(name: str, data: dict[str, Any], key: str) -> Any:
    """One key of another host's data through the contract (ConfigError when invalid)."""
    return option_value(name, key, data.get(key))


def monitor_hosts(hosts: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """The inventory's monitor hosts (valid ``halo_monitor: true``; a host whose value is invalid is not one)."""
    found = []
    for name, data in hosts:
        try:
            if value(name, data, "halo_monitor"):
                found.append(name)
        except ConfigError:
            continue
    return found


def monitor_source(hosts: list[tuple[str, dict[str, Any]]]) -> str | None:
    """
    The address the inventory's monitor host scrapes from (its halo_monitor_bind; listening everywhere: the
    address the inventory connects to), for a gateway's allow rule; None: no monitor, or none it could name.
    """
    for name, data in hosts:
        if name not in monitor_hosts([(name, data)]):
            continue
        try:
            bind = value(name, data, "halo_monitor_bind")
        except ConfigError:
            return None
        if bind is None:
            return None
        return _reach(name, data, bind, "") if ipaddress.ip_address(bind).is_unspecified else bind
    return None


def exporter_bind(config: HaloConfig) -> str:
    """Where this host's node exporter listens: halo_exporter_bind, else the engine's halo_bind."""
    return config.exporter_bind or config.bind


def check_exporter_exposure(config: HaloConfig) -> None:
    """The engines' rule, for node exporter: beyond loopback, a password, or halo_allow_unauthenticated."""
    bind = ipaddress.ip_address(exporter_bind(config))
    if not bind.is_loopback and config.exporter_password is None and not config.allow_unauthenticated:
        raise ConfigError(config.host, "halo_exporter_bind", exporter_bind(config),
                          "node exporter beyond loopback needs a password: set halo_exporter_password (or "
                          "halo_allow_unauthenticated: true to let anyone who reaches the port read it)")


def check_monitoring(config: HaloConfig, hosts: list[tuple[str, dict[str, Any]]]) -> None:
    """
    In preflight, before anything changes: with a monitor host in the inventory, this host's node exporter
    follows the exposure rule, and a monitor host names the address its Prometheus listens on.
    """
    if config.monitor and config.monitor_bind is None:
        raise ConfigError(config.host, "halo_monitor_bind", None,
                          "must be set with halo_monitor (the address the fleet's Prometheus listens on)")
    if monitor_hosts(hosts) or config.monitor:
        check_exporter_exposure(config)


def exporter_web_config(host: str, password: str) -> str:
    """
    node exporter's ``--web.config.file``: basic auth for user ``halofleet`` with the password's bcrypt hash. The
    salt is derived from the host and the password, so the same password gives the same file (a second deploy
    changes nothing) while two hosts sharing a password get different hashes.
    """
    std = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    ours = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    raw = hashlib.sha256(f"halofleet exporter\0{host}\0{password}".encode()).digest()[:16]
    salt = b"$2b$%02d$" % BCRYPT_COST + base64.b64encode(raw).translate(bytes.maketrans(std, ours))[:22]
    hashed = bcrypt.hashpw(password.encode(), salt).decode()
    return MANAGED_HEADER + json.dumps({"basic_auth_users": {EXPORTER_USER: hashed}}, indent=2) + "\n"


def _reach(name: str, data: dict[str, Any], bind: str, monitor: str) -> str | None:
    """The address the monitor reaches ``bind`` of host ``name`` at (None: it cannot; the caller warns)."""
    address = ipaddress.ip_address(bind)
    if address.is_loopback:
        return bind if name == monitor else None
    if address.is_unspecified:
        reach = str(data.get("ssh_hostname") or name)
        try:
            return str(ipaddress.ip_address(reach))
        except ValueError:
            return None
    return bind


def _engine_scrapes_metrics(name: str, data: dict[str, Any]) -> bool:
    engine = value(name, data, "halo_serve")
    if engine == "vllm":
        return True  # vLLM's OpenAI server always has /metrics
    return bool(value(name, data, "halo_metrics")) or "--metrics" in (value(name, data, "halo_llama_args") or [])


def fleet_targets(monitor: str, hosts: list[tuple[str, dict[str, Any]]]) -> tuple[list[Target], list[str]]:
    """Every scrape target of the inventory, and warnings for hosts the monitor cannot scrape (and why)."""
    targets, warnings = [], []
    for name, data in hosts:
        try:
            bind = value(name, data, "halo_exporter_bind") or value(name, data, "halo_bind")
            port = value(name, data, "halo_exporter_port")
            password = value(name, data, "halo_exporter_password")
            engine = value(name, data, "halo_serve")
        except ConfigError as error:
            warnings.append(f"not monitored: {error}")
            continue
        reach = _reach(name, data, bind, monitor)
        if reach is None:
            warnings.append(f"{name}: node exporter listens on {bind}, which the monitor cannot reach "
                            "(set its halo_exporter_bind)")
        else:
            targets.append(Target(name, "node", listen_address(reach, port), password, basic_auth=True))
        try:
            router = bool(value(name, data, "halo_models"))
            if engine not in NO_ENDPOINT and not router and _engine_scrapes_metrics(name, data):
                engine_bind, engine_port = value(name, data, "halo_bind"), value(name, data, "halo_port")
                reach = _reach(name, data, engine_bind, monitor)
                if reach is None:
                    warnings.append(f"{name}: the engine listens on {engine_bind}, which the monitor cannot reach")
                else:
                    targets.append(Target(name, "engine", listen_address(reach, engine_port),
                                          value(name, data, "halo_api_key")))
            elif engine not in NO_ENDPOINT and router:
                warnings.append(f"{name}: a router engine (halo_models) has /metrics per model: not scraped yet")
            if value(name, data, "halo_gateway"):
                gateway_bind = value(name, data, "halo_gateway_bind")
                reach = _reach(name, data, gateway_bind, monitor) if gateway_bind else None
                if reach is not None:
                    targets.append(Target(name, "haproxy", listen_address(reach, METRICS_PORT)))
        except ConfigError as error:
            warnings.append(f"not monitored: {error}")
    return targets, warnings


def credential_name(target: Target) -> str:
    return f"{CREDENTIAL_PREFIX}_{target.file_name}"


def scrape_config(target: Target, interval: int) -> dict[str, Any]:
    job: dict[str, Any] = {
        "job_name": target.job,
        "scrape_interval": f"{interval}s",
        "scrape_timeout": f"{min(10, interval)}s",  # at most the interval, as Prometheus requires
        "file_sd_configs": [{"files": [f"{PROMETHEUS_SD_DIR}/{target.file_name}.json"]}],
    }
    credential = f"{CREDENTIALS_RUNTIME}/{credential_name(target)}"
    if target.secret is not None and target.basic_auth:
        job["basic_auth"] = {"username": EXPORTER_USER, "password_file": credential}
    elif target.secret is not None:
        job["authorization"] = {"type": "Bearer", "credentials_file": credential}
    return job


# -- alert rules: one entry each (name, expression from the options, for: from the options, summary) --------------
# Kinds of amdgpu faults counted by the textfile collector (templates/halo-textfile.sh.j2 holds the patterns and
# their sources).
FAULT_KINDS = ("page_fault", "mes_timeout", "gpu_reset", "ring_timeout")


@dataclass(frozen=True)
class Rule:
    name: str
    expr: Callable[[HaloConfig], str]
    duration: Callable[[HaloConfig], int]
    summary: str


RULES: tuple[Rule, ...] = (
    Rule("HaloEngineDown", lambda c: 'up{kind="engine"} == 0', lambda c: c.alert_for_s,
         "engine on {{ $labels.host }} does not answer its /metrics"),
    Rule("HaloExporterDown", lambda c: 'up{kind="node"} == 0', lambda c: c.alert_for_s,
         "node exporter on {{ $labels.host }} does not answer"),
    # haproxy 2.4+ exports one series per state; 1 marks the current one (haproxy's promex documentation).
    Rule("HaloBackendDown", lambda c: 'haproxy_server_status{kind="haproxy",state="DOWN"} == 1',
         lambda c: c.alert_for_s, "gateway {{ $labels.host }} marks backend {{ $labels.server }} DOWN"),
    Rule("HaloGttHigh", lambda c: f"node_drm_memory_gtt_used_bytes / node_drm_memory_gtt_size_bytes > "
                                  f"{c.alert_gtt_fraction:g}",
         lambda c: c.alert_for_s, "GTT in use on {{ $labels.host }} ({{ $labels.card }}) is above the threshold"),
    Rule("HaloAmdgpuFaults", lambda c: f"increase(halofleet_amdgpu_faults_total[{c.alert_fault_window_s}s]) > 0",
         lambda c: 0, "amdgpu logged {{ $labels.fault }} on {{ $labels.host }}: a hang may follow"),
    # The textfile collector's check of the host against its stack profile (halo_stack): the kernel booted, the
    # profile's packages installed and held. A kernel installed and waiting for its reboot is drift until it runs.
    Rule("HaloStackDrift", lambda c: "halofleet_stack_drift == 1", lambda c: c.alert_for_s,
         "{{ $labels.host }} drifts from stack profile {{ $labels.profile }}: {{ $labels.item }}"),
    # llama-server's average generation speed against the host's last llama-bench tg figure (the textfile
    # collector reads it from the bench result on the host); no bench result, no series, no alert.
    Rule("HaloTokensSlow", lambda c: "(llamacpp:predicted_tokens_seconds > 0) < on(host) group_left() "
                                     f"(halofleet_bench_tg_tokens_per_second * {c.alert_tps_fraction:g})",
         lambda c: c.alert_for_s, "{{ $labels.host }} generates below its bench figure"),
)


def rules_yml(config: HaloConfig, rules: tuple[Rule, ...] = RULES) -> str:
    """The rules file (JSON, which YAML reads as it is: every string quoted by construction)."""
    entries = []
    for rule in rules:
        entry: dict[str, Any] = {"alert": rule.name, "expr": rule.expr(config)}
        if rule.duration(config):
            entry["for"] = f"{rule.duration(config)}s"
        entry["annotations"] = {"summary": rule.summary}
        entries.append(entry)
    return MANAGED_HEADER + json.dumps({"groups": [{"name": "halofleet", "rules": entries}]}, indent=2) + "\n"


def prometheus_yml(config: HaloConfig, targets: list[Target]) -> str:
    interval = config.monitor_scrape_s
    document = {
        "global": {"scrape_interval": f"{interval}s", "evaluation_interval": f"{interval}s"},
        "rule_files": [PROMETHEUS_RULES],
        "scrape_configs": [scrape_config(target, interval) for target in targets],
    }
    return MANAGED_HEADER + json.dumps(document, indent=2) + "\n"


def sd_file(target: Target) -> str:
    return json.dumps([{"targets": [target.address], "labels": {"host": target.host, "kind": target.kind}}],
                      indent=2) + "\n"


def prometheus_unit(config: HaloConfig, credentials: bool) -> str:
    args = [f"--config.file={PROMETHEUS_CFG}", f"--storage.tsdb.path={PROMETHEUS_STORAGE}",
            f"--storage.tsdb.retention.time={config.monitor_retention_days}d",
            f"--web.listen-address={monitor_listen(config)}"]
    return render("halo-prometheus.service.j2", config=PROMETHEUS_CFG, storage=PROMETHEUS_STORAGE,
                  state_directory=PROMETHEUS_STORAGE.rsplit("/", 1)[1], args=args,
                  credentials=f"{CREDENTIAL_PREFIX}:{PROMETHEUS_CREDS_DIR}" if credentials else None)


def monitor_listen(config: HaloConfig) -> str:
    return listen_address(config.monitor_bind, config.monitor_port)


def plan_monitor(config: HaloConfig, hosts: list[tuple[str, dict[str, Any]]]) -> MonitorPlan:
    """The monitor host's files from every inventory host's (name, data)."""
    if config.monitor_bind is None:
        raise ConfigError(config.host, "halo_monitor_bind", None,
                          "must be set with halo_monitor (the address Prometheus listens on)")
    targets, warnings = fleet_targets(config.host, hosts)
    if not targets:
        raise HostRefused(config.host, "the monitor has nothing to scrape")
    sd = {f"{PROMETHEUS_SD_DIR}/{target.file_name}.json": sd_file(target) for target in targets}
    credentials = {f"{PROMETHEUS_CREDS_DIR}/{target.file_name}": target.secret for target in targets
                   if target.secret is not None}
    return MonitorPlan(config=config, targets=targets, prometheus_yml=prometheus_yml(config, targets),
                       rules_yml=rules_yml(config), sd_files=sd, credentials=credentials,
                       unit=prometheus_unit(config, bool(credentials)),
                       warnings=warnings)
