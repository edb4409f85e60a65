"""
Reviews never stop or hide: a dry run without a terminal never prompts, an unreachable host carries pyinfra's
reason, every warning reaches ``halofleet diff``'s Markdown and JSON, a bad ``--deploy`` stops before any
connection, and relative control-machine paths start at the inventory file's directory.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from halofleet.testing.fake import probe_output
from halofleet.views.review import review, to_markdown

from .test_cli import BIN, isolated_network
from .test_review import write_inventory

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"halo_model": "/srv/models/tiny.gguf", "halo_llama_backend": "cpu", "halo_reboot": "never"}
UNRESOLVABLE = "halo-nowhere.invalid"  # .invalid never resolves (RFC 6761); no namespace: no packet either


def run(args: list[str], cwd: Path, isolate: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run((isolated_network() if isolate else []) + args, cwd=cwd, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def test_a_dry_run_without_a_terminal_never_prompts(tmp_path):
    # No -y: pyinfra asks "continue?" when a host fails, and reads EOF without a terminal.
    inventory = write_inventory(tmp_path, {"fresh": (GOOD, probe_output()),
                                           "broken": ({**GOOD, "halo_rocm_version": "7.0.1"}, probe_output())})
    proc = run([sys.executable, "-m", "pyinfra", inventory, str(ROOT / "deploys/full.py"), "--dry", "--diff"],
               tmp_path)
    text = proc.stdout + proc.stderr
    assert "EOFError" not in text and "continue?" not in text, text
    assert proc.returncode == 1, text  # a refused host is a failed host, as with -y
    assert "[@fake/broken] halofleet refuses this host" in text
    listing = text.split("--> Commands a run would execute", 1)[1]
    assert "[@fake/fresh] halofleet | kernel" in listing  # the run went on for the others


def test_unreachable_hosts_carry_the_reason(tmp_path):
    inventory = tmp_path / "inventory.py"
    inventory.write_text(f"llama = [({UNRESOLVABLE!r}, {GOOD!r})]\n")
    diff = run([str(BIN / "halofleet"), "diff", str(inventory), "--json"], tmp_path, isolate=True)
    assert diff.returncode == 1, diff.stderr
    (row,) = json.loads(diff.stdout)
    assert row["status"] == "unreachable" and row["reason"].startswith("Could not resolve hostname"), row
    markdown = run([str(BIN / "halofleet"), "diff", str(inventory)], tmp_path, isolate=True)
    assert "> Could not resolve hostname" in markdown.stdout
    verify = run([str(BIN / "halofleet"), "verify", str(inventory), "--json"], tmp_path, isolate=True)
    (row,) = json.loads(verify.stdout)
    assert row["status"].startswith("unreachable: Could not resolve hostname"), row


def test_every_warning_reaches_the_review(tmp_path):
    exposed = {**GOOD, "halo_bind": "0.0.0.0", "halo_allow_unauthenticated": True}
    inventory = write_inventory(tmp_path, {"open": (exposed, probe_output()), "closed": (GOOD, probe_output())})
    reviews = {item.host: item for item in review(inventory, "deploys/full.py")}
    expected = "the API on 0.0.0.0:8080 is reachable beyond this host without an API key (halo_allow_unauthenticated)"
    assert expected in reviews["@fake/open"].warnings
    assert expected not in reviews["@fake/closed"].warnings
    text = to_markdown(list(reviews.values()), inventory, "deploys/full.py")
    section = text.split("## @fake/open", 1)[1].split("## @fake/closed", 1)[0]
    assert f"> **warning:** {expected}" in section
    from dataclasses import asdict

    assert expected in json.dumps([asdict(item) for item in reviews.values()])


def test_a_bad_deploy_path_stops_before_any_connection(tmp_path):
    inventory = tmp_path / "inventory.py"
    inventory.write_text(f"llama = [({UNRESOLVABLE!r}, {GOOD!r})]\n")
    proc = run([str(BIN / "halofleet"), "diff", str(inventory), "--deploy", "not-a-file.py"], tmp_path, isolate=True)
    assert proc.returncode == 2, proc.stderr
    assert "no deploy file 'not-a-file.py'" in proc.stderr
    assert "Could not resolve" not in proc.stdout + proc.stderr  # no host was tried


def test_an_invalid_inventory_stops_every_fleet_command_before_any_connection(tmp_path):
    inventory = tmp_path / "inventory.py"
    inventory.write_text(f"llama = [({UNRESOLVABLE!r}, {{**{GOOD!r}, 'halo_ctxx': 4096}})]\n")
    for command in (["diff"], ["verify"], ["report"], ["bench"]):
        proc = run([str(BIN / "halofleet"), *command, str(inventory)], tmp_path, isolate=True)
        assert proc.returncode == 2, (command, proc.stderr)
        assert f"halofleet: error: {inventory}: host {UNRESOLVABLE}: halo_ctxx: unknown key" in proc.stderr
        assert "Could not resolve" not in proc.stdout + proc.stderr, command


def test_relative_paths_start_at_the_inventory_directory(tmp_path):
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    (site / "models").mkdir(parents=True)
    elsewhere.mkdir()
    (site / "models" / "tiny.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    pushed = {**GOOD, "halo_model": "models/tiny.gguf", "halo_model_push": True}
    inventory = write_inventory(site, {"fresh": (pushed, probe_output())})
    proc = run([sys.executable, "-m", "pyinfra", "-y", inventory, str(ROOT / "deploys/full.py"), "--dry",
                "--diff"], elsewhere)
    text = proc.stdout + proc.stderr
    assert "refuses" not in text, text
    assert f"# upload {site / 'models' / 'tiny.gguf'} ->" in text  # the file next to the inventory is pushed
    check = run([str(BIN / "halofleet"), "check", inventory], elsewhere)
    assert check.returncode == 0, check.stdout + check.stderr
    (site / "models" / "tiny.gguf").unlink()
    check = run([str(BIN / "halofleet"), "check", inventory], elsewhere)
    assert check.returncode == 2 and "halo_model: " in check.stdout
    assert "relative to the inventory file's directory" in run([str(BIN / "halofleet"), "options"], elsewhere).stdout
