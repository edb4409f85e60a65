"""
The host-data contract, at the bottom of halofleet: every ``halo_*`` key with its type, default, choices and doc
in one table (:mod:`.options`), which is also the validation (:mod:`.config`: ``coerce_keys``, ``check_rules``,
``ConfigError``, ``HostRefused``), the grammars each value must follow (:mod:`.validators`), the domain facts the
rules rest on (:mod:`.policy`: ROCm streams, kernels, firmware, limits, with their sources), the stack profiles
``halo_stack`` selects (:mod:`.stacks`: kernel, firmware, MES, ROCm, llama.cpp, images, each value sourced and
dated), the paths halofleet
writes on a host (:mod:`.paths`), the files on the control machine that host data names (:mod:`.localfiles`:
relative paths anchored at the inventory, regular files only, bounded reads) and the template renderer
(:mod:`.templating`). No host is contacted here; it imports nothing of halofleet outside this package, so
every other package may import it.
"""
