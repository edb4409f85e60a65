"""
Serving scenarios that need no kernel, GRUB, reboot, sysfs overlay or podman, written once for both tiers that
run them on a real systemd host: a forky QEMU VM (``tests/vm/test_serve.py``, opt-in) and a forky systemd-nspawn
container (``tests/nspawn/test_serve_host.py``, in CI). Each scenario asserts as it goes.

A tier hands its host over as a :class:`ServeHost`; the engine is llama-server from the distro (CPU backend) on
127.0.0.1:8080, the model pushed from the control machine::

    host = ServeHost(name="srv1", sh=..., deploy=..., diff=..., manages_boot=True)
    servecases.review_of_a_fresh_host(host, data, tmp_path / "review.md")
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..contract.paths import HF_HEADER
from .runs import ROOT, PyinfraRun, dry_run_listing

SERVING = "llama-server serving on http://127.0.0.1:8080"
SECRETS = ("halo_api_key", "halo_hf_token")


@dataclass
class ServeHost:
    """
    One test host as the scenarios drive it.

    + name: its inventory name
    + sh: ``sh(command, check=True)`` runs a shell command as root there and returns its stdout, stripped
    + deploy: ``deploy(host_data, deploy_file, review=False)`` runs a packaged deploy on the hosts named in
      ``host_data`` ({name: data}) with that data (``review``: ``--dry --diff``)
    + diff: ``diff(host_data, out)`` runs ``halofleet diff`` on those hosts into ``out`` and returns its text
    + manages_boot: halofleet writes this host's GRUB drop-in (a VM; a container is ``halo_boot: external``)
    """

    name: str
    sh: Callable[..., str]
    deploy: Callable[..., PyinfraRun]
    diff: Callable[..., str]
    manages_boot: bool


def engine_pids(host: ServeHost) -> str:
    return host.sh("pgrep -x llama-server", check=False)


def review_of_a_fresh_host(host: ServeHost, data: dict, out: Path) -> None:
    """
    ``halofleet diff`` and ``pyinfra --dry --diff`` of ``deploys/full.py`` on a host halofleet never touched: every
    file and command a run would make is listed, the secrets of ``data`` (API key, Hub token) in neither output, and
    the host is still untouched afterwards.
    """
    secrets = [data[key] for key in SECRETS if data.get(key)]
    assert secrets, "the scenario needs a secret in the data to prove it is not shown"
    untouched = f"ls -d /etc/halofleet /etc/systemd/system/halo-serve.service /etc/modprobe.d/zz-halofleet.conf " \
                f"/etc/default/grub.d/zz-halofleet.cfg 2>&1 | grep -c 'No such'"
    assert host.sh(untouched) == "4", "the host is not fresh"
    files = ["/etc/modprobe.d/zz-halofleet.conf", "/etc/systemd/system/halo-serve.service",
             "/etc/halofleet/serve.env"]
    grub = "/etc/default/grub.d/zz-halofleet.cfg"
    if host.manages_boot:
        files.append(grub)
    if data.get("halo_hf_token"):
        files.append(HF_HEADER)

    text = host.diff({host.name: data}, out)
    assert f"## {host.name}: " in text and "would change" in text, text[-3000:]
    for expected in [f"Will create {path}" for path in files] + [
            "+ExecStart=/usr/bin/llama-server", "(content withheld: it holds a secret)",
            "systemctl restart halo-serve.service"]:
        assert expected in text, (expected, text[-3000:])
    assert (grub in text) is host.manages_boot, text[-3000:]  # a container's boot is not halofleet's
    for secret in secrets:
        assert secret not in text

    dry = host.deploy({host.name: data}, "deploys/full.py", review=True)
    assert dry.returncode == 0, dry.stderr[-3000:]
    for path in files:
        assert f"Will create {path}" in dry.stderr, (path, dry.stderr[-3000:])
    commands = "\n".join(dry_run_listing(dry.stderr))  # halofleet's listing after pyinfra's diffs
    assert f"[{host.name}] halofleet | serve | {SERVING}" in commands, commands[-3000:]
    assert "systemctl restart halo-serve.service" in commands
    assert ("update-grub" in commands) is host.manages_boot
    for secret in secrets:
        assert secret not in dry.stderr
    assert host.sh(untouched) == "4", "a review changed the host"


def stopping_leaves_no_engine_behind(host: ServeHost, data: dict) -> None:
    """On a host serving with ``data`` (converged): a stop leaves no engine process, and the next run starts it
    again without touching any file."""
    assert engine_pids(host), "the host is not serving"
    host.sh("systemctl stop halo-serve.service")
    assert engine_pids(host) == ""
    run = host.deploy({host.name: data}, "deploys/full.py")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.changed_names == [SERVING], run.changed_names
    assert engine_pids(host)


def corrupt_model_fails_without_a_crash_loop(host: ServeHost, data: dict, model: Path, workdir: Path) -> None:
    """``model`` cut after its first 4 KiB (a GGUF header, then nothing) and pushed under the same name: the run
    fails this host with a clear error, and systemd gives up after its start limit instead of restarting forever."""
    corrupt = workdir / model.name
    corrupt.write_bytes(model.read_bytes()[:4096])
    run = host.deploy({host.name: {**data, "halo_model": str(corrupt)}}, "deploys/full.py")
    assert run.returncode != 0
    assert "halo-serve.service did not become healthy" in run.stderr, run.stderr[-3000:]
    assert run.summary_line(host.name).startswith(f"{host.name}  failed"), run.summary_line(host.name)
    deadline = time.monotonic() + 180
    while host.sh("systemctl is-active halo-serve.service", check=False) != "failed":
        assert time.monotonic() < deadline, "halo-serve kept restarting"
        time.sleep(2)
    restarts = int(host.sh("systemctl show -P NRestarts halo-serve.service"))
    assert restarts <= 3, restarts
    assert engine_pids(host) == ""


def hostile_model_name_refused(host: ServeHost, data: dict, model: Path, workdir: Path, other: ServeHost,
                               other_data: dict) -> None:
    """
    ``host`` serves with ``data``, ``other`` is converged with ``other_data``. A pushed model named
    ``evil $(touch PWNED);x.gguf`` refuses ``host`` in preflight; in the same run ``other`` carries on with nothing
    to do; the engine unit is unchanged and still active, and no marker file exists on any host or the controller.
    """
    hostile = workdir / "evil $(touch PWNED);x.gguf"
    hostile.write_bytes(model.read_bytes())
    unit = "sha256sum /etc/systemd/system/halo-serve.service"
    before = host.sh(unit)
    run = host.deploy({host.name: {**data, "halo_model": str(hostile)}, other.name: other_data}, "deploys/full.py")
    assert run.returncode == 1, run.stderr[-3000:]
    assert f"[{host.name}] halofleet refuses this host: host '{host.name}': halo_model=" in run.stderr
    assert run.failed_hosts == [host.name] and run.changed_ops == [], (run.failed_hosts, run.changed_ops)
    assert host.sh(unit) == before
    assert host.sh("systemctl is-active halo-serve.service") == "active"
    for box in (host, other):
        assert box.sh("find / -xdev -name 'PWNED*' 2>/dev/null; true") == "", box.name
    assert not list(ROOT.glob("PWNED*")) and not list(workdir.glob("PWNED*"))
