"""
Seeing the fleet, pure parts: the monitor's targets and files from the inventory's data, node exporter's
exposure rule and basic auth, the alert rules from the options, haproxy's exporter frontend, the report's
pictures from a Prometheus answering on a local socket. (The nspawn test runs all of it on real hosts, with
promtool.)
"""

from __future__ import annotations

import http.server
import json

import bcrypt
import pytest

from halofleet.contract.config import ConfigError, HostRefused
from halofleet.fleet.gateway import plan_gateway
from halofleet.fleet.monitor import (
    RULES,
    check_monitoring,
    exporter_web_config,
    fleet_targets,
    monitor_source,
    plan_monitor,
    rules_yml,
)
from halofleet.models.http import Limits, Reads
from halofleet.models.specs import validate
from halofleet.testing.loopback import http_server
from halofleet.views import plots
from halofleet.views.report import render_report
from halofleet.views.verify import COLUMNS

KEY = "k" * 24
PASSWORD = "p" * 20
MONITOR = {"halo_serve": "none", "halo_monitor": True, "halo_monitor_bind": "10.9.0.9", "halo_bind": "10.9.0.9",
           "halo_exporter_password": PASSWORD}
SERVING = {"halo_bind": "10.9.0.2", "halo_api_key": KEY, "halo_model": "/srv/m.gguf", "halo_metrics": True,
           "halo_exporter_password": PASSWORD}


def config(name, data):
    return validate(name, data, serving=False)


def fleet():
    return [("mon", MONITOR), ("srv1", SERVING),
            ("srv2", {**SERVING, "halo_bind": "10.9.0.3", "halo_metrics": False, "halo_llama_args": ["--metrics"]}),
            ("quiet", {**SERVING, "halo_bind": "10.9.0.4", "halo_metrics": False}),
            ("gw", {"halo_serve": "none", "halo_gateway": True, "halo_gateway_bind": "10.9.0.1",
                    "halo_bind": "10.9.0.1", "halo_exporter_password": PASSWORD}),
            ("local", {"halo_serve": "none"})]


def test_every_host_is_a_node_target_engines_with_metrics_and_gateways_too():
    targets, warnings = fleet_targets("mon", fleet())
    found = {(t.kind, t.host): t.address for t in targets}
    assert found == {
        ("node", "mon"): "10.9.0.9:9100", ("node", "srv1"): "10.9.0.2:9100", ("node", "srv2"): "10.9.0.3:9100",
        ("node", "quiet"): "10.9.0.4:9100", ("node", "gw"): "10.9.0.1:9100",
        ("engine", "srv1"): "10.9.0.2:8080", ("engine", "srv2"): "10.9.0.3:8080",
        ("haproxy", "gw"): "10.9.0.1:8405",
    }
    # A loopback exporter on another host cannot be scraped: said, not silently skipped.
    assert warnings == ["local: node exporter listens on 127.0.0.1, which the monitor cannot reach "
                        "(set its halo_exporter_bind)"]


def test_the_monitor_files_carry_keys_in_credential_files_only():
    monitor_plan = plan_monitor(config("mon", MONITOR), fleet())
    text = monitor_plan.prometheus_yml
    assert KEY not in text and PASSWORD not in text
    document = json.loads(text.split("\n", 1)[1])  # after the managed-by comment: JSON, which YAML reads as is
    jobs = {job["job_name"]: job for job in document["scrape_configs"]}
    engine = jobs["engine/srv1"]
    assert engine["authorization"]["type"] == "Bearer"
    path = engine["authorization"]["credentials_file"]
    assert path.startswith("/run/credentials/halo-prometheus.service/halo_engine-srv1-")
    assert jobs["node/srv1"]["basic_auth"]["username"] == "halofleet"
    assert "authorization" not in jobs["haproxy/gw"] and "basic_auth" not in jobs["haproxy/gw"]
    secrets = sorted(set(monitor_plan.credentials.values()))
    assert secrets == [KEY, PASSWORD]
    for target in monitor_plan.targets:
        sd = json.loads(monitor_plan.sd_files[f"/etc/halofleet/prometheus/targets/{target.file_name}.json"])
        assert sd == [{"targets": [target.address], "labels": {"host": target.host, "kind": target.kind}}]
    assert "LoadCredential=halo:/etc/halofleet/prometheus/credentials" in monitor_plan.unit
    assert "--storage.tsdb.retention.time=15d" in monitor_plan.unit
    assert "--web.listen-address=10.9.0.9:9090" in monitor_plan.unit


