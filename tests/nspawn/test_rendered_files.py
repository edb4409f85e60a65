"""
The files halofleet renders, judged by the real programs of a Debian forky host (one container, booted once for the
module): `systemd-analyze verify` on every unit, podman's quadlet generator on the container units (the API key
file reaches `podman run`), `haproxy -c -dW` on the gateway's configurations, `nft -c` on the worker's table, and
`systemd-analyze security` exposure scores of our units as a ceiling that may not rise.
"""

from __future__ import annotations

import re
import shlex

import pytest

from halofleet.contract import paths
from halofleet.testing import nspawn
from tests.unit.test_guards_haproxy import ROUTES, TWO_GROUPS
from tests.unit.test_mutants_gateway import SERVING
from tests.unit.test_mutants_gateway import plan as gateway_plan
from tests.unit.test_mutants_serving import plan_for
from tests.unit.test_rpc import fleet, plans

pytestmark = pytest.mark.nspawn

KEY = "sk-rendered-files-0123456789"
SYSTEM = "/etc/systemd/system"
QUADLET_DIR = "/etc/containers/systemd"

# systemd 262 (forky) `systemd-analyze security --offline=true` overall exposure, measured on these files
# (0 is best, 10 worst). A change to a unit that raises one fails here: lower the figure when it improves.
# halo-serve.service (the distro engine) has only NoNewPrivileges, ProtectSystem, ProtectHome and PrivateTmp so far;
# the RPC worker, which runs the same ggml on the same GPU nodes, has the full set.
EXPOSURE_CEILING = {"halo-rpc.service": 3.7, "halo-serve.service": 8.3, "halo-rpc-firewall.service": 9.4}


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    problem = nspawn.available()
    if problem:
        pytest.skip(problem)
    nspawn.rootfs()
    with nspawn.Network(tmp_path_factory.mktemp("net")) as net:
        (container,) = net.boot(["files"])
        yield container


def put(box, path: str, text: str) -> None:
    target = box.directory / "merged" / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def run(box, command: str):
    return box.ssh(command, check=False)


@pytest.fixture(scope="module")
def rendered(box) -> dict[str, str]:
    """Every unit and file as the plans render them, written where the deploy writes them."""
    group = plans(fleet())
    worker, head = group["w1"].rpc, group["head"].serve
    files = {
        f"{SYSTEM}/halo-rpc.service": worker.unit, f"{SYSTEM}/halo-rpc-firewall.service": worker.firewall_unit,
        paths.RPC_NFT: worker.nft, f"{SYSTEM}/halo-serve.service": plan_for({"halo_api_key": KEY}).unit,
        "/root/head/halo-serve.service": head.unit,
        "/root/toolbox/halo-serve.container": plan_for({"halo_api_key": KEY, "halo_llama_source": "toolbox",
                                                        "halo_llama_backend": "hip"}).unit,
        "/root/vllm/halo-serve.container": plan_for({"halo_api_key": KEY, "halo_serve": "vllm",
                                                     "halo_model": "org/model"}).unit,
        "/root/haproxy/one.cfg": gateway_plan({"fleet": [("s1", SERVING)]}).config,
        "/root/haproxy/routed.cfg": gateway_plan(TWO_GROUPS, halo_gateway_models=ROUTES,
                                                 halo_gateway_groups=["a", "b"]).config,
    }
    for path, text in files.items():
        put(box, path, text)
    run(box, "systemctl daemon-reload")
    return files


def _verify_problems(box, unit_path: str) -> list[str]:
    result = run(box, f"systemd-analyze verify --man=no {shlex.quote(unit_path)} 2>&1")
    # Only lines about our files: the verifier also loads the rest of the boot transaction.
    ours = [line for line in result.stdout.splitlines() if re.search(r"halo|serve\.env|rpc\.nft", line)]
    return ours + ([f"exit {result.returncode}"] if result.returncode else [])


@pytest.mark.parametrize("unit", [f"{SYSTEM}/halo-rpc.service", f"{SYSTEM}/halo-rpc-firewall.service",
                                  f"{SYSTEM}/halo-serve.service"])
def test_systemd_accepts_every_unit_we_write(box, rendered, unit):
    assert _verify_problems(box, unit) == []


def test_the_rpc_heads_unit_is_accepted_with_its_wait_for_the_workers(box, rendered):
    put(box, f"{SYSTEM}/halo-serve.service", rendered["/root/head/halo-serve.service"])
    try:
        assert _verify_problems(box, f"{SYSTEM}/halo-serve.service") == []
    finally:
        put(box, f"{SYSTEM}/halo-serve.service", rendered[f"{SYSTEM}/halo-serve.service"])


@pytest.mark.parametrize("flavour", ["toolbox", "vllm"])
def test_quadlet_makes_a_valid_service_that_hands_the_key_file_to_podman(box, rendered, flavour):
    generated = run(box, f"QUADLET_UNIT_DIRS=/root/{flavour} /usr/libexec/podman/quadlet -dryrun 2>&1")
    assert generated.returncode == 0, generated.stdout
    service = generated.stdout
    assert "[X-Container]" in service or "[Service]" in service, service
    exec_start = next(line for line in service.splitlines() if line.startswith("ExecStart="))
    assert f"--env-file {paths.SERVE_ENV}" in exec_start, exec_start
    words = shlex.split(exec_start[len("ExecStart="):])
    for option in ("--security-opt=no-new-privileges", "--user 999:999", "--network host", "--group-add 44",
                   "--group-add 993", "--device /dev/dri", "--ulimit memlock=-1:-1"):
        assert option in " ".join(words), (option, exec_start)
    assert words[words.index("--security-opt", words.index("--security-opt=no-new-privileges")) + 1] == \
        "label=disable"
    assert KEY not in service
    body = service.split("---halo-serve.service---", 1)[-1]
    put(box, f"/root/generated/halo-serve-{flavour}.service", body)
    problems = _verify_problems(box, f"/root/generated/halo-serve-{flavour}.service")
    assert [line for line in problems if "Unknown section 'X-Container'" not in line] == []


@pytest.mark.parametrize("name", ["one.cfg", "routed.cfg"])
def test_haproxy_accepts_the_gateway_configuration_without_a_warning(box, rendered, name):
    result = run(box, f"haproxy -c -dW -f /root/haproxy/{name} 2>&1")
    assert result.returncode == 0, result.stdout
    assert "WARNING" not in result.stdout.upper() or "ALERT" in result.stdout, result.stdout


def test_nft_accepts_the_workers_table(box, rendered):
    result = run(box, f"nft -c -f {paths.RPC_NFT} 2>&1")
    assert result.returncode == 0, result.stdout


def exposure(box, unit_path: str) -> float:
    result = run(box, f"systemd-analyze security --offline=true --no-pager {shlex.quote(unit_path)} 2>&1")
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert match, result.stdout[-2000:]
    return float(match.group(1))


@pytest.mark.parametrize("unit", list(EXPOSURE_CEILING))
def test_the_exposure_of_our_units_does_not_rise(box, rendered, unit):
    found = exposure(box, f"{SYSTEM}/{unit}")
    assert found <= EXPOSURE_CEILING[unit], f"{unit}: exposure {found} above {EXPOSURE_CEILING[unit]}"
