"""
llama.cpp RPC groups without a host: the keys and their refusals, the group rules across hosts' data, the worker's
unit and nft file, the head's --rpc, restart decisions, and what verify and the report make of a group.
"""

from __future__ import annotations

import math

import pytest

from halofleet.box.plan import build_plan
from halofleet.contract import paths, policy
from halofleet.contract.config import ConfigError, HostRefused
from halofleet.contract.templating import sha256_text
from halofleet.facts.probe import parse_probe
from halofleet.facts.halo_rpc import parse_rpc_log
from halofleet.fleet import rpc
from halofleet.models.specs import validate
from halofleet.testing.fake import probe_output
from halofleet.views.report import render_report, rpc_groups
from halofleet.views.verify import COLUMNS

from .test_hostile import systemd_words

BASE = {"halo_allow_non_strix_halo": True, "halo_llama_backend": "cpu", "halo_boot": "external"}
HEAD = {**BASE, "halo_model": "/srv/models/tiny.gguf", "halo_rpc_address": "10.0.0.1",
        "halo_rpc_workers": ["w1", "w2"]}
W1 = {**BASE, "halo_serve": "rpc-worker", "halo_rpc_address": "10.0.0.2"}
W2 = {**BASE, "halo_serve": "rpc-worker", "halo_rpc_address": "10.0.0.3", "halo_rpc_port": 50060}


def fleet(**changes: dict) -> dict[str, dict]:
    hosts = {"head": dict(HEAD), "w1": dict(W1), "w2": dict(W2)}
    for name, data in changes.items():
        hosts[name] = {**hosts.get(name, BASE), **data}
    return hosts


def probe(**kwargs) -> dict:
    return parse_probe(probe_output(**kwargs))


def plans(hosts: dict[str, dict], probes: dict[str, dict] | None = None) -> dict:
    """Every host's plan as the deploy builds them: workers first, then heads with their workers' plans."""
    probes = probes or {}
    built: dict = {}
    for name, data in hosts.items():
        if data.get("halo_serve") == "rpc-worker":
            built[name] = build_plan(name, data, probes.get(name) or probe(), fleet=hosts)
    for name, data in hosts.items():
        if name not in built:
            built[name] = build_plan(name, data, probes.get(name) or probe(), fleet=hosts, worker_plans=built)
    return built


# -- the keys -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("address", ["10.1.2.3", "172.31.255.254", "192.168.0.9", "127.0.0.1", "fd12:3456::7",
                                     "::1"])
def test_private_and_loopback_addresses_are_accepted(address):
    assert validate("w", {**W1, "halo_rpc_address": address}).rpc_address == address


@pytest.mark.parametrize("address, why", [
    ("0.0.0.0", "never 0.0.0.0 or :: (all interfaces): llama.cpp's RPC server is unauthenticated upstream"),
    ("::", "never 0.0.0.0 or :: (all interfaces)"),
    ("8.8.8.8", "must be a private address (10/8, 172.16/12, 192.168/16, fc00::/7 ULA) or loopback"),
    ("172.32.0.1", "must be a private address"),
    ("100.64.0.1", "must be a private address"),  # carrier-grade NAT: shared, not private to this link
    ("192.0.2.1", "must be a private address"),  # documentation range (ipaddress calls it private)
    ("fe80::1", "must be a private address"),
    ("2001:db8::1", "must be a private address"),
    ("10.0.0.2 ", "must be the IP address of this host on the private link"),
    ("fe80::1%eth0", "must be the IP address of this host on the private link"),
    ("10.0.0.2:50052", "must be the IP address of this host on the private link"),
    ("eth0", "must be the IP address of this host on the private link"),
])
def test_a_worker_bind_beyond_the_private_link_is_refused_saying_why(address, why):
    with pytest.raises(ConfigError, match="halo_rpc_address=") as error:
        validate("w", {**W1, "halo_rpc_address": address})
    assert why in str(error.value)


