"""
Provisioning speed on the VM harness, beside a plain-pyinfra baseline with the same end state, measured in the same
run on the same VMs.

    python benchmarks/provision.py [--runs 3] [--json benchmarks/results/provision.json]

Boots three fresh forky VMs (TCG here), then:
  - times a full halofleet deploy on --runs fresh VMs (serving a tiny model; includes its one reboot),
  - reads every managed file (bytes, mode, owner), the service user and the package lists off a halofleet host into
    the spec benchmarks/baseline_deploy.py reads, so the baseline (stock pyinfra operations) puts the same files,
  - runs the baseline on a fourth VM halofleet never touched and diffs it against a halofleet host (sha256, mode,
    owner of each managed file; user, groups, service state); refuses to report if they differ,
  - times no-op re-runs on 1 VM and on 3 VMs, halofleet and baseline alternating (A B A B ...) so that load drift
    hits both; every no-op run must change nothing (pyinfra's --json results), or the benchmark fails,
  - counts remote commands (and uploads) per host in the no-op runs at pyinfra's SSH connector.
Prints each run and the medians and writes JSON. A benchmark, not a test: only a wrong comparison stops it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from halofleet.contract import paths, policy  # noqa: E402
from halofleet.testing import vm as vm_mod  # noqa: E402
from halofleet.testing.tinymodel import write_tiny_llama  # noqa: E402

FULL, BASELINE = "deploys/full.py", "benchmarks/baseline_deploy.py"
SPEC_ENV = "HALOFLEET_BASELINE_SPEC"
USER = "halo"  # halo_service_user's default
MODEL_DIR = "/var/lib/halofleet/models"  # halo_model_dir's default
ROLES = {"grub": paths.GRUB_DROPIN, "modprobe": paths.MODPROBE_FILE, "env": paths.SERVE_ENV,
         "conf": paths.SERVE_CONF, "unit": paths.SERVE_UNIT, "stamp": paths.SERVE_STAMP}


@dataclass
class Run:
    seconds: float
    commands: int  # per host, the highest
    uploads: int
    changed: list[str]  # "operation: hosts" for every operation that changed something


def pyinfra_run(description: Path, deploy: str, spec: Path) -> Run:
    """One ``pyinfra -y --json`` run through the counting wrapper; stops the benchmark if it fails."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        counts_path = handle.name
    env = {**os.environ, "HALOFLEET_VM_INVENTORY": str(description), SPEC_ENV: str(spec)}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "counting_pyinfra.py"), counts_path, "-y", "--json",
         "inventories/vm.py", deploy], cwd=ROOT, env=env, capture_output=True, text=True,
    )
    seconds = time.monotonic() - started
    counts = json.loads(Path(counts_path).read_text() or "{}")
    os.unlink(counts_path)
    stdout = proc.stdout.strip()
    result = json.loads(stdout) if stdout.startswith("{") else {}
    if proc.returncode != 0 or not result.get("results"):
        print(proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"{deploy} failed on {description.name} (exit {proc.returncode})")
    # As tests/vm/conftest.py's changed_ops: pyinfra lists a host under "success" only if the op yielded commands.
    changed = [f"{op['name']}: {', '.join(op['success'])}" for op in result["results"]["operations"] if op["success"]]
    return Run(seconds, max(c["commands"] for c in counts.values()), max(c["uploads"] for c in counts.values()),
               changed)


def harvest(machine: vm_mod.VM, model_name: str, serving_packages: list[str]) -> dict:
    """The baseline's spec: what halofleet left on ``machine``, read back over SSH."""
    def stat(path: str) -> dict:
        mode, user, group = machine.ssh(f"stat -c '%a %U %G' {path}").stdout.split()
        return {"path": path, "mode": mode, "user": user, "group": group}

    files = {}
    for role, path in {**ROLES, "model": f"{MODEL_DIR}/{model_name}"}.items():
        content = machine.ssh(f"base64 -w0 {path}").stdout.strip()
        files[role] = {**stat(path), "content": content}
    _, _, uid, gid, _, home, shell = machine.ssh(f"getent passwd {USER}").stdout.strip().split(":")
    group = machine.ssh(f"id -gn {USER}").stdout.strip()
    groups = [name for name in machine.ssh(f"id -Gn {USER}").stdout.split() if name != group]
    gpu_groups = {}
    for line in machine.ssh(f"getent group {group} {' '.join(policy.GPU_GROUPS)}").stdout.split():
        name, _, group_id = line.split(":")[:3]
        gpu_groups[name] = int(group_id)
    return {
        "files": files, "model_dir": stat(MODEL_DIR), "groups": gpu_groups, "service": paths.SERVE_SERVICE,
        "user": {"name": USER, "uid": int(uid), "group": group, "groups": groups, "home": home, "shell": shell},
        "runtime_packages": list(policy.RUNTIME_PACKAGES["podman"]), "serving_packages": serving_packages,
    }


