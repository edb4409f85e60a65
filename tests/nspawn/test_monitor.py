"""
Seeing the fleet on real hosts: three serving containers (llama-server on a tiny model, /metrics on), a gateway
(haproxy) and a monitor host, deployed by the packaged full deploy. Everything is read through the fleet's own
Prometheus HTTP API from the test's namespace: every target up, the engines' token counters rising after
completions, the engine-down alert firing within its window when one engine stops, a fault line written to the
kernel log raising the faults gauge; the deployed rules pass ``promtool test rules``; a second deploy changes
nothing; Debian's own Prometheus keeps its configuration; the rollback leaves nothing of halofleet's.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import urllib.parse
import zlib

import pytest

from halofleet.box.bench import parse_bench_result
from halofleet.testing.runs import ROOT
from halofleet.testing.tinymodel import write_tiny_llama

from .conftest import TIER_DATA

pytestmark = pytest.mark.nspawn

KEY = "monitor-test-key-0123"
PASSWORD = "exporter-password-0123"
PORT = 9099  # Debian's own prometheus.service (installed in this tier's image) listens on 9090
ALERT_FOR_S = 5
# A page fault as amdgpu logs it on a Strix Halo (shared/captures/strix-halo.md §5c, ROCm/ROCm#5443). A container
# has no kernel log (nspawn gives it no /dev/kmsg): the line goes to the container's journal under the identifier
# journald gives kernel messages (logger -t kernel), one of the two matches the collector reads.
FAULT = "amdgpu 0000:c5:00.0: amdgpu: [gfxhub] page fault (src_id:0 ring:24 vmid:8 pasid:32771)"

PROMTOOL_TEST = """
rule_files: [/etc/halofleet/prometheus/rules.yml]
evaluation_interval: 1s
tests:
  - interval: 1s
    input_series:
      - series: 'up{kind="engine",host="a"}'
        values: '1 1 0x20'
      - series: 'halofleet_amdgpu_faults_total{fault="mes_timeout",host="b"}'
        values: '0 0 0 1 1 1 1 1 1 1'
      - series: 'node_drm_memory_gtt_used_bytes{host="c",card="card1"}'
        values: '99x20'
      - series: 'node_drm_memory_gtt_size_bytes{host="c",card="card1"}'
        values: '100x20'
      - series: 'llamacpp:predicted_tokens_seconds{host="d",kind="engine",job="engine/d"}'
        values: '10x20'
      - series: 'halofleet_bench_tg_tokens_per_second{host="d",kind="node",job="node/d"}'
        values: '50x20'
      - series: 'llamacpp:predicted_tokens_seconds{host="e",kind="engine",job="engine/e"}'
        values: '40x20'
      - series: 'halofleet_bench_tg_tokens_per_second{host="e",kind="node",job="node/e"}'
        values: '50x20'
      - series: 'halofleet_stack_drift{host="f",profile="p",item="kernel package"}'
        values: '0 0 1x20'
      - series: 'halofleet_stack_drift{host="f",profile="p",item="kernel"}'
        values: '0x20'
    alert_rule_test:
      - eval_time: 4s  # down since 2 s: not yet 5 s
        alertname: HaloEngineDown
        exp_alerts: []
      - eval_time: 8s
        alertname: HaloEngineDown
        exp_alerts:
          - exp_labels: {alertname: HaloEngineDown, kind: engine, host: a}
            exp_annotations: {summary: "engine on a does not answer its /metrics"}
      - eval_time: 5s
        alertname: HaloAmdgpuFaults
        exp_alerts:
          - exp_labels: {alertname: HaloAmdgpuFaults, fault: mes_timeout, host: b}
            exp_annotations: {summary: "amdgpu logged mes_timeout on b: a hang may follow"}
      - eval_time: 8s
        alertname: HaloGttHigh
        exp_alerts:
          - exp_labels: {alertname: HaloGttHigh, host: c, card: card1}
            exp_annotations: {summary: "GTT in use on c (card1) is above the threshold"}
      - eval_time: 8s  # d generates 10 t/s against a bench figure of 50 (below half); e 40 (above)
        alertname: HaloTokensSlow
        exp_alerts:
          - exp_labels: {alertname: HaloTokensSlow, host: d, kind: engine, job: engine/d}
            exp_annotations: {summary: "d generates below its bench figure"}
      - eval_time: 4s  # drifting since 2 s: not yet 5 s
        alertname: HaloStackDrift
        exp_alerts: []
      - eval_time: 8s
        alertname: HaloStackDrift
        exp_alerts:
          - exp_labels: {alertname: HaloStackDrift, host: f, profile: p, item: kernel package}
            exp_annotations: {summary: "f drifts from stack profile p: kernel package"}
