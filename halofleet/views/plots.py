"""
The report's pictures: the last day of the fleet from its monitor host's Prometheus (``query_range`` over the
HTTP API, every read bounded by :mod:`halofleet.models.http`), drawn as inline SVG by pygal (no script, no CDN:
the page works offline). Without a monitor host in the inventory, or when its Prometheus cannot be read, the
report is the table alone and says why.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from ..contract.config import ConfigError
from ..fleet.monitor import listen_address, monitor_hosts, value
from ..models.http import HttpStatus, Limits, Reads, ReadRefused, parse_json

# One panel per question, one line per host.
PANELS = (
    ("tokens/s generated", 'sum by (host) (rate(llamacpp:tokens_predicted_total{kind="engine"}[5m]))'),
    ("GTT used (GiB)", "sum by (host) (node_drm_memory_gtt_used_bytes) / 1073741824"),
    ("requests in flight", 'sum by (host) (llamacpp:requests_processing{kind="engine"})'),
    ("amdgpu faults (this boot)", "sum by (host) (halofleet_amdgpu_faults_total)"),
)
HOURS = 24
POINTS = 240  # per series: the step is the range / POINTS
LIMITS = Limits(request_s=10.0, host_s=60.0, redirects=0, json_bytes=4 << 20)
ANSWER_BYTES = 4 << 20
SCRIPT = re.compile(r"<script\b.*?</script>", re.S)


@dataclass
class History:
    url: str | None  # the monitor's Prometheus (None: no monitor host)
    panels: list[tuple[str, str]] = field(default_factory=list)  # (title, inline SVG)
    problem: str | None = None  # why there are no pictures


def monitor_url(hosts: list[tuple[str, dict[str, Any]]]) -> str | None:
    """The Prometheus URL of the inventory's first monitor host (None: none, or its data is invalid)."""
    for name in monitor_hosts(hosts):
        data = dict(hosts)[name]
        try:
            bind = value(name, data, "halo_monitor_bind")
            port = value(name, data, "halo_monitor_port")
        except ConfigError:
            continue
        if bind is None:
            continue
        if bind in ("0.0.0.0", "::"):
            bind = str(data.get("ssh_hostname") or name)
        return "http://" + listen_address(bind, port)
    return None


def query_range(reads: Reads, url: str, expr: str, end: float, hours: int = HOURS) -> dict[str, list]:
    """{host: [(unix time, value), ...]} of one range query (bounded read, bounded JSON)."""
    start = end - hours * 3600
    step = max(1, int(hours * 3600 / POINTS))
    query = urlencode({"query": expr, "start": f"{start:.0f}", "end": f"{end:.0f}", "step": str(step)})
    answer = reads.get(f"{url}/api/v1/query_range?{query}", {}, ANSWER_BYTES)
    document = parse_json(answer.body, "Prometheus's answer", LIMITS)
    if not isinstance(document, dict) or document.get("status") != "success":
        raise ReadRefused(f"Prometheus did not answer the query: {str(document)[:200]}")
    series = {}
    for item in (document.get("data") or {}).get("result") or []:
        host = str((item.get("metric") or {}).get("host", "?"))
        points = []
        for pair in item.get("values") or []:
            try:
                points.append((float(pair[0]), float(pair[1])))
            except (TypeError, ValueError, IndexError):
                continue
        series[host] = points
    return series


def svg(title: str, series: dict[str, list], end: float) -> str:
    """One panel as an inline SVG element (pygal, no script)."""
    import pygal

    chart = pygal.XY(
        title=title, width=640, height=300, show_dots=True, dots_size=2, js=[], disable_xml_declaration=True,
        x_title="hours before the report", legend_at_bottom=True, no_data_text="no data",
        style=pygal.style.CleanStyle, explicit_size=True, xrange=(-HOURS, 0),
    )
    for host, points in sorted(series.items()):
        chart.add(host, [((t - end) / 3600, v) for t, v in points])
    # pygal embeds its configuration for its (not loaded) tooltip script: the picture needs no script at all.
    return SCRIPT.sub("", chart.render(is_unicode=True))


def inventory_hosts(inventory: str) -> list[tuple[str, dict[str, Any]]]:
    from .inventory import load_inventory

    return [(each.name, each.data.dict()) for each in load_inventory(inventory)]


def fleet_history(hosts: list[tuple[str, dict[str, Any]]], reads: Reads | None = None,
                  now: float | None = None) -> History:
    url = monitor_url(hosts)
    if url is None:
        return History(url=None, problem="no monitor host (halo_monitor) in the inventory")
    reads = reads or Reads(LIMITS)
    end = now if now is not None else time.time()
    history = History(url=url)
    try:
        for title, expr in PANELS:
            history.panels.append((title, svg(title, query_range(reads, url, expr, end), end)))
    except (ReadRefused, HttpStatus, OSError, ValueError) as error:  # ValueError: not JSON
        history.panels, history.problem = [], f"{url} could not be read: {error}"
    return history