@pytest.mark.parametrize("device", ["Vulkan0", "ROCm0", "CPU", "Vulkan0,Vulkan1"])
def test_device_names_are_accepted(device):
    assert validate("w", {**W1, "halo_rpc_device": device}).rpc_device == device


@pytest.mark.parametrize("device", ["Vulkan0;reboot", "Vulkan 0", "-d", "", "Vulkan0,", "0Vulkan", "Vulkan0/CPU",
                                    "%n", "$X", "Vulkan0\nX"])
def test_device_names_outside_ggmls_grammar_are_refused(device):
    with pytest.raises(ConfigError, match="halo_rpc_device"):
        validate("w", {**W1, "halo_rpc_device": device})


@pytest.mark.parametrize("workers, why", [
    ("w1", "must be a list of inventory host names"),
    ([""], "must be a list of inventory host names"),
    ([1], "must be a list of inventory host names"),
    (["w1", "w1"], "names 'w1' twice"),
    (["w 1"], "'w 1' is not an inventory host name"),
    (["w1\n[Service]"], "is not an inventory host name"),
    (["w%n"], "is not an inventory host name"),
    (["head"], "a head cannot be its own worker"),
])
def test_bad_worker_lists_are_refused(workers, why):
    with pytest.raises(ConfigError, match="halo_rpc_workers") as error:
        validate("head", {**HEAD, "halo_rpc_workers": workers})
    assert why in str(error.value)


@pytest.mark.parametrize("split", [[], [0, 0], ["3"], [-1, 1], [math.nan], [math.inf], [True, 1], "3,1", 3])
def test_bad_tensor_splits_are_refused(split):
    with pytest.raises(ConfigError, match="halo_tensor_split.*must be a non-empty list of numbers >= 0, not all zero"):
        validate("head", {**HEAD, "halo_tensor_split": split})


def test_a_tensor_split_needs_workers_and_one_share_per_box_at_most():
    assert validate("head", {**HEAD, "halo_tensor_split": [3, 1, 0.5]}).tensor_split == [3.0, 1.0, 0.5]
    with pytest.raises(ConfigError, match=r"has 4 shares for 3 boxes \(the workers, then the head\)"):
        validate("head", {**HEAD, "halo_tensor_split": [1, 1, 1, 1]})
    with pytest.raises(ConfigError, match="splits a model across the RPC group's devices: set halo_rpc_workers"):
        validate("solo", {**BASE, "halo_model": "/m.gguf", "halo_tensor_split": [1]})


@pytest.mark.parametrize("data, key, why", [
    ({**W1, "halo_rpc_address": None}, "halo_rpc_address", "an RPC worker needs its address on the private link"),
    ({**W1, "halo_rpc_workers": ["w2"]}, "halo_rpc_workers", "an RPC worker cannot have workers of its own"),
    ({**HEAD, "halo_rpc_address": None}, "halo_rpc_address", "the head needs its address on the private link"),
    ({**HEAD, "halo_serve": "vllm"}, "halo_rpc_workers", "an RPC head is llama-server from the distro packages"),
    ({**HEAD, "halo_llama_source": "toolbox", "halo_llama_backend": "vulkan"}, "halo_rpc_workers",
     "not llama-server (toolbox)"),
    ({**HEAD, "halo_llama_args": ["--models-dir=/srv/models"]}, "halo_llama_args",
     "router mode (--models-dir) serves many models on one box; it cannot be an RPC head"),
    ({**HEAD, "halo_llama_args": ["--rpc", "10.9.9.9:1"]}, "halo_llama_args",
     "--rpc is set by halo_rpc_workers, not in the extra arguments"),
    ({**HEAD, "halo_llama_args": ["-ts", "1,1"]}, "halo_llama_args", "-ts is set by halo_tensor_split"),
])
def test_rpc_rules_between_keys(data, key, why):
    with pytest.raises(ConfigError, match=key) as error:
        validate("head" if "halo_model" in data else "w1", data)
    assert why in str(error.value)


