"""
pyinfra facts: what a host says, each a shell command and a pure ``parse_*`` of its output. :mod:`.probe` is the one
wide preflight probe (one round trip) over the parts the other modules define: :mod:`.halo` (kernel, boot, GTT,
firmware, runtimes), :mod:`.halo_serve` (the engine), amdgpu/KFD sysfs, ROCm packages, the stack's packages, holds,
GRUB entries, carve-out and TTM module (:mod:`.halo_stack`, an optional part of the probe), RPC workers, the
gateway, the monitoring units and files (:mod:`.halo_monitor`) and model files, and the engine's answers to the
correctness gate's prompts (:mod:`.halo_answers`). May import :mod:`halofleet.contract`, :mod:`halofleet.models`,
:mod:`halofleet.fleet` and :mod:`halofleet.box` (their parsers and tables), never operations, views or stages.
"""
