"""
The security lines of the units halofleet renders, read back key by key from the rendered text (a line dropped,
emptied or changed fails here): the API key of every engine flavour, the hardening of the engine and of the RPC
worker, and the firewall unit's load/reload/stop. The real tools (systemd-analyze verify/security, quadlet) read the
same files in tests/nspawn/test_rendered_files.py.
"""

from __future__ import annotations

import pytest

from halofleet.contract import paths, policy
from halofleet.contract.templating import sha256_text

from .test_mutants_serving import plan_for
from .test_rpc import fleet, plans

KEY = "sk-guard-0123456789abcdef"


def unit_settings(text: str) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values in order]}} of a systemd/Quadlet unit (comments and blank lines skipped)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"setting outside a section: {raw!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a Key=Value line: {raw!r}"
        current.setdefault(key, []).append(value)
    return sections


def only(settings: dict[str, list[str]], key: str) -> str:
    values = settings.get(key)
    assert values is not None and len(values) == 1, (key, values)
    return values[0]


def env_file_settings(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            found[name] = value
    return found


# -- the API key reaches every engine ----------------------------------------------------------------------------

ENGINES = {
    "distro llama-server": ({}, "Service", "LLAMA_API_KEY"),
    "toolbox llama-server (vulkan)": ({"halo_llama_source": "toolbox", "halo_llama_backend": "vulkan"},
                                      "Container", "LLAMA_API_KEY"),
    "toolbox llama-server (hip)": ({"halo_llama_source": "toolbox", "halo_llama_backend": "hip"},
                                   "Container", "LLAMA_API_KEY"),
    "vLLM": ({"halo_serve": "vllm", "halo_model": "org/model"}, "Container", "VLLM_API_KEY"),
}


@pytest.mark.parametrize("engine", list(ENGINES))
def test_every_engine_reads_its_api_key_from_the_root_only_environment_file(engine):
    data, section, variable = ENGINES[engine]
    plan = plan_for({"halo_api_key": KEY, **data})
    settings = unit_settings(plan.unit)
    assert only(settings[section], "EnvironmentFile") == paths.SERVE_ENV == "/etc/halofleet/serve.env"
    # The engine's own variable (llama-server --api-key, vllm serve --api-key): nothing else in the file.
    assert env_file_settings(plan.env) == {variable: KEY}
    assert policy.API_KEY_ENV[plan.engine] == variable
    # Never in the unit itself (world-readable) nor on the command line.
    assert KEY not in plan.unit and KEY not in plan.conf
    # The key file is watched: a new key restarts the engine (the unit's text does not change with it).
    other = plan_for({"halo_api_key": "sk-other-0123456789abcdef", **data})
    assert other.unit == plan.unit and sha256_text(other.env) != sha256_text(plan.env)


def test_without_a_key_the_environment_file_sets_nothing():
    plan = plan_for()
    assert env_file_settings(plan.env) == {}
    assert only(unit_settings(plan.unit)["Service"], "EnvironmentFile") == paths.SERVE_ENV


# -- the engine's own hardening ----------------------------------------------------------------------------------

DISTRO_SERVICE = {
    "Type": "exec", "User": "halo", "Group": "halo", "SupplementaryGroups": "video render",
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
    "KillMode": "control-group", "Restart": "on-failure", "MemorySwapMax": "0", "MemoryMax": "11G",
    "LimitMEMLOCK": "infinity", "TimeoutStopSec": "30", "RestartSec": "10", "TimeoutStartSec": "900",
}


def test_the_distro_engine_unit_key_by_key():
    settings = unit_settings(plan_for().unit)
    service = settings["Service"]
    for key, value in DISTRO_SERVICE.items():
        assert only(service, key) == value, key
    unit = settings["Unit"]
    # A model that cannot load fails three times in ten minutes, then stays failed.
    assert (only(unit, "StartLimitIntervalSec"), only(unit, "StartLimitBurst")) == ("600", "3")
    assert only(unit, "After") == "network-online.target" and only(unit, "Wants") == "network-online.target"
    assert only(settings["Install"], "WantedBy") == "multi-user.target"
    assert service["Environment"] == ["LLAMA_ARG_LOAD_MODE=none", "LLAMA_ARG_NO_MMAP=1"]
    assert only(service, "ExecStartPost") == (
        "/bin/sh -c 'until curl -fsS -o /dev/null --max-time 5 http://127.0.0.1:8080/health; do kill -0 $$MAINPID "
        "2>/dev/null || exit 1; sleep 2; done'")


@pytest.mark.parametrize("data", [{"halo_llama_source": "toolbox", "halo_llama_backend": "hip"},
                                  {"halo_serve": "vllm", "halo_model": "org/model"}])
def test_the_container_unit_key_by_key(data):
    settings = unit_settings(plan_for(data).unit)
    container, service = settings["Container"], settings["Service"]
    for key, value in {"ContainerName": "halo-serve", "Network": "host", "User": "999", "Group": "999",
                       "NoNewPrivileges": "true", "SecurityLabelDisable": "true", "Ulimit": "memlock=-1:-1",
                       "StopTimeout": "30", "SeccompProfile": "unconfined"}.items():
        assert only(container, key) == value, key
    assert container["GroupAdd"] == ["44", "993"]
    assert container["AddDevice"] == ["/dev/dri", "/dev/kfd"]
    for key, value in {"Restart": "on-failure", "RestartSec": "10", "MemorySwapMax": "0", "MemoryMax": "11G",
                       "LimitMEMLOCK": "infinity", "TimeoutStartSec": "900"}.items():
        assert only(service, key) == value, key
    assert (only(settings["Unit"], "StartLimitIntervalSec"), only(settings["Unit"], "StartLimitBurst")) == \
        ("600", "3")
    assert only(settings["Install"], "WantedBy") == "multi-user.target"
    assert only(settings["Unit"], "After") == "network-online.target"
    assert only(settings["Unit"], "Wants") == "network-online.target"
    # Started means answering /health (podman's own start returns at once); an engine that dies meanwhile fails it.
    assert only(service, "ExecStartPost") == (
        "/bin/sh -c 'until curl -fsS -o /dev/null --max-time 5 http://127.0.0.1:8080/health; do kill -0 $$MAINPID "
        "2>/dev/null || exit 1; sleep 2; done'")


def test_vulkan_toolbox_has_no_seccomp_exception_and_no_kfd():
    container = unit_settings(plan_for({"halo_llama_source": "toolbox", "halo_llama_backend": "vulkan"}).unit)[
        "Container"]
    assert "SeccompProfile" not in container and container["AddDevice"] == ["/dev/dri"]
    assert "PodmanArgs" not in container


# -- the RPC worker ----------------------------------------------------------------------------------------------

RPC_SERVICE = {
    "Type": "exec", "User": "halo", "Group": "halo", "SupplementaryGroups": "video render",
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
    "ReadWritePaths": "-/var/lib/halofleet/rpc-cache", "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes", "ProtectControlGroups": "yes", "ProtectHostname": "yes",
    "RestrictNamespaces": "yes", "RestrictRealtime": "yes", "RestrictSUIDSGID": "yes", "LockPersonality": "yes",
    "CapabilityBoundingSet": "", "AmbientCapabilities": "",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX AF_NETLINK", "SystemCallArchitectures": "native",
    "Restart": "on-failure", "RestartSec": "10", "KillMode": "control-group", "TimeoutStopSec": "30",
    "TimeoutStartSec": "120", "LimitMEMLOCK": "infinity", "MemorySwapMax": "0", "MemoryMax": "12G",
    "Environment": "LLAMA_CACHE=/var/lib/halofleet/rpc-cache",
}


def test_the_rpc_worker_unit_key_by_key():
    from halofleet.fleet import rpc
    from halofleet.models.specs import validate

    hosts = fleet()
    worker = validate("w1", hosts["w1"])
    head = validate("head", hosts["head"])
    unit, _, _ = rpc.worker_files(worker, head, 12)
    settings = unit_settings(unit)
    service = settings["Service"]
    for key, value in RPC_SERVICE.items():
        assert only(service, key) == value, key
    # Unauthenticated RPC: never up without the firewall that lets only the head in.
    assert only(settings["Unit"], "Requires") == "halo-rpc-firewall.service"
    assert only(settings["Unit"], "After") == "halo-rpc-firewall.service network-online.target"
    assert only(settings["Unit"], "Wants") == "network-online.target"
    # Started means listening on 10.0.0.2:50052 (0200000A:C384 in state 0A, read from /proc: no connection needed).
    assert only(service, "ExecStartPost") == (
        "/bin/sh -c 'until grep -Eq \"^ *[0-9]+: 0200000A:C384 [0-9A-F]+:0000 0A \" /proc/net/tcp; do kill -0 "
        "$$MAINPID 2>/dev/null || exit 1; sleep 1; done'")
    assert only(service, "ExecStart") == \
        "/usr/libexec/x86_64-linux-gnu/llama/bin/ggml-rpc-server -H 10.0.0.2 -p 50052"
    assert (only(settings["Unit"], "StartLimitIntervalSec"), only(settings["Unit"], "StartLimitBurst")) == \
        ("600", "3")
    assert only(settings["Install"], "WantedBy") == "multi-user.target"
    # No device restriction: the GPU nodes stay usable (as for the engine).
    assert not {"PrivateDevices", "DevicePolicy", "ProtectClock", "DeviceAllow"} & set(service)


def test_the_rpc_firewall_unit_key_by_key():
    firewall = plans(fleet())["w1"].rpc.firewall_unit
    settings = unit_settings(firewall)
    unit, service = settings["Unit"], settings["Service"]
    assert only(unit, "DefaultDependencies") == "no"
    assert only(unit, "Wants") == "network-pre.target"
    assert only(unit, "Before") == "network-pre.target halo-rpc.service shutdown.target"
    assert only(unit, "Conflicts") == "shutdown.target"
    assert only(unit, "After") == "nftables.service" and only(unit, "PartOf") == "nftables.service"
    assert only(unit, "ReloadPropagatedFrom") == "nftables.service"
    assert (only(service, "Type"), only(service, "RemainAfterExit")) == ("oneshot", "yes")
    # Start and reload load the file (a new head address is live after a reload); stop deletes our table only.
    assert only(service, "ExecStart") == only(service, "ExecReload") == "/usr/sbin/nft -f /etc/halofleet/rpc.nft"
    assert only(service, "ExecStop") == "-/usr/sbin/nft delete table inet halofleet_rpc"
    assert only(settings["Install"], "WantedBy") == "multi-user.target"


def test_the_head_waits_for_each_worker_and_names_their_digests():
    group = plans(fleet())
    settings = unit_settings(group["head"].serve.unit)
    pre = only(settings["Service"], "ExecStartPre")
    assert "for ep in 10.0.0.2/50052 10.0.0.3/50060; do" in pre and "/dev/tcp/$$ep" in pre
    comments = [line for line in group["head"].serve.unit.splitlines() if line.startswith("# RPC worker ")]
    assert comments == [f"# RPC worker w1 on 10.0.0.2:50052: sha256 {group['w1'].rpc.digest}",
                        f"# RPC worker w2 on 10.0.0.3:50060: sha256 {group['w2'].rpc.digest}"]