def test_a_worker_needs_no_model():
    assert validate("w1", W1).model is None


@pytest.mark.parametrize("key, value", [("halo_vllm_tensor_parallel_size", 2), ("halo_vllm_ray_head", "box1"),
                                        ("halo_vllm_ray_interface", "enp1s0"), ("halo_vllm_ray_address", "10.0.0.1")])
def test_vllm_across_boxes_is_reserved_and_refused_cleanly(key, value):
    with pytest.raises(ConfigError) as error:
        validate("v", {**BASE, "halo_serve": "vllm", "halo_model": "org/model", key: value})
    assert f"{key}=" in str(error.value)
    assert "not built yet: vLLM across boxes (Ray, --tensor-parallel-size) is designed in README 'vLLM across " \
           "boxes'" in str(error.value)
    assert validate("v", {**BASE, "halo_serve": "vllm", "halo_model": "org/model",
                          "halo_vllm_tensor_parallel_size": 1}).vllm_tensor_parallel_size == 1


# -- the group across hosts' data -----------------------------------------------------------------------------

@pytest.mark.parametrize("hosts, name, why", [
    (fleet(head={"halo_rpc_workers": ["w1", "w9"]}), "head", "'w9' is not a host of the inventory"),
    (fleet(w2={"halo_serve": "llama-server", "halo_model": "/m.gguf"}), "head",
     "'w2' is not an RPC worker (its halo_serve is llama-server, not rpc-worker)"),
    (fleet(w2={"halo_rpc_port": "fifty"}), "head",
     "its RPC worker 'w2' has invalid data (host 'w2': halo_rpc_port='fifty' is invalid: must be a whole number)"),
    (fleet(other={**HEAD, "halo_rpc_address": "10.0.0.9", "halo_rpc_workers": ["w2"]}), "head",
     "'w2' is also named by other: a worker serves one head"),
    (fleet(other={**HEAD, "halo_rpc_address": "10.0.0.9", "halo_rpc_workers": ["w2"]}), "w2",
     "named by several heads (head, other) in halo_rpc_workers"),
    (fleet(head={"halo_rpc_workers": ["w1"]}), "w2", "no host names it in halo_rpc_workers"),
    (fleet(w1={"halo_rpc_address": "fd00::2"}), "head", "is not the same IP version as w1's halo_rpc_address fd00::2"),
    (fleet(w1={"halo_rpc_address": "fd00::2"}), "w1", "is not the same IP version as head's halo_rpc_address 10.0.0.1"),
    (fleet(head={"halo_port": "x"}), "w1", "its RPC head 'head' has invalid data"),
])
def test_a_group_that_does_not_fit_refuses_the_host_naming_the_other(hosts, name, why):
    workers = {}
    for other, data in hosts.items():  # the other workers' plans, as far as they can be built
        if other != name and data.get("halo_serve") == "rpc-worker":
            try:
                workers[other] = build_plan(other, data, probe(), fleet=hosts)
            except ConfigError:
                workers[other] = None
    with pytest.raises(ConfigError) as error:
        build_plan(name, hosts[name], probe(), fleet=hosts, worker_plans=workers)
    assert f"host '{name}'" in str(error.value) and why in str(error.value)


def test_a_worker_without_a_plan_refuses_its_head():
    hosts = fleet()
    worker_plans = {"w1": build_plan("w1", W1, probe(), fleet=hosts)}  # w2 unreachable or refused
    with pytest.raises(HostRefused, match="RPC worker 'w2' has no plan in this run"):
        build_plan("head", HEAD, probe(), fleet=hosts, worker_plans=worker_plans)