def test_two_hosts_whose_names_differ_only_in_unsafe_characters_get_two_files():
    targets, _ = fleet_targets("mon", [("a/b", MONITOR | {"halo_monitor": False}), ("a_b", MONITOR)])
    names = {t.file_name for t in targets}
    assert len(names) == 2


def test_rules_take_their_windows_and_thresholds_from_the_options():
    mon = config("mon", {**MONITOR, "halo_alert_for_s": 7, "halo_alert_gtt_fraction": 0.8,
                         "halo_alert_fault_window_s": 60, "halo_alert_tps_fraction": 0.25})
    rules = {rule["alert"]: rule for rule in json.loads(rules_yml(mon).split("\n", 1)[1])["groups"][0]["rules"]}
    assert set(rules) == {rule.name for rule in RULES}
    assert rules["HaloEngineDown"] == {"alert": "HaloEngineDown", "expr": 'up{kind="engine"} == 0', "for": "7s",
                                       "annotations": {"summary": "engine on {{ $labels.host }} does not answer "
                                                                  "its /metrics"}}
    assert rules["HaloGttHigh"]["expr"].endswith("> 0.8")
    assert "[60s]" in rules["HaloAmdgpuFaults"]["expr"] and "for" not in rules["HaloAmdgpuFaults"]
    assert "* 0.25" in rules["HaloTokensSlow"]["expr"]


@pytest.mark.parametrize("name, data, key", [
    ("srv1", {**SERVING, "halo_exporter_password": None}, "halo_exporter_bind"),
    ("mon", {**MONITOR, "halo_monitor_bind": None}, "halo_monitor_bind"),
])
def test_preflight_refuses_an_open_exporter_and_a_monitor_without_an_address(name, data, key):
    with pytest.raises(ConfigError, match=key):
        check_monitoring(config(name, data), fleet())


def test_without_a_monitor_host_nothing_is_asked_of_the_exporter():
    check_monitoring(config("srv1", {**SERVING, "halo_exporter_password": None}), fleet()[1:])
    check_monitoring(config("srv1", {**SERVING, "halo_exporter_password": None,
                                     "halo_allow_unauthenticated": True}), fleet())


def test_the_exporter_password_hash_is_stable_per_host_and_checks():
    first, again = exporter_web_config("srv1", PASSWORD), exporter_web_config("srv1", PASSWORD)
    other = exporter_web_config("srv2", PASSWORD)
    assert first == again and first != other and PASSWORD not in first
    hashed = json.loads(first.split("\n", 1)[1])["basic_auth_users"]["halofleet"]
    assert bcrypt.checkpw(PASSWORD.encode(), hashed.encode())
    assert not bcrypt.checkpw(b"wrong-password-000000", hashed.encode())


def test_the_gateway_serves_its_exporter_to_the_monitor_only():
    gw = validate("gw", fleet()[4][1], serving=False)
    groups = {"fleet": [("srv1", SERVING)]}
    assert "prometheus-exporter" not in plan_gateway(gw, groups).config
    text = plan_gateway(gw, groups, metrics_source=monitor_source(fleet())).config
    assert "frontend halo_metrics\n    # haproxy's built-in" in text
    assert "bind 10.9.0.1:8405" in text and "http-request deny unless { src 10.9.0.9 }" in text


