"""
The guard tests that run a packaged deploy (or `halofleet diff`) on pyinfra's @fake hosts: a pending reboot done,
an RPC worker rolled back, diff's exit code for a refused host, a fleet whose every host is refused, the secret
files root-only, the Hub token on the Hub's paths only. Seconds each: left out of mutmut's runs ([tool.mutmut]),
like test_bad_inputs.py, test_review.py and test_rollback.py.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time

from click.testing import CliRunner

from halofleet import cli
from halofleet.contract import paths
from halofleet.contract.templating import sha256_text
from halofleet.operations import halo_kernel
from halofleet.testing.fake import probe_output, run_fake
from halofleet.testing.tinymodel import write_tiny_llama

from .test_guards_exits import GOOD
from .test_review import write_inventory
from .test_rpc import HEAD, W1, W2
from .test_verify import DATA, LIVE

TOKEN = "hf_guardtoken0123456789"


def invoke(*args: str):
    return CliRunner().invoke(cli.main, list(args))


def kernel_run(monkeypatch, probe_lines, **data):
    """The kernel stage on one @fake host whose reboot comes back at once with the params live."""
    monkeypatch.setattr(halo_kernel, "_read_boot_id", lambda attempt_timeout: "boot-after")
    responses = {"cat /proc/sys/kernel/random/boot_id": "boot-before", "cat /proc/cmdline": LIVE}
    host_data = {**DATA, "halo_serve": "none", "halo_reboot": "auto", "fake_responses": responses, **data}
    return run_fake("deploys/kernel.py", {"h": (host_data, probe_lines)})


def _rebooted(run) -> bool:
    return any("systemctl reboot" in command for command in run.changes("h"))


def test_a_reboot_pending_from_an_earlier_run_is_done_although_nothing_changes_now(monkeypatch):
    from halofleet.operations.halo_kernel import render_grub_dropin

    params = LIVE.split()[3:]
    written = {paths.GRUB_DROPIN: sha256_text(render_grub_dropin(params))}
    # The drop-in is already in place (an earlier run with halo_reboot: never), the live cmdline lacks the params.
    pending = kernel_run(monkeypatch, probe_output(files=written))
    assert pending.failed_hosts == set(), pending.errors
    assert not any("zz-halofleet.cfg" in command and "mv" in command for command in pending.changes("h"))
    assert _rebooted(pending)
    # Written and live: no reboot.
    settled = kernel_run(monkeypatch, probe_output(files=written, cmdline=LIVE))
    assert settled.failed_hosts == set(), settled.errors
    assert not _rebooted(settled)
    # Never: the reboot stays pending, whatever changed.
    assert not _rebooted(kernel_run(monkeypatch, probe_output(files=written), halo_reboot="never"))


def test_rollback_stops_the_rpc_worker_deletes_its_table_and_removes_its_files():
    files = {paths.RPC_UNIT: "a" * 64, paths.RPC_FIREWALL_UNIT: "b" * 64, paths.RPC_NFT: "c" * 64}
    data = {**W1, "halo_reboot": "never"}
    hosts = {"w1": (data, probe_output(files=files, listeners=["0200000A:C384"], sections={
        "rpc": ["@active active", "@enabled enabled", "@firewall active", "@table"]})),
             "head": ({**HEAD, "halo_reboot": "never", "halo_rpc_workers": ["@fake/w1"]}, probe_output())}
    run = run_fake("deploys/rollback.py", hosts)
    assert run.failed_hosts == set(), run.errors
    sent = "\n".join(run.changes("w1"))
    assert "systemctl disable --now --quiet halo-rpc.service halo-rpc-firewall.service" in sent
    assert "nft delete table inet halofleet_rpc" in sent
    for path in (paths.RPC_UNIT, paths.RPC_FIREWALL_UNIT, paths.RPC_NFT):
        assert f"rm -f {path}" in sent or f"{path} " in sent, path


def test_rollback_of_a_worker_whose_files_are_gone_still_stops_a_running_one():
    hosts = {"w1": ({**W1, "halo_reboot": "never"}, probe_output(sections={
        "rpc": ["@active active", "@enabled disabled", "@firewall inactive"]}))}
    run = run_fake("deploys/rollback.py", hosts)
    assert "systemctl disable --now --quiet halo-rpc.service halo-rpc-firewall.service" in "\n".join(
        run.changes("w1"))
    quiet = run_fake("deploys/rollback.py", {"w1": ({**W2, "halo_reboot": "never"}, probe_output())})
    assert "halo-rpc" not in "\n".join(quiet.changes("w1"))


def statuses(result) -> dict[str, str]:
    return {item["host"]: item["status"] for item in json.loads(result.stdout)}


def test_diff_exits_1_when_a_host_is_refused_and_0_when_every_host_only_has_changes(tmp_path):
    # Refused by what the host says (ROCm 7.0.1 found installed): `halofleet check` cannot know it, the review can.
    refused = write_inventory(tmp_path, {"fresh": (GOOD, probe_output()),
                                         "broken": (GOOD, probe_output(rocm_core="7.0.1.70001-42~24.04"))})
    result = invoke("diff", refused, "--deploy", "halofleet.stages.kernel", "--json")
    assert result.exit_code == 1, result.output
    assert statuses(result) == {"@fake/fresh": "changes", "@fake/broken": "refused"}
    assert invoke("diff", refused, "--deploy", "halofleet.stages.kernel").exit_code == 1  # Markdown too
    (tmp_path / "one").mkdir()
    fresh = write_inventory(tmp_path / "one", {"fresh": (GOOD, probe_output())})
    result = invoke("diff", fresh, "--deploy", "halofleet.stages.kernel", "--json")
    assert result.exit_code == 0, result.output
    assert statuses(result) == {"@fake/fresh": "changes"}
    # Refused by its data: `halofleet check` stops the review before any host is contacted, exit 2, naming it.
    (tmp_path / "bad").mkdir()
    bad = write_inventory(tmp_path / "bad", {"broken": ({**GOOD, "halo_rocm_version": "7.0.1"}, probe_output())})
    result = invoke("diff", bad, "--deploy", "halofleet.stages.kernel", "--json")
    assert result.exit_code == 2 and "@fake/broken" in result.output and "7.0.1" in result.output, result.output


def test_diff_exits_1_for_a_host_refused_by_its_probe_too(tmp_path):
    # Valid data, refused once the probe is read (ROCm 7.0.1 installed): not only data errors count.
    inventory = write_inventory(tmp_path, {"old": (GOOD, probe_output(rocm_core="7.0.1.70001-1"))})
    result = invoke("diff", inventory, "--deploy", "halofleet.stages.kernel", "--json")
    assert result.exit_code == 1, result.output
    assert statuses(result) == {"@fake/old": "refused"} and "ROCm 7.0.1 is installed and refused" in result.stdout


def test_a_fleet_whose_every_host_is_refused_ends_with_the_reason():
    from halofleet.testing.fake import probe_output, run_fake

    run = run_fake("deploys/kernel.py", {"a": ({"halo_allow_non_strix_halo": True, "halo_serve": "none"},
                                               probe_output(rocm_core="7.0.1.70001-1"))})
    assert run.failed_hosts == {"a"}
    assert any(error.startswith("halofleet: no host left to deploy (host '@fake/a': ROCm 7.0.1 is installed and "
                                "refused") for error in run.errors), run.errors


def test_the_api_key_file_is_root_only_from_its_creation_and_never_in_a_command_or_diff(caplog):
    import logging

    from halofleet.testing.fake import probe_output, run_fake

    key = "sk-guard-secret-0123456789"
    data = {"halo_allow_non_strix_halo": True, "halo_model": "/srv/models/tiny.gguf", "halo_llama_backend": "cpu",
            "halo_api_key": key, "halo_reboot": "never"}
    with caplog.at_level(logging.INFO, logger="pyinfra"):
        run = run_fake("deploys/serve.py", {"h": (data, probe_output())}, diff=True)
    assert run.failed_hosts == set(), run.errors
    sent = run.changes("h")
    assert any("(umask 077 && : > /etc/halofleet/.serve.env.halofleet-new)" in c for c in sent)
    assert any("chmod 0600 /etc/halofleet/.serve.env.halofleet-new" in c for c in sent)
    assert not any(key in c for c in sent)
    assert key not in caplog.text and "Will create /etc/halofleet/serve.env" in caplog.text
    assert "(content withheld: it holds a secret)" in caplog.text


def test_the_hub_token_goes_to_the_hubs_paths_only_from_this_machine_and_from_the_host(tmp_path):
    """A fleet serving a plain URL model and a Hub model through the packaged deploy (@fake host): the control
    machine's header reads and the host's downloads carry the token for the Hub's files only."""
    import json

    from halofleet.testing.fake import probe_output, run_fake

    files, repo = tmp_path / "mirror" / "files", tmp_path / "mirror" / "hub" / "acme" / "tiny"
    files.mkdir(parents=True)
    repo.mkdir(parents=True)
    plain = write_tiny_llama(files / "plain.gguf", seed=1)
    write_tiny_llama(repo / "hubbed.gguf", seed=2)
    log = tmp_path / "mirror.log"
    with socket.socket() as probe_port:  # a free port for the mirror's own process (run_fake patches threads)
        probe_port.bind(("127.0.0.1", 0))
        port = probe_port.getsockname()[1]
    mirror = subprocess.Popen([sys.executable, "-m", "halofleet.testing.hubmirror", str(tmp_path / "mirror"),
                               "127.0.0.1", str(port), str(log), TOKEN])
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            with socket.socket() as attempt:
                if attempt.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        data = {"halo_allow_non_strix_halo": True, "halo_llama_backend": "cpu", "halo_reboot": "never",
                "halo_hf_endpoint": base, "halo_hf_token": TOKEN, "halo_models": [
                    {"name": "plain", "url": f"{base}/files/plain.gguf",
                     "sha256": hashlib.sha256(plain.read_bytes()).hexdigest()},
                    {"name": "hubbed", "hf": "acme/tiny", "include": "*.gguf"}]}
        run = run_fake("deploys/serve.py", {"h": (data, probe_output())})
    finally:
        mirror.terminate()
        mirror.wait(timeout=10)
    assert run.failed_hosts == set(), run.errors
    requests = [json.loads(line) for line in log.read_text().splitlines()]
    plain_reads = [r for r in requests if r["path"].startswith("/files/")]
    hub_reads = [r for r in requests if r["path"].startswith("/api/") or "/resolve/" in r["path"]]
    assert plain_reads and hub_reads  # the memory check read both headers from here
    assert not any(r["auth"] for r in plain_reads) and all(r["auth"] for r in hub_reads)
    sent = run.changes("h")
    (plain_download,) = [c for c in sent if "/files/plain.gguf" in c and "curl" in c]
    (hub_download,) = [c for c in sent if "/resolve/" in c and "curl" in c]
    assert "-H @-" not in plain_download and TOKEN not in plain_download
    assert "-H @- < /etc/halofleet/hf.header" in hub_download and TOKEN not in hub_download
    # The token file the host's curl reads: root only from its creation, the token never on a command line.
    header_write = next(c for c in sent if "chmod" in c and "/etc/halofleet/.hf.header.halofleet-new" in c)
    assert "chmod 0600 /etc/halofleet/.hf.header.halofleet-new" in header_write
    assert any("(umask 077 && : > /etc/halofleet/.hf.header.halofleet-new)" in c for c in sent)
    assert not any(TOKEN in c for c in sent)