def test_weights_beyond_the_groups_gtt_are_refused_with_the_numbers():
    # 16 000 000 KiB MemTotal: 15 GiB visible, 8 GiB kept for the OS -> 7 GiB GTT per box, 21 GiB for three.
    big = ["@parent root 755", f"@file {40 * 2**30} 1 root", "@magic 47475546"]
    with pytest.raises(HostRefused) as error:
        plans(fleet(), {"head": probe(model=big)})
    assert "(40.0 GiB of weights) does not fit the RPC group's GTT (21 GiB: head (head) 7 GiB, w1 (worker) " \
           "7 GiB, w2 (worker) 7 GiB)" in str(error.value)
    assert plans(fleet())["head"].rpc_group == ["RPC group GTT 21 GiB: head (head) 7 GiB, w1 (worker) 7 GiB, "
                                                "w2 (worker) 7 GiB"]


# -- the worker -----------------------------------------------------------------------------------------------

def test_listen_hex_is_how_proc_net_tcp_shows_the_socket():
    # 10.0.0.2 is 0a 00 00 02, printed as one little-endian word; 50052 is 0xC384.
    assert rpc.listen_hex("10.0.0.2", 50052) == ("0200000A:C384", "/proc/net/tcp")
    assert rpc.listen_hex("fd00::2", 50052) == ("000000FD" "00000000" "00000000" "02000000:C384", "/proc/net/tcp6")


def test_the_worker_unit_runs_ggml_rpc_server_on_its_address_only_as_the_service_user():
    worker = plans(fleet(w1={"halo_rpc_cache": True, "halo_rpc_device": "Vulkan0"}))["w1"].rpc
    lines = worker.unit.splitlines()
    exec_line = next(line for line in lines if line.startswith("ExecStart="))
    assert systemd_words(exec_line[len("ExecStart="):]) == [
        "/usr/libexec/x86_64-linux-gnu/llama/bin/ggml-rpc-server", "-H", "10.0.0.2", "-p", "50052", "-c",
        "-d", "Vulkan0"]
    for setting in ("User=halo", "Group=halo", "SupplementaryGroups=video render", "NoNewPrivileges=yes",
                    "ProtectSystem=strict", "ProtectHome=yes", "CapabilityBoundingSet=",
                    "Requires=halo-rpc-firewall.service", "Environment=LLAMA_CACHE=/var/lib/halofleet/rpc-cache",
                    "ReadWritePaths=-/var/lib/halofleet/rpc-cache"):
        assert setting in lines, setting
    assert not any(line.startswith(("PrivateDevices=", "DevicePolicy=", "ProtectClock=")) for line in lines)
    # Started means listening: the wait reads /proc/net/tcp for 10.0.0.2:50052 in state 0A (LISTEN).
    post = next(line for line in lines if line.startswith("ExecStartPost="))
    assert '"^ *[0-9]+: 0200000A:C384 [0-9A-F]+:0000 0A " /proc/net/tcp' in post
    assert worker.packages == ["llama.cpp-tools-extra", "libggml0-backend-rpc", "nftables"]


def test_the_nft_file_lets_the_head_in_and_drops_everyone_else_in_our_own_table():
    worker = plans(fleet())["w2"].rpc
    assert worker.nft == (
        "#!/usr/sbin/nft -f\n"
        "# Managed by halofleet: the llama.cpp RPC worker's port (50060/tcp) accepts the head head only.\n"
        "# Declared, deleted and declared again: loading this file replaces our table atomically and touches no "
        "other.\n"
        "table inet halofleet_rpc\n"
        "delete table inet halofleet_rpc\n"
        "table inet halofleet_rpc {\n"
        "\tchain input {\n"
        "\t\ttype filter hook input priority filter; policy accept;\n"
        "\t\ttcp dport 50060 ip saddr 10.0.0.1 accept\n"
        "\t\ttcp dport 50060 counter drop\n"
        "\t}\n"
        "}\n"
    )
    v6 = plans(fleet(head={"halo_rpc_address": "fd00::1"}, w1={"halo_rpc_address": "fd00::2"},
                     w2={"halo_rpc_address": "fd00::3"}))["w1"].rpc
    assert "\t\ttcp dport 50052 ip6 saddr fd00::1 accept\n" in v6.nft


