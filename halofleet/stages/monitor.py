"""
Seeing the fleet as a ``@deploy`` stage. When the inventory has a monitor host (``halo_monitor: true``), every host
runs Debian's node exporter (a drop-in on Debian's unit: private address, drm collector, basic auth) and
halofleet's textfile collector on a timer; the monitor host also runs the fleet's Prometheus as its own unit
(halo-prometheus.service) with its own configuration, rules and storage under halofleet's paths, so Debian's
prometheus.service and /etc/prometheus are never touched. An inventory without a monitor host gets nothing.
"""

from __future__ import annotations

from pyinfra import host, logger, state
from pyinfra.api import deploy
from pyinfra.operations import apt

from ..box.exporter import plan_exporter
from ..contract import paths, policy
from ..contract.config import ConfigError, HostRefused
from ..deploy import _refuse, current_plan, host_data, managed_sha256
from ..facts.halo_monitor import MonitorState
from ..fleet.monitor import monitor_hosts, plan_monitor
from ..operations import halo_files, halo_monitor
from ..views import summary

EXPORTER_PACKAGES = ["prometheus-node-exporter"]
MONITOR_PACKAGES = ["prometheus"]  # prometheus and promtool


def inventory_hosts() -> list[tuple[str, dict]]:
    return [(each.name, host_data(each.name)) for each in state.inventory]


@deploy("monitor")
def monitor() -> None:
    """
    Node exporter and the textfile collector on every host of an inventory with a monitor host; the fleet's
    Prometheus on the monitor host, its configuration and rules checked by promtool before they go live.
    """
    summary.install()
    plan = current_plan()
    if plan is None:
        return
    everyone = inventory_hosts()
    if not monitor_hosts(everyone):
        return
    current = host.get_fact(MonitorState)
    exporter = plan_exporter(plan)
    changed = []
    # Every file before the package: Debian's unit, started by the package's installation, then starts with our
    # drop-in (private address, basic auth) and never listens on every address.
    for path, content, mode in exporter.files:
        if content is None:
            changed.append(halo_files.absent_file(name=f"Monitoring file: {path}", path=path,
                                                  current_sha256=managed_sha256(plan, path)))
        else:
            changed.append(halo_files.checked_file(
                name=f"Monitoring file: {path}", path=path, content=content, mode=mode,
                redact=path == paths.EXPORTER_WEB, current_sha256=managed_sha256(plan, path)))
    web, script, service, timer, dropin = changed
    exporter_state = current["units"].get("exporter") or {}
    halo_monitor.package_recorded(
        name="Record: node exporter was not running before halofleet", record=EXPORTER_OFF_RECORD,
        installed_before=exporter_state.get("active") == "active" and exporter_state.get("enabled") == "enabled",
        recorded=EXPORTER_OFF_RECORD in ((plan.probe.get("backups") or {}).get("records") or []))
    apt.packages(name="Node exporter (Debian's package)", packages=EXPORTER_PACKAGES, no_recommends=True,
                 extra_install_args=policy.APT_LOCK_WAIT)
    units = current["units"]
    exporter_up = (units.get("exporter") or {}).get("active") == "active"
    bind, _, port = exporter.listen.rpartition(":")
    halo_monitor.service_running(
        name=f"Node exporter on {exporter.listen}", service=paths.EXPORTER_SERVICE,
        restart=dropin.will_change or web.will_change, start=not exporter_up, address=bind.strip("[]"),
        port=int(port), reload=dropin.will_change,
    )
    timer_state = units.get("timer") or {}
    halo_monitor.textfile_timer(
        name="halofleet's textfile collector (timer)",
        changed=script.will_change or service.will_change or timer.will_change,
        running=timer_state.get("active") == "active" and timer_state.get("enabled") == "enabled",
    )
    if plan.config.monitor:
        _prometheus(plan, everyone, current)