def test_a_monitor_with_nothing_to_scrape_is_refused():
    with pytest.raises(HostRefused):
        plan_monitor(config("mon", {**MONITOR, "halo_bind": "127.0.0.1", "halo_exporter_bind": "127.0.0.2"}), [])


# -- the report's pictures ----------------------------------------------------------------------------------------

class Prometheus(http.server.BaseHTTPRequestHandler):
    answer = b""

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(type(self).answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def prometheus():
    with http_server(Prometheus) as (server, _):
        yield server


def hosts_for(server):
    return [("mon", {**MONITOR, "halo_monitor_bind": "127.0.0.1", "halo_monitor_port": server.server_port})]


def test_the_report_draws_each_panel_from_the_monitor(prometheus):
    now = 1_800_000_000.0
    Prometheus.answer = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"host": "srv1"}, "values": [[now - 600, "1.5"], [now, "2.5"]]},
        {"metric": {"host": "srv2"}, "values": [[now - 600, "0"], [now, "NaN"], ["x", "y"]]}]}}).encode()
    history = plots.fleet_history(hosts_for(prometheus), now=now)
    assert history.problem is None and [title for title, _ in history.panels] == [t for t, _ in plots.PANELS]
    for _, picture in history.panels:
        assert picture.startswith("<svg") and "<script" not in picture and "srv1" in picture
    page = render_report([{column: "-" for column in COLUMNS} | {"host": "srv1", "status": "ok"}], "html", "t",
                         history=history)
    assert page.count('<figure class="plot"') == 4 and "<script" not in page


def test_without_a_monitor_or_with_a_bad_answer_the_report_is_the_table_alone(prometheus):
    assert plots.fleet_history([("srv1", SERVING)]).problem == "no monitor host (halo_monitor) in the inventory"
    for answer in (b"[" * 100 + b"]" * 100, b"[" * 100, b'{"status": "error"}'):  # too deep, not JSON, an error
        Prometheus.answer = answer
        history = plots.fleet_history(hosts_for(prometheus), reads=Reads(Limits(request_s=5, host_s=5)))
        assert history.panels == [] and "could not be read" in history.problem, answer
    Prometheus.answer = b"x" * (plots.ANSWER_BYTES + 1)  # larger than the answer bound
    history = plots.fleet_history(hosts_for(prometheus))
    assert history.panels == [] and "larger than" in history.problem
    page = render_report([{column: "-" for column in COLUMNS} | {"host": "srv1", "status": "ok"}], "html", "t",
                         history=history)
    assert "<figure" not in page and "No pictures:" in page


def test_halofleet_check_says_it_without_a_host(tmp_path):
    from halofleet.views.check import check

    inventory = tmp_path / "inv.py"
    inventory.write_text(
        "hosts = [\n"
        f"    ('mon', {MONITOR | {'halo_monitor_bind': None}!r}),\n"
        f"    ('srv1', {SERVING | {'halo_exporter_password': None}!r}),\n"
        "    ('local', {'halo_serve': 'none'}),\n"
        "]\n")
    findings = {(f.host, f.key, f.level): f.message for f in check(str(inventory)).findings}
    assert "node exporter beyond loopback needs a password" in findings[("srv1", "halo_exporter_bind", "error")]
    assert "must be set with halo_monitor" in findings[("mon", "halo_monitor_bind", "error")]