def test_the_firewall_unit_loads_the_table_before_the_worker_and_again_after_nftables():
    firewall = plans(fleet())["w1"].rpc.firewall_unit.splitlines()
    for setting in ("Before=network-pre.target halo-rpc.service shutdown.target", "After=nftables.service",
                    "PartOf=nftables.service", "ReloadPropagatedFrom=nftables.service",
                    "ExecStart=/usr/sbin/nft -f /etc/halofleet/rpc.nft",
                    "ExecStop=-/usr/sbin/nft delete table inet halofleet_rpc", "RemainAfterExit=yes"):
        assert setting in firewall, setting


def _up(worker_plan) -> dict:
    files = {paths.RPC_UNIT: sha256_text(worker_plan.unit), paths.RPC_FIREWALL_UNIT:
             sha256_text(worker_plan.firewall_unit), paths.RPC_NFT: sha256_text(worker_plan.nft)}
    return {"files": files, "sections": {"rpc": ["@active active", "@enabled enabled", "@firewall active", "@table"]},
            "listeners": ["0200000A:C384"]}


def test_a_worker_restarts_on_a_change_starts_when_down_and_is_left_alone_otherwise():
    hosts = fleet()
    fresh = plans(hosts)["w1"].rpc
    assert (fresh.restart, fresh.start) == (True, False)
    up = _up(fresh)
    settled = build_plan("w1", W1, probe(**up), fleet=hosts).rpc
    assert (settled.restart, settled.start) == (False, False)
    flushed = {**up, "sections": {"rpc": ["@active active", "@enabled enabled", "@firewall active"]}}
    assert build_plan("w1", W1, probe(**flushed), fleet=hosts).rpc.start  # someone flushed the ruleset
    moved = build_plan("w1", {**W1, "halo_rpc_port": 50053}, probe(**up),
                       fleet=fleet(w1={"halo_rpc_port": 50053})).rpc
    assert (moved.restart, moved.start) == (True, False)


def test_another_program_on_the_workers_port_refuses_it():
    with pytest.raises(HostRefused, match="port 50052 is already in use on 0.0.0.0 by another program"):
        build_plan("w1", W1, probe(listeners=["00000000:C384"]), fleet=fleet())


# -- the head -------------------------------------------------------------------------------------------------

def _exec_words(unit: str) -> list[str]:
    line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    return systemd_words(line[len("ExecStart="):])


def test_the_head_gets_rpc_in_its_own_order_and_the_split():
    hosts = fleet(head={"halo_rpc_workers": ["w2", "w1"], "halo_tensor_split": [1, 2.5, 0]})
    head = plans(hosts)["head"]
    words = _exec_words(head.serve.unit)
    assert words[words.index("--rpc") + 1] == "10.0.0.3:50060,10.0.0.2:50052"
    assert words[words.index("--tensor-split") + 1] == "1,2.5,0"
    assert words[words.index("-lv") + 1] == "4"
    assert policy.RPC_BACKEND_PACKAGE in head.serve.packages
    assert [member.name for member in head.rpc_members] == ["w2", "w1"]
    # At boot the workers may come later: the head waits for each port first.
    assert ("ExecStartPre=/bin/bash -c 'for ep in 10.0.0.3/50060 10.0.0.2/50052; do until timeout 3 bash -c "
            '"exec 3<>/dev/tcp/$$ep" 2>/dev/null; do sleep 2; done; done\'') in head.serve.unit.splitlines()
    v6 = plans(fleet(head={"halo_rpc_address": "fd00::1"}, w1={"halo_rpc_address": "fd00::2"},
                     w2={"halo_rpc_address": "fd00::3"}))["head"]
    assert "[fd00::2]:50052,[fd00::3]:50060" in _exec_words(v6.serve.unit)


