"""
pyinfra operations, one per idea and idempotent by construction: managed files with backups (:mod:`.halo_files`), the
kernel cmdline and modprobe options (:mod:`.halo_kernel`), a host brought to its stack profile (kernel and firmware
packages held, GRUB's default, the carve-out: :mod:`.halo_stack`), ROCm repositories and pins, models, the engine and
its restarts (with the correctness gate, :mod:`.halo_gate`), RPC workers, llama-bench, node exporter and the fleet's
Prometheus (:mod:`.halo_monitor`). Every command is built with
``StringCommand``/``QuoteString``. May import the packages below (contract, models, fleet, box, facts); the stages
call them.
"""
