"""
Seeing the fleet: node exporter and the textfile timer on every host, the fleet's Prometheus on the monitor host,
each started (or restarted) only when its files changed and considered up only once it listens; and their removal.
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation

from ..contract import paths
from ..fleet.rpc import listen_hex

DAEMON_RELOAD = "systemctl daemon-reload"
PROMTOOL_RULES = 'promtool check rules "$HALO_CANDIDATE"'
# The candidate configuration as Prometheus would load it, rule files included (the live rules file: the stage
# writes it first, checked on its own). --syntax-only: the credential files exist only inside the running unit.
PROMTOOL_CONFIG = 'promtool check config --syntax-only "$HALO_CANDIDATE" && promtool check rules ' + \
    paths.PROMETHEUS_RULES
WAIT_S = 60


def _listening(address: str, port: int) -> str:
    """Shell: true once something listens on address:port (read from /proc, no client needed on the host)."""
    hex_address, proc = listen_hex(address, port)
    return f'grep -Eq "^ *[0-9]+: {hex_address} [0-9A-F]+:0000 0A " {proc}'


@operation()
def service_running(service: str, restart: bool, start: bool, address: str, port: int, reload: bool = False):
    """
    A unit enabled and running, restarted when its files changed, and up only once it listens on
    ``address:port`` (within a minute; otherwise its status is printed and the host fails).

    + service: the unit's name
    + restart: its unit, drop-in or configuration changed in this run
    + start: nothing changed, but it is not running or not enabled
    + address: the address it listens on
    + port: the port it listens on
    + reload: run ``systemctl daemon-reload`` first (a unit file or drop-in changed)

    **Example:**

    .. code:: python

        service_running(name="node exporter", service="prometheus-node-exporter.service", restart=True,
                        start=False, address="10.0.0.2", port=9100, reload=True)
    """
    if not (restart or start or reload):
        host.noop(f"{service} is running on {address}:{port}")
        return
    unit = shlex.quote(service)
    failure = shlex.quote(f"halofleet: {service} is not listening on {address}:{port}")
    script = ["set -e"]
    if reload:
        script.append(DAEMON_RELOAD)
    script += [
        f"systemctl reset-failed {unit} 2>/dev/null || true",
        f"systemctl enable --quiet {unit}",
        f"systemctl {'restart' if restart or reload else 'start'} {unit}",
        f"n=0; until {_listening(address, port)}; do n=$((n + 1)); if [ $n -gt {WAIT_S * 2} ] || "
        f"! systemctl is-active --quiet {unit}; then systemctl status --no-pager --lines=25 {unit} >&2 || true; "
        f"echo {failure} >&2; exit 1; fi; sleep 0.5; done",
    ]
    yield StringCommand("sh", "-c", QuoteString("\n".join(script)))


@operation()
def textfile_timer(changed: bool, running: bool):
    """
    halofleet's textfile collector: its timer enabled and started, and the collector run once now when its
    script or units changed (so the gauges are fresh after a deploy, not a timer period later).

    + changed: the script, service or timer changed in this run
    + running: the timer is active and enabled already (from the probe)

    **Example:**

    .. code:: python

        textfile_timer(name="textfile collector", changed=True, running=False)
    """
    if not changed and running:
        host.noop("halo-textfile.timer is running")
        return
    service = paths.TEXTFILE_SERVICE
    yield StringCommand("sh", "-c", QuoteString(
        f"set -e; {DAEMON_RELOAD}; systemctl enable --quiet halo-textfile.timer; "
        f"systemctl restart halo-textfile.timer; systemctl start {service}; "
        f"test -s {paths.TEXTFILE_OUTPUT} || {{ echo 'halofleet: the textfile collector wrote nothing' >&2; exit 1; }}"
    ))


@operation()
def debian_prometheus_disabled(installed_now: bool):
    """
    Debian's own prometheus.service, started by the package's installation, stopped and disabled when this run
    installed the package (it would scrape nothing of ours and listen on every address); a Prometheus the user
    had before is left as it is.

    + installed_now: the prometheus package was not installed before this run

    **Example:**

    .. code:: python

        debian_prometheus_disabled(name="Debian's prometheus.service off", installed_now=True)
    """
    if not installed_now:
        host.noop("prometheus.service is the user's: left as it is")
        return
    yield "systemctl disable --now --quiet prometheus.service"


@operation()
def units_removed(units: list[str], present: bool):
    """
    Stop and disable halofleet's monitoring units (their files are removed by the managed-files rollback).

    + units: unit names
    + present: any of them is active or enabled (from the probe)

    **Example:**

    .. code:: python

        units_removed(name="Stop the monitor", units=["halo-prometheus.service"], present=True)
    """
    if not present:
        host.noop("no monitoring unit of halofleet's runs")
        return
    # One at a time: systemctl fails a list that names a unit whose file is gone, and may leave the others up.
    yield StringCommand("sh", "-c", QuoteString("; ".join(
        f"{{ systemctl disable --now --quiet {unit} 2>/dev/null || systemctl stop {unit} 2>/dev/null; "
        f"systemctl reset-failed {unit} 2>/dev/null; }}" for unit in map(shlex.quote, units)) + "; true"))


@operation()
def directory_removed(path: str, present: bool):
    """
    Remove a directory that holds only what halofleet's units wrote (the fleet's Prometheus storage, the
    textfile collector's output).

    + path: absolute directory path (one of halofleet's own)
    + present: it exists (from the probe)

    **Example:**

    .. code:: python

        directory_removed(name="Remove the fleet's Prometheus storage", path="/var/lib/halofleet-prometheus",
                          present=True)
    """
    if not present:
        host.noop(f"{path} is absent")
        return
    yield StringCommand("rm", "-rf", "--one-file-system", QuoteString(path))


@operation()
def package_recorded(record: str, installed_before: bool, recorded: bool):
    """
    Record (once, at halofleet's first touch, beside the users' originals) that a service was not running before
    halofleet, so the rollback knows to stop it again. A record is never rewritten: a later run, which finds the
    service running (halofleet's), changes nothing.

    + record: the record's file name
    + installed_before: the service was running and enabled before this run: nothing to record
    + recorded: the record exists already (from the probe)

    **Example:**

    .. code:: python

        package_recorded(name="Record", record="service__prometheus-node-exporter.off", installed_before=False,
                         recorded=False)
    """
    target = f"{paths.BACKUP_ORIGINALS}/{record}"
    if installed_before or recorded:
        host.noop("nothing to record: the service was running before, or the record exists")
        return
    quoted = shlex.quote(target)
    yield StringCommand("sh", "-c", QuoteString(f"mkdir -p -m 0700 {paths.BACKUP_ORIGINALS} && : > {quoted}"))


@operation()
def exporter_restored(was_off: bool, present: bool):
    """
    After the drop-in is gone: node exporter back as it was at halofleet's first touch: on Debian's own settings
    (restarted) where it was running, stopped and disabled where it was not (the record then removed).

    + was_off: halofleet's record says it was not running (or not installed) at the first touch
    + present: our drop-in is there, or the record exists (from the probe)

    **Example:**

    .. code:: python

        exporter_restored(name="Node exporter back to Debian's unit", was_off=False, present=True)
    """
    if not present:
        host.noop(f"{paths.EXPORTER_SERVICE} is not running")
        return
    service = paths.EXPORTER_SERVICE
    if was_off:
        record = shlex.quote(f"{paths.BACKUP_ORIGINALS}/service__prometheus-node-exporter.off")
        yield StringCommand("sh", "-c", QuoteString(
            f"{DAEMON_RELOAD}; systemctl disable --now --quiet {service} 2>/dev/null || true; rm -f {record}"))
    else:
        yield StringCommand("sh", "-c", QuoteString(f"{DAEMON_RELOAD}; systemctl try-restart {service}"))
