"""
``halofleet check`` on a corpus of inventories, run with no network at all (a private network namespace with only
loopback, as CI runs as root): each bad inventory holds one bad thing and must exit 2 with a line naming the file
that sets the key, the host and the key; the good ones exit 0. Everything runs in one process inside the namespace
(one ``unshare``), each inventory through the real command line (click's runner).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .test_cli import isolated_network

GGUF = b"GGUF\x03\x00\x00\x00"
CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\nMIIE\n" \
       "-----END PRIVATE KEY-----\n"
KEY = "k" * 20
LLAMA = {"halo_serve": "llama-server", "halo_model": "/srv/m.gguf"}
GATEWAY = {"halo_serve": "none", "halo_gateway": True, "halo_gateway_bind": "127.0.0.1"}


def backend(address: str, **more) -> dict:
    return {**LLAMA, "halo_bind": address, "halo_api_key": KEY, **more}


def inventory(**groups) -> str:
    return "".join(f"{name} = {value!r}\n" for name, value in groups.items())


def group_file(**data) -> str:
    return "".join(f"{key} = {value!r}\n" for key, value in data.items())


RPC_HEAD = {**LLAMA, "halo_rpc_workers": ["w1"], "halo_rpc_address": "10.9.0.1"}
RPC_WORKER = {"halo_serve": "rpc-worker", "halo_rpc_address": "10.9.0.2"}

# name -> (files, the (file, host, key) the error line must name). The inventory file is always inventory.py.
BAD = {
    "unknown key in a group file": (
        {"inventory.py": inventory(llama=["h1"]), "group_data/llama.py": group_file(**LLAMA, halo_ctxx=4096)},
        ("group_data/llama.py", "h1", "halo_ctxx")),
    "wrong type in a group file": (
        {"inventory.py": inventory(llama=["h1"]), "group_data/llama.py": group_file(**LLAMA, halo_ctx="big")},
        ("group_data/llama.py", "h1", "halo_ctx")),
    "out of range on a host": (
        {"inventory.py": inventory(llama=[("h1", {"halo_port": 70000})]), "group_data/llama.py": group_file(**LLAMA)},
        ("inventory.py", "h1", "halo_port")),
    "a rule between keys": (
        {"inventory.py": inventory(llama=["h1"]),
         "group_data/llama.py": group_file(**LLAMA, halo_llama_batch=256, halo_llama_ubatch=512)},
        ("group_data/llama.py", "h1", "halo_llama_ubatch")),
    "two groups disagree": (
        {"inventory.py": inventory(fast=["h1"], big=["h1"]), "group_data/fast.py": group_file(**LLAMA, halo_ctx=4096),
         "group_data/big.py": group_file(halo_ctx=65536)},
        ("group_data/big.py", "h1", "halo_ctx")),
    "pushed model missing": (
        {"inventory.py": inventory(llama=[("h1", {"halo_model": "models/absent.gguf", "halo_model_push": True})]),
         "group_data/llama.py": group_file(halo_serve="llama-server")},
        ("inventory.py", "h1", "halo_model")),
    "pushed model not a GGUF": (
        {"inventory.py": inventory(llama=[("h1", {"halo_model": "models/notes.gguf", "halo_model_push": True})]),
         "models/notes.gguf": "plain text"},
        ("inventory.py", "h1", "halo_model")),
    "halo_models file missing": (
        {"inventory.py": inventory(llama=["h1"]),
         "group_data/llama.py": group_file(halo_serve="llama-server",
                                           halo_models=[{"name": "m", "file": "models/gone.gguf"}])},
        ("group_data/llama.py", "h1", "halo_models")),
    "ssh key missing": (
        {"inventory.py": inventory(llama=[("h1", {"ssh_key": "keys/id_ed25519"})]),
         "group_data/llama.py": group_file(**LLAMA)},
        ("inventory.py", "h1", "ssh_key")),
    "gateway TLS cert missing": (
        {"inventory.py": inventory(gw=[("gw", {**GATEWAY, "halo_gateway_tls_cert": "tls/gw.pem"})],
                                   pool=[("a", backend("10.0.0.2"))])},
        ("inventory.py", "gw", "halo_gateway_tls_cert")),
    "gateway pools two engines": (
        {"inventory.py": inventory(gw=[("gw", GATEWAY)], pool=[
            ("a", backend("10.0.0.2")),
            ("b", {"halo_serve": "vllm", "halo_model": "org/m", "halo_bind": "10.0.0.3", "halo_api_key": KEY})])},
        ("inventory.py", "gw", "halo_gateway_groups")),
    "gateway pools two model sets": (
        {"inventory.py": inventory(gw=[("gw", {**GATEWAY, "halo_gateway_groups": ["pool"]})], pool=[
            ("a", backend("10.0.0.2", halo_model_alias="small")),
            ("b", backend("10.0.0.3", halo_model_alias="large"))])},
        ("inventory.py", "gw", "halo_gateway_groups")),
    "gateway routes a model nobody serves": (
        {"inventory.py": inventory(
            gw=[("gw", {**GATEWAY, "halo_gateway_groups": ["pool"], "halo_gateway_models": {"big": "pool"}})],
            pool=[("a", backend("10.0.0.2", halo_model_alias="small"))])},
        ("inventory.py", "gw", "halo_gateway_models")),
    "gateway names a group the inventory lacks": (
        {"inventory.py": inventory(gw=[("gw", {**GATEWAY, "halo_gateway_groups": ["nope"]})],
                                   pool=[("a", backend("10.0.0.2"))])},
        ("inventory.py", "gw", "halo_gateway_groups")),
    "gateway with two groups and no routes": (
        {"inventory.py": inventory(gw=[("gw", {**GATEWAY, "halo_gateway_groups": ["one", "two"]})],
                                   one=[("a", backend("10.0.0.2"))], two=[("b", backend("10.0.0.3"))])},
        ("inventory.py", "gw", "halo_gateway_models")),
    "gateway backend on loopback": (
        {"inventory.py": inventory(gw=[("gw", GATEWAY)], pool=[("a", {**LLAMA})])},
        ("inventory.py", "gw", "halo_bind")),
    "gateway group without one key": (
        {"inventory.py": inventory(gw=[("gw", GATEWAY)], pool=[
            ("a", backend("10.0.0.2")), ("b", backend("10.0.0.3", halo_api_key="x" * 24))])},
        ("inventory.py", "gw", "halo_api_key")),
    "gateway on its own engine's port": (
        {"inventory.py": inventory(gw=[("gw", {**GATEWAY, **backend("10.0.0.1"), "halo_gateway": True,
                                               "halo_gateway_bind": "10.0.0.1", "halo_gateway_port": 8080})],
                                   pool=[("a", backend("10.0.0.2"))])},
        ("inventory.py", "gw", "halo_gateway_port")),
    "gateway beyond loopback in front of engines without a key": (
        {"inventory.py": inventory(gw=[("gw", {**GATEWAY, "halo_gateway_bind": "10.0.0.1"})], pool=[
            ("a", {**LLAMA, "halo_bind": "10.0.0.2", "halo_allow_unauthenticated": True})])},
        ("inventory.py", "gw", "halo_gateway_bind")),
    "RPC worker without a head": (
        {"inventory.py": inventory(rpc=[("w1", RPC_WORKER)])},
        ("inventory.py", "w1", "halo_serve")),
    "RPC head names a host not in the inventory": (
        {"inventory.py": inventory(rpc=[("h", {**RPC_HEAD, "halo_rpc_workers": ["w9"]}), ("w1", RPC_WORKER)])},
        ("inventory.py", "h", "halo_rpc_workers")),
    "RPC worker named by two heads": (
        {"inventory.py": inventory(rpc=[("h", RPC_HEAD), ("h2", {**RPC_HEAD, "halo_rpc_address": "10.9.0.3"}),
                                        ("w1", RPC_WORKER)])},
        ("inventory.py", "h", "halo_rpc_workers")),
    "RPC head names a host that is no worker": (
        {"inventory.py": inventory(rpc=[("h", RPC_HEAD), ("w1", {**LLAMA})])},
        ("inventory.py", "h", "halo_rpc_workers")),
    "RPC group across IP versions": (
        {"inventory.py": inventory(rpc=[("h", RPC_HEAD), ("w1", {**RPC_WORKER, "halo_rpc_address": "fd00::2"})])},
        ("inventory.py", "h", "halo_rpc_address")),
}

GOOD = {
    "one group, one model per host": {"inventory.py": inventory(llama=["h1", "h2"]),
                                      "group_data/llama.py": group_file(**LLAMA)},
    "two groups agreeing": {"inventory.py": inventory(fast=["h1"], big=["h1"]),
                            "group_data/fast.py": group_file(**LLAMA, halo_ctx=4096),
                            "group_data/big.py": group_file(halo_ctx=4096)},
    "two groups disagreeing, the host decides": {
        "inventory.py": inventory(fast=[("h1", {"halo_ctx": 8192})], big=["h1"]),
        "group_data/fast.py": group_file(**LLAMA, halo_ctx=4096), "group_data/big.py": group_file(halo_ctx=65536)},
    "relative paths from the inventory's directory": {
        "inventory.py": inventory(gw=[("gw", {**GATEWAY, "halo_gateway_tls_cert": "tls/gw.pem"})], pool=[
            ("a", {**backend("10.0.0.2"), "halo_model": "models/m.gguf", "halo_model_push": True}),
            ("b", {**backend("10.0.0.3"), "halo_model": "models/m.gguf", "halo_model_push": True})]),
        "models/m.gguf": GGUF, "tls/gw.pem": CERT},
    "gateway routing two groups": {
        "inventory.py": inventory(
            gw=[("gw", {**GATEWAY, "halo_gateway_groups": ["small", "large"],
                        "halo_gateway_models": {"s": "small", "l": "large"}})],
            small=[("a", backend("10.0.0.2", halo_model_alias="s")), ("b", backend("10.0.0.3", halo_model_alias="s"))],
            large=[("c", {"halo_serve": "vllm", "halo_model": "org/l", "halo_model_alias": "l",
                          "halo_bind": "10.0.0.4", "halo_api_key": KEY})])},
    "gateway pooling two engines as the data says": {
        "inventory.py": inventory(gw=[("gw", {**GATEWAY, "halo_gateway_mixed_pools": True})], pool=[
            ("a", backend("10.0.0.2")),
            ("b", {"halo_serve": "vllm", "halo_model": "org/m", "halo_bind": "10.0.0.3", "halo_api_key": KEY})])},
    "an RPC group": {"inventory.py": inventory(rpc=[("h", RPC_HEAD), ("w1", RPC_WORKER)])},
}

DRIVER = textwrap.dedent("""
    import json, sys
    from click.testing import CliRunner
    from halofleet.cli import main
    results = {}
    for name, path in json.loads(sys.argv[1]).items():
        run = CliRunner().invoke(main, ["check", path])
        results[name] = [run.exit_code, run.output, repr(run.exception) if run.exit_code not in (0, 2) else ""]
    print(json.dumps(results))