def fingerprint(machine: vm_mod.VM, model_name: str) -> dict[str, str]:
    """sha256, mode and owner of every managed path (and the model), plus the user and the service state."""
    targets = [*paths.MANAGED_FILES, MODEL_DIR, f"{MODEL_DIR}/{model_name}"]
    script = "; ".join(
        f"if [ -f {p} ]; then echo {p} $(stat -c '%a %U:%G' {p}) $(sha256sum < {p} | cut -c1-64); "
        f"elif [ -e {p} ]; then echo {p} $(stat -c '%F %a %U:%G' {p}); else echo {p} absent; fi" for p in targets
    )
    state = (f"echo passwd $(getent passwd {USER}); echo groups $(id -Gn {USER}); "
             f"echo gids $(getent group {' '.join(policy.GPU_GROUPS)}); "
             f"echo service $(systemctl is-active {paths.SERVE_SERVICE}) $(systemctl is-enabled {paths.SERVE_SERVICE})")
    lines = machine.ssh(f"{script}; {state}").stdout.splitlines()
    return dict(line.split(" ", 1) for line in lines if line.strip())


def interleaved(description: Path, spec: Path, runs: int) -> dict[str, list[Run]]:
    """A B A B ...: halofleet then baseline, --runs times each, on the same VMs; every run must be a no-op."""
    out: dict[str, list[Run]] = {"halofleet": [], "baseline": []}
    for index in range(runs):
        for name, deploy in (("halofleet", FULL), ("baseline", BASELINE)):
            run = pyinfra_run(description, deploy, spec)
            print(f"  {description.stem} run {index + 1} {name:9}: {run.seconds:6.1f} s, {run.commands} commands, "
                  f"{run.uploads} uploads/host, changed: {run.changed or 'nothing'}", flush=True)
            if run.changed:
                raise SystemExit(f"no-op {name} run changed something: {run.changed}")
            out[name].append(run)
    return out


def boot(names: list[str], base: Path, workdir: Path) -> list[vm_mod.VM]:
    """As vm_mod.boot_vms, with a longer wait: other jobs' VMs share the 2 cores and a TCG boot can take 5+ min."""
    vms = [vm_mod.VM.from_base(name, base, workdir) for name in names]
    for machine in vms:
        machine.start()
    try:
        for machine in vms:
            print(f"  {machine.name} reachable after {machine.wait_ssh(timeout=1200):.0f} s", flush=True)
    except Exception:
        for machine in vms:
            machine.stop()
        raise
    return vms


