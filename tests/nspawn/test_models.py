"""
halo_models on a real host: models fetched from a mirror on the test network (a plain URL, a split set, a
Hub-style repo behind a token), verified, served by llama-server's router through one port; a second run fetches
nothing; a partial download is resumed; a corrupt file is refused while the models served before keep answering.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from halofleet.operations.halo_models import download_script
from halofleet.testing.tinymodel import write_tiny_llama

from .conftest import TIER_DATA

pytestmark = pytest.mark.nspawn

TOKEN = "hf_nspawn_test_token_123"
API_KEY = "models-test-key-12345"
MODELS = "/var/lib/halofleet/models"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_mirror(root: Path) -> dict[str, Path]:
    files, repo = root / "files", root / "hub" / "acme" / "tiny"
    files.mkdir(parents=True)
    repo.mkdir(parents=True)
    made = {"alpha": write_tiny_llama(files / "alpha.gguf", seed=1),
            "gamma": write_tiny_llama(files / "gamma.gguf", seed=3),
            "split": write_tiny_llama(files / "sp.gguf", seed=7, split_max_tensors=8),
            "beta": write_tiny_llama(repo / "beta.gguf", seed=2)}
    (repo / "README.md").write_text("tiny test repo\n")  # a non-LFS file include must skip
    corrupt = bytearray(made["alpha"].read_bytes())
    corrupt[len(corrupt) // 2] ^= 0xFF
    (files / "corrupt.gguf").write_bytes(bytes(corrupt))
    return made


def downloads(log: Path) -> list[dict]:
    """Requests that fetched model bytes (not the tree API, nor the GGUF header slices the control machine reads
    with closed ranges ``bytes=A-B`` for the memory check before a file is on the host)."""
    entries = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [entry for entry in entries if (entry["path"].startswith("/files/") or "/resolve/" in entry["path"])
            and not re.fullmatch(r"bytes=\d+-\d+", entry["range"] or "")]


def test_models_are_fetched_verified_and_served_by_name(network, tmp_path):
    made = make_mirror(tmp_path / "mirror")
    log = tmp_path / "mirror.log"
    port = 8000
    network.popen([sys.executable, "-m", "halofleet.testing.hubmirror", str(tmp_path / "mirror"), network.gateway,
                   str(port), str(log), TOKEN], cwd=Path(__file__).resolve().parents[2])
    (srv,) = network.boot(["srv"])
    base = f"http://{network.gateway}:{port}"
    shards = sorted((tmp_path / "mirror" / "files").glob("sp-*.gguf"))
    models = [
        {"name": "alpha", "url": f"{base}/files/alpha.gguf", "sha256": sha256(made["alpha"]), "ctx": 512},
        {"name": "split", "url": f"{base}/files/{made['split'].name}", "keep_loaded": False, "ctx": 256,
         "sha256": {shard.name: sha256(shard) for shard in shards}},
        {"name": "beta", "hf": "acme/tiny", "include": "*.gguf", "ctx": 512},
    ]
    data = {**TIER_DATA, "halo_models": models, "halo_hf_endpoint": base, "halo_hf_token": TOKEN,
            "halo_api_key": API_KEY, "halo_metrics": True, "halo_bind": srv.address}
    inventory = tmp_path / "hosts.json"
    network.write_inventory(inventory, host_data={"srv": data})

    first = network.run_pyinfra(inventory, "deploys/full.py")
    assert first.returncode == 0, first.stderr[-4000:]
    # One line per file: its size where the Hub says it (a plain URL's is unknown before the download), its host.
    assert f"Model alpha: alpha.gguf (size unknown) from {network.gateway}:{port}" in first.changed_names
    assert f"Model beta: beta.gguf ({made['beta'].stat().st_size:,} bytes) from {network.gateway}:{port}" \
        in first.changed_names

    def api(path: str, body: dict | None = None, key: str = API_KEY) -> tuple[int, str]:
        data_arg = f"-H 'Content-Type: application/json' -d '{json.dumps(body)}'" if body else ""
        out = srv.ssh(f"curl -s -m 60 -w '\\n%{{http_code}}' -H 'Authorization: Bearer {key}' {data_arg} "
                      f"http://{srv.address}:8080{path}").stdout
        text, _, code = out.rpartition("\n")
        return int(code), text

    def complete(model: str) -> int:
        code, text = api("/v1/completions", {"model": model, "prompt": "Hello", "max_tokens": 2})
        assert code == 200, text
        return json.loads(text)["usage"]["completion_tokens"]

    code, listing = api("/v1/models")
    assert code == 200
    assert sorted(entry["id"] for entry in json.loads(listing)["data"]) == ["alpha", "beta", "split"]
    for name in ("alpha", "beta", "split"):  # split is loaded on demand (keep_loaded: false) from its first shard
        assert complete(name) == 2
    # Metrics sit behind the API key; the router answers them per model.
    assert api("/metrics?model=alpha")[0] == 200 and "llamacpp:" in api("/metrics?model=alpha")[1]
    assert api("/metrics?model=alpha", key="wrong")[0] == 401

    # Files: in the per-model directories, owned by the service user, exactly the mirror's bytes.
    listing = srv.ssh(f"cd {MODELS} && find . -type f ! -name '.*' -printf '%u %P\\n' | sort").stdout.split("\n")
    assert [line for line in listing if line] == sorted(
        ["halo alpha/alpha.gguf", "halo beta/beta.gguf"] + [f"halo split/{shard.name}" for shard in shards])
    remote = srv.ssh(f"sha256sum {MODELS}/alpha/alpha.gguf {MODELS}/beta/beta.gguf").stdout.split()
    assert [remote[0], remote[2]] == [sha256(made["alpha"]), sha256(made["beta"])]
    # The token: only in a root-only file, sent only to the Hub's paths, never on a command line.
    assert srv.ssh("stat -c '%a %U' /etc/halofleet/hf.header").stdout.split() == ["600", "root"]
    fetched = downloads(log)
    assert all(entry["auth"] for entry in fetched if "/resolve/" in entry["path"])
    assert not any(entry["auth"] for entry in fetched if entry["path"].startswith("/files/"))
    assert TOKEN not in first.stderr and TOKEN not in json.dumps(first.result)
    assert len(fetched) == 5  # alpha, three shards, beta: README.md is not included

    second = network.run_pyinfra(inventory, "deploys/full.py")
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.changed_ops == []
    assert len(downloads(log)) == 5  # verified files: no byte fetched again

    # A partial file left by an interrupted download is continued, not fetched again from the start.
    partial = made["gamma"].read_bytes()[:100000]
    part = f"{MODELS}/gamma/.gamma.gguf.part"
    subprocess.run(srv.ssh_command(f"install -d -o halo -g halo {MODELS}/gamma && cat > {part} && "
                                   f"chown halo:halo {part}"), input=partial, check=True, timeout=60)
    models.append({"name": "gamma", "url": f"{base}/files/gamma.gguf", "sha256": sha256(made["gamma"])})
    network.write_inventory(inventory, host_data={"srv": {**data, "halo_models": models}})
    third = network.run_pyinfra(inventory, "deploys/full.py")
    assert third.returncode == 0, third.stderr[-3000:]
    gamma_requests = [entry for entry in downloads(log) if entry["path"] == "/files/gamma.gguf"]
    assert [entry["range"] for entry in gamma_requests] == [f"bytes={len(partial)}-"]
    assert srv.ssh(f"sha256sum < {MODELS}/gamma/gamma.gguf").stdout.split()[0] == sha256(made["gamma"])
    assert complete("gamma") == 2
    unit_before = srv.ssh("sha256sum /etc/systemd/system/halo-serve.service /etc/halofleet/models.ini").stdout
    pid_before = srv.ssh("systemctl show -p MainPID --value halo-serve.service").stdout.strip()

    # A corrupt download: refused with the reason, nothing installed, the engine and its unit untouched.
    models[0] = {**models[0], "url": f"{base}/files/corrupt.gguf"}
    network.write_inventory(inventory, host_data={"srv": {**data, "halo_models": models}})
    fourth = network.run_pyinfra(inventory, "deploys/full.py")
    assert fourth.returncode != 0
    # halofleet's per-host summary names the reason (pyinfra writes no JSON when its only host failed).
    line = fourth.summary_line("srv")
    assert line.split()[1] == "failed", line
    assert f"corrupt.gguf from {base}/files/corrupt.gguf has SHA-256" in line
    assert srv.ssh(f"ls -A {MODELS}/alpha").stdout.split() == [".alpha.gguf.sha256", "alpha.gguf"]
    assert srv.ssh("sha256sum /etc/systemd/system/halo-serve.service /etc/halofleet/models.ini").stdout \
        == unit_before
    assert srv.ssh("systemctl show -p MainPID --value halo-serve.service").stdout.strip() == pid_before
    assert complete("alpha") == 2


def test_single_model_alias_and_metrics(network, tmp_path):
    model = write_tiny_llama(tmp_path / "tiny.gguf")
    (srv,) = network.boot(["one"])
    data = {**TIER_DATA, "halo_model": str(model), "halo_model_push": True, "halo_ctx": 512,
            "halo_model_alias": "tiny-chat", "halo_metrics": True, "halo_api_key": API_KEY}
    inventory = network.write_inventory(tmp_path / "hosts.json", host_data={"one": data})
    first = network.run_pyinfra(inventory, "deploys/full.py")
    assert first.returncode == 0, first.stderr[-3000:]
    key = f"-H 'Authorization: Bearer {API_KEY}'"
    models = json.loads(srv.ssh(f"curl -s -m 30 {key} http://127.0.0.1:8080/v1/models").stdout)
    assert [entry["id"] for entry in models["data"]] == ["tiny-chat"]
    metrics = srv.ssh(f"curl -s -m 30 -w '\\n%{{http_code}}' {key} http://127.0.0.1:8080/metrics").stdout
    assert metrics.endswith("\n200") and "llamacpp:prompt_tokens_total" in metrics
    assert srv.ssh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/metrics").stdout == "401"
    second = network.run_pyinfra(inventory, "deploys/full.py")
    assert second.returncode == 0 and second.changed_ops == []


def test_small_hub_files_are_verified_by_their_git_blob_id(network, tmp_path):
    """The download script itself (controller side, in the test network): a non-LFS file, checked by its git blob
    id (computed here with hashlib, not by the code under test), and a wrong id refused with nothing installed."""
    repo = tmp_path / "mirror" / "hub" / "acme" / "tiny"
    repo.mkdir(parents=True)
    data = b'{"architectures": ["Tiny"]}\n'
    (repo / "config.json").write_bytes(data)
    log = tmp_path / "mirror.log"
    network.popen([sys.executable, "-m", "halofleet.testing.hubmirror", str(tmp_path / "mirror"), network.gateway,
                   "8001", str(log), TOKEN], cwd=Path(__file__).resolve().parents[2])
    header = tmp_path / "hf.header"
    header.write_text(f"Authorization: Bearer {TOKEN}\n")
    header.chmod(0o600)
    url = f"http://{network.gateway}:8001/acme/tiny/resolve/main/config.json"
    blob_id = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    target = tmp_path / "models" / "m" / "config.json"
    for _ in range(50):  # the mirror starts
        if network.run(["curl", "-s", "-o", "/dev/null", url.replace("/acme", "/files/x")]).returncode == 0:
            break
        time.sleep(0.1)

    def fetch(expected: str) -> subprocess.CompletedProcess:
        script = download_script(str(target), url, "root", None, expected, str(header))
        return network.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)

    wrong = fetch("0" * 40)
    assert wrong.returncode == 1 and f"has git blob id {blob_id}, expected {'0' * 40}" in wrong.stderr
    assert sorted(path.name for path in target.parent.iterdir()) == []
    right = fetch(blob_id)
    assert right.returncode == 0, right.stderr
    assert target.read_bytes() == data
    record = (target.parent / ".config.json.sha256").read_text().split()
    assert record[0] == hashlib.sha256(data).hexdigest() and record[3] == blob_id
    assert record[1:3] == [str(target.stat().st_size), str(int(target.stat().st_mtime))]