# Lines as amdgpu logged them on Strix Halo boxes (shared/captures/strix-halo.md §5a, §5c, §5d), one of another chip.
KERNEL_LINES = """\
amdgpu 0000:c5:00.0: amdgpu: MES failed to respond to msg=REMOVE_QUEUE
amdgpu 0000:c5:00.0: amdgpu: failed to remove hardware queue from MES, doorbell=0x1002
amdgpu 0000:c5:00.0: amdgpu: MES might be in unrecoverable state, issue a GPU reset
amdgpu 0000:c5:00.0: amdgpu: GPU reset begin!. Source:  3
amdgpu 0000:c5:00.0: amdgpu: MODE2 reset
amdgpu 0000:c5:00.0: amdgpu: [gfxhub] page fault (src_id:0 ring:24 vmid:8 pasid:32771)
amdgpu 0000:c5:00.0: amdgpu: GCVM_L2_PROTECTION_FAULT_STATUS:0x00801031
amdgpu 0000:c5:00.0: amdgpu: MES failed to respond to msg=SUSPEND
amdgpu 0000:c5:00.0: amdgpu: GPU reset begin!
amdgpu 0000:c5:00.0: amdgpu: [gfxhub] page fault (src_id:0 ring:153 vmid:8 pasid:32771)
[drm:amdgpu_job_timedout [amdgpu]] *ERROR* ring gfx_0.0.0 timeout, signaled seq=1, emitted seq=2
"""
BENCH_JSON = """{"model": "/m.gguf", "model_file_bytes": 1, "llama_bench": [
  {
    "n_prompt": 512,
    "n_gen": 0,
    "avg_ts": 1484.687125,
    "stddev_ts": 3.1
  },
  {
    "n_prompt": 0,
    "n_gen": 128,
    "avg_ts": 137.113427,
    "stddev_ts": 0.2
  }
]}
"""