def test_a_plain_engine_unit_is_unchanged_by_rpc():
    plain = build_plan("solo", {**BASE, "halo_model": "/srv/models/tiny.gguf"}, probe())
    assert "--rpc" not in plain.serve.unit and "RPC" not in plain.serve.unit and "ExecStartPre" not in plain.serve.unit
    assert policy.RPC_BACKEND_PACKAGE not in plain.serve.packages


def _settled(hosts: dict) -> dict:
    """Probes of a group that is up and unchanged: every worker's files in place, the head's engine running."""
    before = plans(hosts)
    probes = {name: probe(**_up(before[name].rpc)) for name in ("w1", "w2")}
    head = before["head"].serve
    probes["head"] = probe(files={paths.SERVE_UNIT: sha256_text(head.unit), paths.SERVE_ENV: sha256_text(head.env)},
                           serve_active="active")
    probes["head"]["serve"].update(enabled="enabled", stamp=head.model_stamp)
    return probes


@pytest.mark.parametrize("change", [{"halo_rpc_cache": True}, {"halo_rpc_device": "CPU"}, {"halo_rpc_port": 50099},
                                    {"halo_rpc_address": "10.0.0.7"}, {"halo_service_user": "llm"}])
def test_any_worker_change_changes_the_heads_unit_so_the_head_restarts(change):
    probes = _settled(fleet())
    before = plans(fleet(), probes)
    assert not before["head"].serve.restart and not before["head"].serve.start
    after = plans(fleet(w1=change), {"head": probes["head"]})["head"]
    assert after.serve.unit != before["head"].serve.unit and after.serve.restart


def test_a_worker_started_again_in_this_run_restarts_its_head():
    probes = _settled(fleet())
    probes["w2"]["rpc"]["active"] = "failed"  # the head's connection to it is gone
    group = plans(fleet(), probes)
    assert group["w2"].rpc.start and not group["w1"].rpc.start
    assert group["head"].serve.restart and not group["head"].serve.start


# -- verify and the report ------------------------------------------------------------------------------------

LOG = ["0.00.038.264 I llama_prepare_model_devices: using device RPC0 (10.0.0.2:50052) (unknown id) - 24105 MiB free",
       "0.00.038.730 I llama_prepare_model_devices: using device RPC1 (10.0.0.3:50060) (unknown id) - 24105 MiB free",
       "0.00.042.014 I load_tensors: RPC0[10.0.0.2:50052] model buffer size =     0.31 MiB",
       "0.00.042.015 I load_tensors: RPC0[10.0.0.3:50060] model buffer size =     0.08 MiB"]


def test_the_heads_log_names_its_devices_and_buffers():
    assert parse_rpc_log(LOG) == {"devices": ["10.0.0.2:50052", "10.0.0.3:50060"],
                                  "buffers": {"10.0.0.2:50052": 0.31, "10.0.0.3:50060": 0.08}}
    assert parse_rpc_log(["garbage", "RPC0[x] model buffer size = lots MiB"]) == {"devices": [], "buffers": {}}


def test_head_and_worker_cells():
    group = plans(fleet())
    assert rpc.head_cell(group["head"], parse_rpc_log(LOG)) == ("head: w1 ok (0.31 MiB), w2 ok (0.08 MiB)", True)
    assert rpc.head_cell(group["head"], parse_rpc_log(LOG[:1] + LOG[2:3])) == \
        ("head: w1 ok (0.31 MiB), w2 not seen", False)
    assert rpc.head_cell(group["head"], None) == ("head: w1 not seen, w2 not seen", False)
    up = _up(group["w1"].rpc)
    assert rpc.worker_cell(group["w1"], probe(**up)) == ("worker of head: listening on 10.0.0.2:50052 only", True)
    everywhere = probe(**{**up, "listeners": ["0200000A:C384", "00000000:C384"]})
    assert rpc.worker_cell(group["w1"], everywhere) == \
        ("worker of head: listening on 0.0.0.0, 10.0.0.2, not 10.0.0.2 only", False)
    no_table = probe(**{**up, "sections": {"rpc": ["@active active", "@enabled enabled", "@firewall active"]}})
    assert rpc.worker_cell(group["w1"], no_table) == ("worker of head: firewall table inet halofleet_rpc missing",
                                                      False)


