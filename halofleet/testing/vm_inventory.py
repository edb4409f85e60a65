"""
The harness's local QEMU VMs, as a pyinfra inventory file (``halofleet demo`` and the VM tests write the description
this file reads). Shipped in the package so an installed halofleet has it; ``inventories/vm.py`` is a link to it.

    HALOFLEET_VM_INVENTORY=/path/to/vms.json pyinfra inventories/vm.py deploys/full.py

Defaults to the demo's description under the VM cache. Every VM gets halo_allow_non_strix_halo (no GPU in QEMU).
"""

import json
import os
from pathlib import Path

_path = Path(os.environ.get("HALOFLEET_VM_INVENTORY", Path.home() / ".cache/halofleet/vm/demo/vms.json"))
if not _path.exists():
    raise SystemExit(f"halofleet: no VM description at {_path}; run `halofleet demo --keep` first or set "
                     "HALOFLEET_VM_INVENTORY")
_description = json.loads(_path.read_text())
_group = {"halo_allow_non_strix_halo": True, **_description.get("group_data", {})}

vms = ([tuple(entry) for entry in _description["hosts"]], _group)

# Extra inventory groups by name ({"groups": {"small": ["srv1"]}}), e.g. a gateway's halo_gateway_groups.
for _name, _members in _description.get("groups", {}).items():
    if _name.isidentifier() and _name != "vms":
        globals()[_name] = list(_members)