def test_the_textfile_script_counts_the_captured_faults_and_reads_the_bench_figure(tmp_path):
    import os
    import subprocess

    from halofleet.box.bench import parse_bench_result
    from halofleet.box.exporter import GAUGES
    from halofleet.contract.templating import render

    fake = tmp_path / "bin"
    fake.mkdir()
    (tmp_path / "kernel.log").write_text(KERNEL_LINES)
    # journalctl as the script calls it: the matches it asks for are checked, the lines are the captures.
    (fake / "journalctl").write_text(
        "#!/bin/sh\ncase \"$*\" in *'_TRANSPORT=kernel + SYSLOG_IDENTIFIER=kernel'*) ;; *) exit 1;; esac\n"
        f"cat {tmp_path / 'kernel.log'}\n")
    (fake / "journalctl").chmod(0o755)
    (tmp_path / "bench.json").write_text(BENCH_JSON)
    out = tmp_path / "out" / "halofleet.prom"
    script = render("halo-textfile.sh.j2", output=str(out), gauges="'" + " ".join(GAUGES) + "'",
                    journal_lines=1000, journal_bytes=1 << 20, gtt_planned_bytes=128 << 30, engine=None,
                    bench_path=str(tmp_path / "bench.json"), stack=None, cmdline="/proc/cmdline")
    run = subprocess.run(["sh", "-c", script], env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"},
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    gauges = dict(line.rsplit(" ", 1) for line in out.read_text().splitlines() if not line.startswith("#"))
    assert {key: gauges[f'halofleet_amdgpu_faults_total{{fault="{key}"}}'] for key in
            ("page_fault", "mes_timeout", "gpu_reset", "ring_timeout")} == \
        {"page_fault": "2", "mes_timeout": "2", "gpu_reset": "2", "ring_timeout": "1"}
    assert gauges["halofleet_kernel_log_lines_read"] == "11"
    assert gauges["halofleet_gtt_planned_bytes"] == str(128 << 30)
    assert float(gauges["halofleet_bench_tg_tokens_per_second"]) == parse_bench_result(BENCH_JSON).tg_tps
    assert gauges['halofleet_engine_state{state="not_deployed"}'] == "1"
    assert list(out.parent.iterdir()) == [out]  # the temporary file is gone: renamed into place


STACK_PROFILE = {"name": "site-a", "source": "tests/unit/test_monitor.py (constructed)",
                 "kernel_package": "linux-image-7.1.3-halo", "kernel_release": "7.1.3-halo",
                 "firmware_package": "firmware-amd-graphics", "firmware_min": "20260309"}


@pytest.mark.parametrize("cmdline, statuses, holds", [
    # converged: the profile's kernel booted, both packages installed and held
    ("BOOT_IMAGE=/vmlinuz-7.1.3-halo ro quiet", {"linux-image-7.1.3-halo": "hi ", "firmware-amd-graphics": "hi "},
     ["linux-image-7.1.3-halo", "firmware-amd-graphics"]),
    # another kernel booted (GRUB's path prefix), firmware unheld, kernel package removed (config files left)
    ("BOOT_IMAGE=(hd0,gpt2)/boot/vmlinuz-6.12.57+deb13-amd64 root=UUID=x",
     {"linux-image-7.1.3-halo": "rc ", "firmware-amd-graphics": "ii "}, ["linux-image-7.1.3-halo"]),
    # no BOOT_IMAGE (a container, an EFI stub): uname -r decides; a hold on a package that is not installed
    ("root=/dev/vda1 *", {"firmware-amd-graphics": "hi "}, ["firmware-amd-graphics", "linux-image-7.1.3-halo"]),
    # a BOOT_IMAGE that is not a vmlinuz-<release> is passed over, as the probe's reading does
    ("BOOT_IMAGE=/boot/bzImage BOOT_IMAGE=/vmlinuz-7.1.3-halo", {}, []),
])
def test_the_stack_gauge_on_the_host_says_what_verify_says(tmp_path, cmdline, statuses, holds):
    """The collector's shell, run on faked dpkg/apt-mark/uname/cmdline, against box.stack.drift on the same facts."""
    import os
    import subprocess
    from types import SimpleNamespace

    from halofleet.box.exporter import textfile_script
    from halofleet.box.stack import drift
    from halofleet.contract.stacks import site_profile

    profile = site_profile(STACK_PROFILE)
    fake = tmp_path / "bin"
    fake.mkdir()
    table = "".join(f"{name}) printf '%s' '{status}';;\n" for name, status in statuses.items())
    (fake / "dpkg-query").write_text(f'#!/bin/sh\nfor last; do :; done\ncase "$last" in\n{table}*) exit 1;;\nesac\n')
    (fake / "apt-mark").write_text("#!/bin/sh\n[ \"$1\" = showhold ] || exit 1\n" +
                                   "".join(f"echo {name}\n" for name in holds))
    (fake / "uname").write_text("#!/bin/sh\necho 6.1.0-container\n")
    for tool in fake.iterdir():
        tool.chmod(0o755)
    (tmp_path / "cmdline").write_text(cmdline + "\n")
    out = tmp_path / "out" / "halofleet.prom"
    plan = SimpleNamespace(config=SimpleNamespace(stack=STACK_PROFILE), gtt=None, serve=None)
    script = textfile_script(plan, gauges=("stack",), cmdline=str(tmp_path / "cmdline")).replace(
        "OUT=/var/lib/halofleet/textfile/halofleet.prom", f"OUT={out}")
    run = subprocess.run(["sh", "-c", script], env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"},
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    gauge = {line.split('item="')[1].split('"')[0]: int(line.rsplit(" ", 1)[1])
             for line in out.read_text().splitlines() if line.startswith("halofleet_stack_drift{")}
    assert all('profile="site-a"' in line for line in out.read_text().splitlines()
               if line.startswith("halofleet_stack_drift{"))
    probe = {"live_cmdline": cmdline.split(), "os": {"kernel": "6.1.0-container"},
             "stack": {"packages": {name: {"version": "1", "installed": status[1] == "i"}
                                    for name, status in statuses.items()}, "held": holds}}
    verify = {item.item: int(item.ok is False) for item in drift(profile, probe) if item.item in gauge}
    assert set(gauge) == {"kernel", "kernel package", "firmware package"}
    assert gauge == verify