def _row(host: str, status: str, cell: str) -> dict:
    return {**{column: "-" for column in COLUMNS}, "host": host, "status": status, "rpc": cell}


def test_the_report_shows_each_group_with_its_workers_and_state():
    rows = [_row("head", "ok", "head: w1 ok (0.31 MiB), w2 not seen"),
            _row("w1", "ok", "worker of head: listening on 10.0.0.2:50052 only"),
            _row("w2", "unhealthy", "worker of head: halo-rpc failed")]
    assert rpc_groups(rows) == [{
        "head": "head", "workers": "w1: ok (0.31 MiB); listening on 10.0.0.2:50052 only | w2: not seen; "
                                   "halo-rpc failed",
        "state": "degraded (head ok)"}]
    rows[0]["rpc"] = "head: w1 ok (0.31 MiB)"
    assert rpc_groups(rows[:2])[0]["state"] == "ok"
    html = render_report(rows, "html", "t")
    assert '<tr class="group" data-head="head"><td>head</td>' in html
    markdown = render_report(rows, "md", "t")
    assert "## RPC groups" in markdown and "| head | w1: ok (0.31 MiB); listening on 10.0.0.2:50052 only | ok |" \
        in markdown
    assert "RPC groups" not in render_report(rows[1:], "md", "t")


# -- the packaged deploy on @fake hosts -----------------------------------------------------------------------

def test_a_group_deploys_and_a_broken_group_member_refuses_only_what_depends_on_it():
    from halofleet.testing.fake import run_fake

    def data(base: dict, **extra) -> dict:
        return {**base, "halo_reboot": "never", **extra}

    head = data(HEAD, halo_rpc_workers=["@fake/w1", "@fake/w2"])
    hosts = {
        "head": (head, probe_output()),
        "w1": (data(W1, halo_rpc_cache=True), probe_output()),
        "w2": (data(W2), probe_output()),
    }
    run = run_fake("deploys/full.py", hosts)
    assert run.failed_hosts == set(), run.errors
    for name in ("w1", "w2"):
        sent = "\n".join(run.changes(name))
        assert 'nft -c -f "$HALO_CANDIDATE"' in sent  # the nft file is checked before it is installed
        assert "systemctl restart halo-rpc-firewall.service halo-rpc.service" in sent
        assert "halo-serve" not in sent
    assert "install -d -o halo -g halo -m 0750 /var/lib/halofleet/rpc-cache" in "\n".join(run.changes("w1"))
    head_sent = "\n".join(run.changes("head"))
    assert "halo-rpc" not in head_sent  # no worker on the head
    assert "libggml0-backend-rpc" in head_sent

    # A second head naming w2 too: both heads are refused, and w2 itself (which head would its firewall let in?).
    claimed_twice = {**hosts, "other": (data(HEAD, halo_rpc_address="10.0.0.9", halo_rpc_workers=["@fake/w2"]),
                                        probe_output())}
    run = run_fake("deploys/full.py", claimed_twice)
    assert run.failed_hosts == {"head", "w2", "other"}
    assert all(run.commands[name] == [] for name in ("head", "w2", "other"))  # data errors: not even the probe
    assert "systemctl restart halo-rpc-firewall.service halo-rpc.service" in "\n".join(run.changes("w1"))
    assert any("@fake/w2' is also named by @fake/other" in error for error in run.errors), run.errors


def test_an_rpc_worker_is_no_backend_of_the_gateway():
    from halofleet.fleet.gateway import backend_of

    assert backend_of("gw", "w1", W1) is None  # it has no OpenAI endpoint: it only lends memory to its head
    assert backend_of("gw", "head", {**HEAD, "halo_bind": "10.0.0.1", "halo_api_key": "k" * 20}) is not None