"""


def png_rgb(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB bytes) of an 8-bit RGB or RGBA PNG such as chromium's screenshots."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6), (depth, color)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride, rows, previous = zlib.decompress(idat), width * channels, [], bytearray(width * channels)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up, corner = previous[x], previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 255
            elif kind == 2:
                line[x] = (line[x] + up) & 255
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[x] = (line[x] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        rows.append(bytes(b for i in range(0, stride, channels) for b in line[i:i + 3]))
        previous = line
    return width, height, rows


def plot_area(page: bytes, bare: bytes) -> tuple[int, int]:
    """
    (pixels in colour, pixels not white) of the report's screenshot below the last row the same page without its
    plots fills (the table, the heading): the plots' area. Colour: not white, grey or black (lines, dots, legend).
    """
    _, _, bare_rows = png_rgb(bare)
    top = max((y for y, row in enumerate(bare_rows) if any(b < 240 for b in row)), default=0) + 1
    _, _, rows = png_rgb(page)
    coloured = blank = 0
    for row in rows[top:]:
        for i in range(0, len(row), 3):
            pixel = row[i:i + 3]
            coloured += max(pixel) - min(pixel) > 60
            blank += min(pixel) >= 240
    return coloured, sum(len(row) // 3 for row in rows[top:]) - blank


def screenshot(html, shot) -> bytes:
    chromium = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    shot.unlink(missing_ok=True)
    subprocess.run(chromium + ["--window-size=1400,1600", f"--screenshot={shot}", html.as_uri()],
                   capture_output=True, timeout=120, check=True)
    return shot.read_bytes()


def query(network, mon, expr: str) -> list[dict]:
    url = f"http://{mon.address}:{PORT}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    out = network.run(["curl", "-s", "-m", "10", url], capture_output=True, text=True).stdout
    answer = json.loads(out)
    assert answer["status"] == "success", out[:500]
    return answer["data"]["result"]


def values(network, mon, expr: str) -> dict[tuple, float]:
    return {tuple(sorted(item["metric"].items())): float(item["value"][1]) for item in query(network, mon, expr)}


def wait(what: str, check, timeout: float = 60) -> float:
    started = time.monotonic()
    while True:
        if check():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.5)


def alerts(network, mon) -> list[dict]:
    out = network.run(["curl", "-s", "-m", "10", f"http://{mon.address}:{PORT}/api/v1/alerts"],
                      capture_output=True, text=True).stdout
    return json.loads(out)["data"]["alerts"]


def test_the_fleet_is_seen(network, tmp_path):
    model = write_tiny_llama(tmp_path / "tiny.gguf")
    gw, srv1, srv2, srv3, mon = boxes = network.boot(["gw", "srv1", "srv2", "srv3", "mon"])
    watched = {"halo_exporter_password": PASSWORD, "halo_textfile_interval_s": 5}
    serving = {**TIER_DATA, **watched, "halo_model": str(model), "halo_model_push": True, "halo_ctx": 512,
               "halo_api_key": KEY, "halo_metrics": True, "halo_bench_repetitions": 1}
    host_data = {
        "gw": {**TIER_DATA, **watched, "halo_serve": "none", "halo_bind": gw.address, "halo_gateway": True,
               "halo_gateway_bind": gw.address, "halo_gateway_check_inter_s": 1},
        **{box.name: {**serving, "halo_bind": box.address} for box in (srv1, srv2, srv3)},
        "mon": {**TIER_DATA, **watched, "halo_serve": "none", "halo_bind": mon.address, "halo_monitor": True,
                "halo_monitor_bind": mon.address, "halo_monitor_port": PORT, "halo_monitor_scrape_s": 1,
                "halo_alert_for_s": ALERT_FOR_S, "halo_textfile_interval_s": 5},
    }
    # The monitor host's user runs Debian's own Prometheus (the image has the packages, their services off).
    mon.ssh("systemctl enable --now prometheus.service")
    # And srv2's user runs Debian's node exporter on Debian's settings: the rollback must leave it so.
    srv2.ssh("systemctl enable --now prometheus-node-exporter.service")
    debian_config = mon.ssh("sha256sum /etc/prometheus/prometheus.yml").stdout
    description = network.write_inventory(tmp_path / "hosts.json", host_data=host_data)
    first = network.run_pyinfra(description, "deploys/full.py")
    assert first.returncode == 0, first.stderr[-4000:]
    # The key and the password are in no diff or log line, and only in root's 0600 files on the monitor.
    assert KEY not in first.stderr and PASSWORD not in first.stderr
    creds = mon.ssh("stat -c '%a %U %n' /etc/halofleet/prometheus/credentials/*").stdout.split("\n")
    assert creds and all(line.startswith("600 root ") for line in creds if line), creds
    assert PASSWORD not in srv1.ssh("cat /etc/halofleet/exporter-web.yml").stdout

    # Every target up, as the monitor's Prometheus sees it: 5 node exporters, 3 engines, the gateway's haproxy.
    def all_up() -> bool:
        ups = values(network, mon, "up")
        return len(ups) == 9 and all(value == 1 for value in ups.values())
    try:
        print(f"all 9 targets up after {wait('every target up', all_up):.1f} s")
    except AssertionError:
        out = network.run(["curl", "-s", f"http://{mon.address}:{PORT}/api/v1/targets"], capture_output=True,
                          text=True).stdout
        raise AssertionError([(t["labels"]["job"], t["health"], t["lastError"])
                              for t in json.loads(out)["data"]["activeTargets"]]) from None
    kinds = sorted(dict(key)["kind"] for key in values(network, mon, "up"))
    assert kinds == ["engine"] * 3 + ["haproxy"] + ["node"] * 5
    # The drm collector is on (no card in a container: it has nothing to report, but it ran without error).
    assert values(network, mon, 'node_scrape_collector_success{collector="drm"}')
    # node exporter answers nobody without the password, on the private address only.
    assert network.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://{srv1.address}:9100/metrics"],
                       capture_output=True, text=True).stdout == "401"
    assert srv1.ssh("curl -s -m 3 http://127.0.0.1:9100/metrics", check=False).returncode != 0
    # haproxy's exporter answers the monitor only.
    assert network.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://{gw.address}:8405/"],
                       capture_output=True, text=True).stdout == "403"

    # The engines' token counters rise after completions through the gateway.
    counted = 'sum by (host) (llamacpp:tokens_predicted_total{kind="engine"})'
    before = values(network, mon, counted)
    for _ in range(6):
        result = network.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "60", "-H", f"Authorization: Bearer {KEY}",
             "-H", "Content-Type: application/json", "-d", json.dumps({"model": "tiny", "prompt": "hi",
                                                                      "max_tokens": 2}),
             f"http://{gw.address}:8080/v1/completions"], capture_output=True, text=True)
        assert result.stdout == "200"
    wait("token counters rise", lambda: sum(values(network, mon, counted).values()) > sum(before.values()),
         timeout=20)

    # The textfile gauges: the engine's state as verify computes it, and a fault line raising the faults gauge.
    states = {dict(key)["state"]: value for key, value in
              values(network, mon, 'halofleet_engine_state{host="srv1"}').items()}
    assert states == {"live": 1, "pending": 0, "drift": 0, "not_running": 0, "not_deployed": 0}, states
    fault = 'halofleet_amdgpu_faults_total{host="srv1",fault="page_fault"}'
    assert list(values(network, mon, fault).values()) == [0.0]
    srv1.ssh(f"logger -t kernel '{FAULT}'")
    seconds = wait("faults gauge rises", lambda: list(values(network, mon, fault).values()) == [1.0], timeout=30)
    print(f"fault line counted after {seconds:.1f} s (timer every 5 s)")
    wait("faults alert", lambda: any(a["labels"]["alertname"] == "HaloAmdgpuFaults" and a["state"] == "firing"
                                     for a in alerts(network, mon)), timeout=15)

    # The bench figure: 'halofleet bench' on srv1 (drained at its gateway, which is in the run too) stores
    # llama-bench's JSON on the host; the collector's gauge is that file's tg figure, read back here with
    # halofleet's own parser of the same file.
    bench = network.run([sys.executable, "-m", "halofleet", "bench", "inventories/vm.py", "--limit", "srv1",
                         "--limit", "gw"],
                        cwd=ROOT, env={**os.environ, "HALOFLEET_VM_INVENTORY": str(description)},
                        capture_output=True, text=True, timeout=600)
    assert bench.returncode == 0, bench.stdout + bench.stderr[-3000:]
    stored = parse_bench_result(srv1.ssh("cat /var/lib/halofleet/bench.json").stdout)
    srv1.ssh("systemctl start halo-textfile.service")
    figure = 'halofleet_bench_tg_tokens_per_second{host="srv1"}'
    wait("bench gauge", lambda: bool(values(network, mon, figure)), timeout=15)
    assert list(values(network, mon, figure).values()) == [pytest.approx(stored.tg_tps)], stored

    # One engine stops: the engine-down alert fires within its for: window (plus a scrape and an evaluation).
    srv3.ssh("systemctl stop halo-serve.service")
    stopped = time.monotonic()

    def fired() -> bool:
        return any(a["labels"]["alertname"] == "HaloEngineDown" and a["labels"]["host"] == "srv3"
                   and a["state"] == "firing" for a in alerts(network, mon))
    wait("engine-down alert", fired, timeout=ALERT_FOR_S + 20)
    print(f"HaloEngineDown firing {time.monotonic() - stopped:.1f} s after the stop (for: {ALERT_FOR_S} s)")
    assert time.monotonic() - stopped >= ALERT_FOR_S
    # The gateway marks it DOWN (haproxy's own exporter: one series per state) and the backend alert fires too.
    down = 'haproxy_server_status{kind="haproxy",server="srv3",state="DOWN"}'
    wait("haproxy's DOWN state", lambda: list(values(network, mon, down).values()) == [1.0], timeout=20)
    wait("backend-down alert", lambda: any(a["labels"]["alertname"] == "HaloBackendDown" and a["state"] == "firing"
                                           and a["labels"].get("server") == "srv3" for a in alerts(network, mon)),
         timeout=ALERT_FOR_S + 20)
    srv3.ssh("systemctl start halo-serve.service")

    # The HTML report draws the last day from the monitor: inline SVG, no script, no remote resource; in chromium
    # the plots are visible (pixels of the series colours; none once the plots are cut out of the same page).
    html = tmp_path / "report.html"
    report = network.run([sys.executable, "-m", "halofleet", "report", "inventories/vm.py", "--html", str(html)],
                         cwd=ROOT, env={**os.environ, "HALOFLEET_VM_INVENTORY": str(description)},
                         capture_output=True, text=True, timeout=300)
    page = html.read_text()
    assert page.count('<figure class="plot"') == 4, (report.stderr[-2000:], page[-2000:])
    assert "<script" not in page and "src=" not in page and "href=" not in page
    for box in (srv1, srv2, srv3):
        assert f">{box.name}<" in page.split('data-title="tokens/s generated"')[1].split("</figure>")[0]
    artifacts = ROOT / "tests" / "nspawn" / "artifacts"
    artifacts.mkdir(exist_ok=True)
    shot = screenshot(html, artifacts / "monitor-report.png")
    bare = tmp_path / "bare.html"
    bare.write_text(page.split('<div id="plots">')[0] + "</body></html>")
    coloured, drawn = plot_area(shot, screenshot(bare, tmp_path / "bare.png"))
    print(f"report screenshot: below the table, {drawn} pixels drawn, {coloured} of them in colour")
    assert coloured > 500 and drawn > 10000, (coloured, drawn)

    # The rules as deployed pass promtool's own unit tests (alert windows from the options: for: 5 s).
    mon.ssh(f"cat > /tmp/rules_test.yml <<'EOF'\n{PROMTOOL_TEST}\nEOF")
    tested = mon.ssh("cd /tmp && promtool test rules rules_test.yml", check=False)
    assert tested.returncode == 0, tested.stdout + tested.stderr

    second = network.run_pyinfra(description, "deploys/full.py")
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.changed_ops == []
    # Debian's own Prometheus: its configuration untouched, its service as it was.
    assert mon.ssh("sha256sum /etc/prometheus/prometheus.yml").stdout == debian_config
    assert mon.ssh("systemctl is-active prometheus.service", check=False).stdout.strip() == "active"

    undone = network.run_pyinfra(description, "deploys/rollback.py")
    assert undone.returncode == 0, undone.stderr[-3000:]
    for box in boxes:
        left = box.ssh("ls -d /etc/halofleet /var/lib/halofleet/textfile /var/lib/halofleet-prometheus "
                       "/etc/systemd/system/halo-* /etc/systemd/system/prometheus-node-exporter.service.d "
                       "2>/dev/null; systemctl list-units --all --plain --no-legend 'halo-*' | grep -v not-found",
                       check=False).stdout.strip()
        assert left == "", f"{box.name}: {left}"
    # Node exporter as it was before halofleet's first touch: installed, off (the record of that removed too).
    for box in (gw, srv1, srv3, mon):
        state = box.ssh("systemctl is-active prometheus-node-exporter.service; systemctl is-enabled "
                        "prometheus-node-exporter.service; ls /var/backups/halofleet/original", check=False).stdout
        assert state.split()[:2] == ["inactive", "disabled"] and ".off" not in state, (box.name, state)
    argv = srv2.ssh("cat /proc/$(systemctl show -p MainPID --value prometheus-node-exporter.service)/cmdline "
                    "| tr '\\0' ' '").stdout
    assert argv.startswith("/usr/bin/prometheus-node-exporter") and "--collector.drm" not in argv, argv
    assert mon.ssh("sha256sum /etc/prometheus/prometheus.yml").stdout == debian_config
    again = network.run_pyinfra(description, "deploys/rollback.py")
    from halofleet.facts.halo_monitor import MonitorState
    facts = {box.name: box.ssh(MonitorState().command(), check=False).stdout for box in boxes}
    assert again.returncode == 0 and again.changed_ops == [], (again.changed_ops, facts)
