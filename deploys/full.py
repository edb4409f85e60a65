"""
The whole host: preflight, then each stage in order. modprobe runs before kernel so the one reboot picks up both.
"""

from pathlib import Path

from pyinfra import local

from halofleet import summary

summary.install()  # one line per host at the end: converged / changed / failed / unreachable
for stage in ("preflight", "modprobe", "kernel", "rocm", "cwsr", "runtime", "serve"):
    local.include(str(Path(__file__).parent / f"{stage}.py"))
