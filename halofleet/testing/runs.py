"""
One pyinfra run against test hosts (QEMU VMs or nspawn containers), its JSON results parsed: shared by both tiers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout (deploys/ and inventories/ live there)


@dataclass
class PyinfraRun:
    returncode: int
    result: dict | None
    stderr: str
    seconds: float

    @property
    def changed_ops(self) -> list[str]:
        """Names of operations that changed something on any host (from pyinfra's own JSON results)."""
        if not self.result or not self.result.get("results"):
            return []
        return [op["name"] for op in self.result["results"]["operations"] if op["success"]]

    @property
    def changed_names(self) -> list[str]:
        """Like changed_ops, without the ``halofleet | <stage> | `` prefix of the packaged deploys."""
        return [name.rsplit(" | ", 1)[-1] for name in self.changed_ops]

    def summary_line(self, host: str) -> str:
        """The host's line of halofleet's end-of-run summary (stderr)."""
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip().startswith(host + " ")]
        return lines[-1] if lines else ""

    @property
    def failed_hosts(self) -> list[str]:
        return self.result["results"]["failed_hosts"] if self.result and self.result.get("results") else []


def dry_run_listing(stderr: str) -> list[str]:
    """The commands halofleet's dry-run listing says a run would execute (one block per host and operation)."""
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if "Commands a run would execute" in line)
    listing = []
    for line in lines[start + 1:]:
        if line.startswith("--> ") or line.startswith("halofleet summary"):
            break
        listing.append(line.rstrip())
    return listing


def run_pyinfra(description: Path, deploy: str, *args: str, timeout: int = 1500, review: bool = False,
                prefix: tuple[str, ...] = ()) -> PyinfraRun:
    """
    ``pyinfra -y --json inventories/vm.py DEPLOY`` against the hosts in ``description``, its JSON results parsed.
    ``review=True`` runs ``--dry --diff`` as a person reviewing would (no -y, no --json: pyinfra prints diffs only
    in change detection, which -y skips and --json silences). ``prefix`` wraps the command (e.g. ``ip netns exec``
    to reach hosts on a network that exists only inside a namespace).
    """
    env = {**os.environ, "HALOFLEET_VM_INVENTORY": str(description)}
    started = time.monotonic()
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "pyinfra", *(["--dry", "--diff"] if review else ["-y", "--json"]), *args,
         "inventories/vm.py", deploy],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    seconds = time.monotonic() - started
    result = None
    stdout = proc.stdout.strip()
    if stdout.startswith("{"):
        result = json.loads(stdout)
    print(f"pyinfra {deploy} {' '.join(args)}: exit {proc.returncode} in {seconds:.0f} s")
    return PyinfraRun(proc.returncode, result, proc.stderr, seconds)