""")


def write_site(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root / "inventory.py"


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[int, str, Path]]:
    """Every inventory of the corpus checked from another directory, in one process without any network."""
    root = tmp_path_factory.mktemp("corpus")
    sites = {name: write_site(root / f"site{index}", files)
             for index, (name, files) in enumerate({**{k: v[0] for k, v in BAD.items()}, **GOOD}.items())}
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "COLUMNS": "400"}
    env.pop("HALO_API_KEY", None)
    proc = subprocess.run(
        isolated_network() + [sys.executable, "-c", DRIVER, json.dumps({k: str(v) for k, v in sites.items()})],
        cwd=elsewhere, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return {name: (code, output, sites[name]) for name, (code, output, problem) in results.items()
            if not problem or pytest.fail(f"{name}: {problem}\n{output}")}


def test_the_corpus_runs_without_a_network():
    if os.geteuid() == 0:
        assert isolated_network(), "as root the corpus must run in a private network namespace"


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_inventory_exits_2_naming_file_host_and_key(outcomes, name):
    code, output, site = outcomes[name]
    file, host, key = BAD[name][1]
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert code == 2, output
    # A broken RPC group refuses each member that a deploy would refuse (head and workers): one line each.
    assert len(errors) == 1 or name.startswith("RPC") and len(errors) <= 3, output
    assert any(line.startswith(f"error: {site.parent / file}: host {host}: {key}: ") for line in errors), output


@pytest.mark.parametrize("name", sorted(GOOD))
def test_a_good_inventory_exits_0(outcomes, name):
    code, output, _ = outcomes[name]
    assert code == 0, output
    assert "error: " not in output


def test_check_json_lists_hosts_and_findings(tmp_path):
    from click.testing import CliRunner

    from halofleet.cli import main

    site = write_site(tmp_path, BAD["two groups disagree"][0])
    run = CliRunner().invoke(main, ["check", str(site), "--json"])
    assert run.exit_code == 2
    result = json.loads(run.output)
    assert result["ok"] is False
    assert result["hosts"] == [{"host": "h1", "groups": "fast, big, inventory", "serve": "llama-server",
                                "gateway": "-", "status": "error"}]
    (finding,) = result["findings"]
    assert finding == {"level": "error", "file": str(tmp_path / "group_data" / "big.py"), "host": "h1",
                       "key": "halo_ctx", "message": finding["message"]}
    assert "groups fast, big set different values" in finding["message"]
