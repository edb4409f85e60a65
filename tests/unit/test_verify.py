"""verify_row: one host's live state judged against its own plan."""

from halofleet.facts.probe import parse_probe
from halofleet.facts.halo_serve import parse_serve_health
from halofleet.testing.fake import probe_output

DATA = {"halo_allow_non_strix_halo": True, "halo_model": "/srv/models/tiny.gguf", "halo_llama_backend": "cpu"}
LIVE = "BOOT_IMAGE=/vmlinuz ro quiet amd_iommu=off ttm.pages_limit=1835008 amdgpu.gttsize=7168"
HEALTHY = ["@engine llama-server distro", "@active active", "@health 200", "@models 200", "@completion 200 0.41",
           "@tokens 2"]


def row(probe_lines, health_lines=HEALTHY, data=DATA):
    from halofleet.views.verify import verify_row

    return verify_row("h", data, parse_probe(probe_lines), parse_serve_health(health_lines))


def test_converged_and_serving_host_is_ok():
    result = row(probe_output(cmdline=LIVE))
    assert (result["cmdline"], result["ttm GiB"], result["status"]) == ("ok", "7", "ok")
    assert result["serving"] == "llama-server active, /health 200"
    assert result["completion"] == "2 tokens in 0.41 s"


def test_ttm_not_loaded_on_a_host_without_gpu_is_not_held_against_it():
    lines = [line for line in probe_output(cmdline=LIVE) if not line.startswith("ttm_pages_limit")]
    result = row(lines)
    assert result["ttm GiB"] == "not loaded" and result["status"] == "ok"


def test_strix_halo_with_ttm_not_loaded_is_not_converged():
    lines = [line for line in probe_output(cmdline=LIVE, gfx1151=True) if not line.startswith("ttm_pages_limit")]
    assert row(lines)["status"] == "not converged"


def test_cmdline_not_live_yet():
    assert row(probe_output())["status"] == "not converged"


def test_engine_answering_health_but_no_completion_is_unhealthy():
    health = HEALTHY[:4] + ["@completion 500 0.01", "@tokens "]
    result = row(probe_output(cmdline=LIVE), health)
    assert result["status"] == "unhealthy" and result["completion"] == "failed (HTTP 500)"


def test_unreachable_host():
    from halofleet.views.verify import verify_row

    assert verify_row("h", DATA, None)["status"] == "unreachable"


def test_live_probe_carries_health_and_bench_in_the_same_round_trip():
    from halofleet.facts.probe import PROBE_MARK, HostProbe

    command = HostProbe().command(live=True)
    assert f"{PROBE_MARK}health" in command and f"{PROBE_MARK}bench" in command
    assert f"{PROBE_MARK}health" not in HostProbe().command()
    lines = [*probe_output(cmdline=LIVE), f"{PROBE_MARK}health", *HEALTHY, f"{PROBE_MARK}bench"]
    probe = parse_probe(lines)
    assert probe["health"]["healthy"] is True and probe["bench"] is None
    assert "health" not in parse_probe(probe_output(cmdline=LIVE))


def test_live_probe_runs_in_a_real_shell_on_a_host_without_halofleet():
    import subprocess

    from halofleet.facts.probe import HostProbe

    output = subprocess.run(["sh", "-c", HostProbe().command(live=True)], capture_output=True, text=True, timeout=60)
    assert output.returncode == 0
    probe = parse_probe(output.stdout.splitlines())
    assert probe["health"]["configured"] is False and probe["health"]["healthy"] is False
    assert probe["memtotal_kib"] > 0


def test_a_gateway_row_shows_each_backend_as_haproxy_sees_it():
    from halofleet.views.report import cell_class

    stat = ["@@halofleet-probe gateway", "@active active", "@stat",
            "# pxname,svname,qcur,status,check_status", "halo_fleet,FRONTEND,,OPEN,", "halo_fleet,srv1,0,UP,L7OK",
            "halo_fleet,srv2,0,DOWN,L4CON", "halo_fleet,BACKEND,0,UP,"]
    result = row(probe_output(cmdline=LIVE) + stat)
    assert result["gateway"] == "fleet/srv1 UP, fleet/srv2 DOWN"
    assert cell_class("gateway", result["gateway"]) == "bad"
    assert row(probe_output(cmdline=LIVE))["gateway"] == "-"  # no haproxy of ours: nothing to show


def test_models_are_what_the_engine_answers():
    from halofleet.views.verify import verify_row

    health = parse_serve_health(HEALTHY + ["@ids tiny org/model-7b:q4 bad$name "])
    assert health["ids"] == ["tiny", "org/model-7b:q4"]  # a name outside the grammar is dropped, not shown
    assert "ids" not in parse_serve_health(HEALTHY)  # an older probe: no column value rather than a wrong one
    row = verify_row("h", DATA, parse_probe([]), health)
    assert row["models"] == "tiny, org/model-7b:q4"
    assert verify_row("h", DATA, parse_probe([]), parse_serve_health(HEALTHY + ["@ids "]))["models"] == "none"


def test_a_gateway_row_shows_its_routes_next_to_what_the_backends_serve():
    from pyinfra.api import Inventory

    from halofleet.views.verify import routes_cell

    key = "r" * 20
    named = {"halo_model": "/m.gguf", "halo_model_alias": "small", "halo_bind": "10.0.0.2", "halo_api_key": key}
    unnamed = {"halo_model": "/m.gguf", "halo_bind": "10.0.0.3", "halo_api_key": key}
    gateway = {"halo_serve": "none", "halo_gateway": True, "halo_gateway_bind": "127.0.0.1",
               "halo_gateway_groups": ["a", "b"], "halo_gateway_models": {"small": "a", "big": "a", "any": "b"}}
    inventory = Inventory((["gw", "s1", "s2"], {}), gw=([("gw", gateway)], {}), a=([("s1", named)], {}),
                          b=([("s2", unnamed)], {}))
    row = {"host": "gw", "gateway": "a/s1 UP, b/s2 UP", "status": "ok"}
    routes_cell(row, gateway, inventory, {"s1": ["small"], "s2": ["/m.gguf"]})
    assert row["gateway"] == ("a/s1 UP, b/s2 UP; routes: any -> b (s2); big -> a (served by none); "
                              "small -> a (s1)")
    assert row["status"] == "unhealthy: the gateway routes big but no backend serves it"
    row = {"host": "s1", "gateway": "-", "status": "ok"}
    routes_cell(row, named, inventory, {})
    assert row == {"host": "s1", "gateway": "-", "status": "ok"}  # not a gateway: nothing added
