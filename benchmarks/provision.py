"""
Provisioning speed on the VM harness, beside a plain-pyinfra baseline measured in the same run on the same VMs.

    python benchmarks/provision.py [--runs 3] [--json benchmarks/results/provision.json]

Boots three fresh forky VMs (TCG here), then measures, each as the median of --runs runs:
  - wall time of a full halofleet deploy on a fresh VM (serving a tiny model; includes its one reboot),
  - wall time of a no-op re-run on 1 VM and on 3 VMs (and their ratio),
  - remote commands (and uploads) per host in a no-op re-run, counted at pyinfra's SSH connector,
and the same no-op figures for benchmarks/baseline_deploy.py (8 stock pyinfra operations).
Prints a table and writes JSON. Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from halofleet.testing import vm as vm_mod  # noqa: E402
from halofleet.testing.tinymodel import write_tiny_llama  # noqa: E402


def timed_run(description: Path, deploy: str) -> tuple[float, dict, int]:
    """One pyinfra CLI run (-y); wall seconds, per-host command counts, exit status."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        counts_path = handle.name
    env = {**os.environ, "HALOFLEET_VM_INVENTORY": str(description)}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "counting_pyinfra.py"), counts_path, "-y", "inventories/vm.py",
         deploy], cwd=ROOT, env=env, capture_output=True, text=True,
    )
    seconds = time.monotonic() - started
    counts = json.loads(Path(counts_path).read_text() or "{}")
    os.unlink(counts_path)
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
    return seconds, counts, proc.returncode


def series(description: Path, deploy: str, runs: int) -> dict:
    seconds, commands, uploads = [], [], []
    for _ in range(runs):
        wall, counts, code = timed_run(description, deploy)
        if code != 0:
            raise SystemExit(f"{deploy} failed on {description.name}")
        seconds.append(wall)
        commands.append(max(item["commands"] for item in counts.values()))
        uploads.append(max(item["uploads"] for item in counts.values()))
    return {"seconds_median": statistics.median(seconds), "seconds": seconds,
            "commands_per_host": statistics.median(commands), "uploads_per_host": statistics.median(uploads)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "provision.json"))
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="halofleet-bench-"))
    model = write_tiny_llama(workdir / "tiny-llama.gguf")
    base = vm_mod.base_image(vm_mod.SERVING_SUITE, vm_mod.SERVING_PACKAGES)
    serving = {"halo_llama_backend": "cpu", "halo_model": str(model), "halo_model_push": True, "halo_ctx": 512}
    vms = vm_mod.boot_vms(["bench1", "bench2", "bench3"], base, workdir)
    results: dict = {"accelerator": vm_mod.accelerator(), "runs": args.runs, "cpus": os.cpu_count()}
    try:
        one = vm_mod.write_inventory(vms[:1], workdir / "one.json", group_data=serving)
        three = vm_mod.write_inventory(vms, workdir / "three.json", group_data=serving)

        fresh = []
        for machine in vms[: args.runs]:
            single = vm_mod.write_inventory([machine], workdir / f"{machine.name}.json", group_data=serving)
            wall, counts, code = timed_run(single, "deploys/full.py")
            if code != 0:
                raise SystemExit(f"fresh deploy failed on {machine.name}")
            fresh.append(wall)
        results["halofleet_fresh_deploy_seconds_median"] = statistics.median(fresh)
        results["halofleet_fresh_deploy_seconds"] = fresh
        results["halofleet_noop_1vm"] = series(one, "deploys/full.py", args.runs)
        results["halofleet_noop_3vm"] = series(three, "deploys/full.py", args.runs)

        timed_run(three, "benchmarks/baseline_deploy.py")  # converge the baseline first
        results["baseline_noop_1vm"] = series(one, "benchmarks/baseline_deploy.py", args.runs)
        results["baseline_noop_3vm"] = series(three, "benchmarks/baseline_deploy.py", args.runs)
    finally:
        for machine in vms:
            machine.stop()

    for name in ("halofleet", "baseline"):
        results[f"{name}_scaling_3_over_1"] = (results[f"{name}_noop_3vm"]["seconds_median"]
                                               / results[f"{name}_noop_1vm"]["seconds_median"])
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")

    rows = [
        ("full deploy, fresh VM (s)", f"{results['halofleet_fresh_deploy_seconds_median']:.0f}", "-"),
        ("no-op re-run, 1 VM (s)", f"{results['halofleet_noop_1vm']['seconds_median']:.1f}",
         f"{results['baseline_noop_1vm']['seconds_median']:.1f}"),
        ("no-op re-run, 3 VMs (s)", f"{results['halofleet_noop_3vm']['seconds_median']:.1f}",
         f"{results['baseline_noop_3vm']['seconds_median']:.1f}"),
        ("scaling 3 VMs / 1 VM", f"{results['halofleet_scaling_3_over_1']:.2f}x",
         f"{results['baseline_scaling_3_over_1']:.2f}x"),
        ("remote commands per host, no-op", f"{results['halofleet_noop_1vm']['commands_per_host']:.0f}",
         f"{results['baseline_noop_1vm']['commands_per_host']:.0f}"),
        ("uploads per host, no-op", f"{results['halofleet_noop_1vm']['uploads_per_host']:.0f}",
         f"{results['baseline_noop_1vm']['uploads_per_host']:.0f}"),
    ]
    print(f"\nprovisioning benchmark ({results['accelerator']}, {results['cpus']} host CPUs, median of {args.runs})")
    print(f"{'':34} {'halofleet full.py':>18} {'baseline (8 ops)':>18}")
    for label, ours, baseline in rows:
        print(f"{label:34} {ours:>18} {baseline:>18}")
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
