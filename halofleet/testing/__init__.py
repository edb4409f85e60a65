"""
What halofleet's tests (and ``halofleet demo``) use to make real hosts and inputs: QEMU VMs (:mod:`.vm`),
systemd-nspawn containers on a private network (:mod:`.nspawn`), local apt repositories, a Hub-like mirror, tiny
GGUF models, the fake sysfs overlay, a loopback HTTP server (:mod:`.loopback`) and the ``@fake`` connector runs; and
scenarios both host tiers run, written once: the ROCm pins (:mod:`.rocmpins`), the installed wheel
(:mod:`.wheelsite`) and serving without a kernel (:mod:`.servecases`). Imported by nothing in the product but the
CLI's ``demo`` and ``prereqs``; may import any package below the CLI.
"""
