"""
The whole host: preflight, then each stage in order. modprobe runs before kernel so the one reboot picks up both.
"""

from pathlib import Path

from pyinfra import local

for stage in ("preflight", "modprobe", "kernel", "rocm", "cwsr", "runtime", "serve"):
    local.include(str(Path(__file__).parent / f"{stage}.py"))