def summary(runs: list[Run]) -> dict:
    return {"seconds_median": statistics.median(r.seconds for r in runs), "seconds": [r.seconds for r in runs],
            "commands_per_host": statistics.median(r.commands for r in runs),
            "uploads_per_host": statistics.median(r.uploads for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "provision.json"))
    parser.add_argument("--note", default="", help="machine load etc., stored with the figures")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="halofleet-bench-"))
    model = write_tiny_llama(workdir / "tiny-llama.gguf")
    spec = workdir / "baseline-spec.json"
    base = vm_mod.base_image(vm_mod.SERVING_SUITE, vm_mod.SERVING_PACKAGES)
    serving = {"halo_llama_backend": "cpu", "halo_model": str(model), "halo_model_push": True, "halo_ctx": 512,
               "halo_reboot_timeout": 1800}  # other jobs load the cores: a TCG reboot can take minutes
    serving_packages = ["curl", policy.LLAMA_DISTRO_PACKAGE, *policy.LLAMA_BACKEND_PACKAGES["cpu"]]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    results: dict = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                     "commit": head.stdout.strip(), "note": args.note, "accelerator": vm_mod.accelerator(),
                     "runs": args.runs, "cpus": os.cpu_count(), "load_before": os.getloadavg()}
    vms = boot(["bench1", "bench2", "bench3"], base, workdir)
    try:
        fresh = []
        for machine in vms[: args.runs]:
            single = vm_mod.write_inventory([machine], workdir / f"{machine.name}.json", group_data=serving)
            fresh.append(pyinfra_run(single, FULL, spec).seconds)
            print(f"  fresh halofleet deploy on {machine.name}: {fresh[-1]:.0f} s", flush=True)
        results["halofleet_fresh_deploy_seconds_median"] = statistics.median(fresh)
        results["halofleet_fresh_deploy_seconds"] = fresh

        spec.write_text(json.dumps(harvest(vms[0], model.name, serving_packages)))
        # The baseline alone, on a VM halofleet never touched; stopped before the timed no-op runs.
        [other] = boot(["benchb"], base, workdir)
        try:
            single = vm_mod.write_inventory([other], workdir / "benchb.json", group_data=serving)
            results["baseline_fresh_deploy_seconds"] = pyinfra_run(single, BASELINE, spec).seconds
            print(f"  fresh baseline deploy on benchb: {results['baseline_fresh_deploy_seconds']:.0f} s", flush=True)
            ours, theirs = fingerprint(vms[0], model.name), fingerprint(other, model.name)
        finally:
            other.stop()
        differing = sorted(key for key in ours.keys() | theirs.keys() if ours.get(key) != theirs.get(key))
        print("\nmanaged files, halofleet (bench1) vs baseline (benchb):")
        for key in sorted(ours):
            print(f"  {'DIFFERS' if key in differing else 'same   '} {key} {ours[key]}")
        results["end_state_diff"] = {"compared": sorted(ours), "differing": differing}
        if differing:
            for key in differing:
                print(f"  {key}:\n    halofleet {ours.get(key)}\n    baseline  {theirs.get(key)}", file=sys.stderr)
            raise SystemExit(f"baseline and halofleet end states differ: {differing}")

        one = vm_mod.write_inventory(vms[:1], workdir / "one-vm.json", group_data=serving)
        three = vm_mod.write_inventory(vms, workdir / "three-vms.json", group_data=serving)
        converge = pyinfra_run(three, BASELINE, spec)  # same files already: expected to change nothing
        print(f"\n  baseline on the halofleet VMs first: changed {converge.changed or 'nothing'}", flush=True)
        for label, description in (("1vm", one), ("3vm", three)):
            for name, runs in interleaved(description, spec, args.runs).items():
                results[f"{name}_noop_{label}"] = summary(runs)
    finally:
        for machine in vms:
            machine.stop()
    results["load_after"] = os.getloadavg()

    for name in ("halofleet", "baseline"):
        results[f"{name}_scaling_3_over_1"] = (results[f"{name}_noop_3vm"]["seconds_median"]
                                               / results[f"{name}_noop_1vm"]["seconds_median"])
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")

    def both(key: str, fmt: str) -> tuple[str, str]:
        return fmt.format(results[f"halofleet_{key}"]), fmt.format(results[f"baseline_{key}"])

    rows = [
        ("full deploy, fresh VM (s)", f"{results['halofleet_fresh_deploy_seconds_median']:.0f}",
         f"{results['baseline_fresh_deploy_seconds']:.0f} (1 run)"),
        ("no-op re-run, 1 VM (s)", *both("noop_1vm", "{0[seconds_median]:.1f}")),
        ("no-op re-run, 3 VMs (s)", *both("noop_3vm", "{0[seconds_median]:.1f}")),
        ("scaling 3 VMs / 1 VM", *both("scaling_3_over_1", "{0:.2f}x")),
        ("remote commands per host, no-op", *both("noop_1vm", "{0[commands_per_host]:.0f}")),
        ("uploads per host, no-op", *both("noop_1vm", "{0[uploads_per_host]:.0f}")),
    ]
    print(f"\nprovisioning benchmark ({results['accelerator']}, {results['cpus']} host CPUs, median of {args.runs}, "
          f"{results['commit']}, load {results['load_before'][0]:.1f} -> {results['load_after'][0]:.1f})")
    print(f"{'':34} {'halofleet full.py':>18} {'baseline (stock)':>18}")
    for label, ours_cell, baseline_cell in rows:
        print(f"{label:34} {ours_cell:>18} {baseline_cell:>18}")
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