def _prometheus(plan, everyone, current) -> None:
    try:
        monitor_plan = plan_monitor(plan.config, everyone)
    except (ConfigError, HostRefused) as error:
        _refuse(error)
        return
    for warning in monitor_plan.warnings:
        logger.warning(f"{host.print_prefix}halofleet: {warning}")
    installed_before = bool(current["packages"].get("prometheus"))
    apt.packages(name="Prometheus (Debian's package)", packages=MONITOR_PACKAGES, no_recommends=True,
                 extra_install_args=policy.APT_LOCK_WAIT)
    halo_monitor.debian_prometheus_disabled(name="Debian's prometheus.service (installed by this run) off",
                                            installed_now=not installed_before)
    on_host = current["files"]
    changed = []
    for path, secret in sorted(monitor_plan.credentials.items()):
        changed.append(halo_files.checked_file(name=f"Scrape credential: {path}", path=path, content=secret,
                                               mode="0600", redact=True, current_sha256=on_host.get(path)))
    for path, content in sorted(monitor_plan.sd_files.items()):
        halo_files.checked_file(name=f"Scrape targets: {path}", path=path, content=content,
                                current_sha256=on_host.get(path))  # file_sd: Prometheus rereads it itself
    for path in sorted(set(on_host) - set(monitor_plan.credentials) - set(monitor_plan.sd_files)):
        halo_files.absent_file(name=f"No longer scraped: {path}", path=path, current_sha256=on_host[path])
    rules = halo_files.checked_file(
        name=f"Alert rules: {paths.PROMETHEUS_RULES}", path=paths.PROMETHEUS_RULES, content=monitor_plan.rules_yml,
        check=halo_monitor.PROMTOOL_RULES, current_sha256=managed_sha256(plan, paths.PROMETHEUS_RULES))
    config = halo_files.checked_file(
        name=f"Prometheus configuration: {paths.PROMETHEUS_CFG}", path=paths.PROMETHEUS_CFG,
        content=monitor_plan.prometheus_yml, check=halo_monitor.PROMTOOL_CONFIG,
        current_sha256=managed_sha256(plan, paths.PROMETHEUS_CFG))
    unit = halo_files.checked_file(
        name=f"Prometheus unit: {paths.PROMETHEUS_UNIT}", path=paths.PROMETHEUS_UNIT, content=monitor_plan.unit,
        current_sha256=managed_sha256(plan, paths.PROMETHEUS_UNIT))
    up = (current["units"].get("prometheus") or {})
    config_bind = plan.config.monitor_bind
    halo_monitor.service_running(
        name=f"The fleet's Prometheus on {config_bind}:{plan.config.monitor_port}",
        service=paths.PROMETHEUS_SERVICE,
        restart=any(op.will_change for op in [rules, config, unit, *changed]),
        start=up.get("active") != "active" or up.get("enabled") != "enabled",
        address=config_bind, port=plan.config.monitor_port, reload=unit.will_change,
    )


# In the originals, once: at halofleet's first touch node exporter was not running and enabled (not installed, or
# off): the rollback then stops and disables it again.
EXPORTER_OFF_RECORD = "service__prometheus-node-exporter.off"


def remove_monitor(records: list[str], managed: dict[str, str]) -> None:
    """
    For the rollback: the fleet's Prometheus and the textfile timer stopped and disabled, every file of theirs
    removed (kept as generations), node exporter's drop-in and password hash removed, the Prometheus storage and
    the textfile output deleted, halofleet's directories removed once empty. Node exporter goes back to Debian's
    unit as it was at halofleet's first touch: restarted on Debian's settings where it was running, stopped and
    disabled where it was not (not installed, or off). The packages stay, as the engines' do.
    """
    current = host.get_fact(MonitorState)
    units = current["units"]

    def running(key: str) -> bool:
        unit = units.get(key) or {}
        return unit.get("active") in ("active", "activating", "reloading", "failed") or \
            unit.get("enabled") == "enabled"

    ours = [paths.PROMETHEUS_SERVICE, "halo-textfile.timer", paths.TEXTFILE_SERVICE]
    halo_monitor.units_removed(name="Stop the fleet's Prometheus and the textfile timer", units=ours,
                               present=running("prometheus") or running("timer"))
    files = dict(current["files"])
    for path in sorted(files):
        halo_files.restored_file(name=f"Monitoring file: {path}", path=path,
                                 record=halo_files.record_of(records, path), current_sha256=files[path])
    for path in paths.MONITOR_FILES:  # the probe hashed them (``managed``: its digests of the managed files)
        halo_files.restored_file(name=f"Monitoring file: {path}", path=path,
                                 record=halo_files.record_of(records, path), current_sha256=managed.get(path))
    was_off = EXPORTER_OFF_RECORD in records
    halo_monitor.exporter_restored(name="Node exporter back to Debian's unit as it was", was_off=was_off,
                                   present="dropin" in current["dirs"] or was_off)
    for path, key in ((paths.PROMETHEUS_STORAGE, "storage"), (paths.TEXTFILE_DIR, "textfile")):
        halo_monitor.directory_removed(name=f"Remove {path}", path=path, present=key in current["dirs"])
    for path, key in ((paths.PROMETHEUS_SD_DIR, "sd"), (paths.PROMETHEUS_CREDS_DIR, "credentials"),
                      (paths.PROMETHEUS_DIR, "config"), (paths.EXPORTER_DROPIN_DIR, "dropin")):
        halo_files.empty_directory_removed(name=f"Remove {path} (empty)", path=path,
                                           present=key in current["dirs"])
