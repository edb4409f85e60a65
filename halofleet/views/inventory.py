"""
Loading a pyinfra inventory for halofleet's own commands (verify, report, diff, bench), with the errors a user can
act on: a missing file, an inventory that fails to load, an inventory without hosts. Each is a :class:`BadInput`
(exit 2), never a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path


class BadInput(ValueError):
    """Bad usage, inventory or path: the command stops before touching any host (exit code 2)."""


def looks_like_file(inventory: str) -> bool:
    return inventory.endswith(".py") or "/" in inventory and "@" not in inventory and "," not in inventory


def load_inventory(inventory: str):
    """A pyinfra ``Inventory`` from a file, a comma-separated host list or a connector (``@local``, ``@fake``)."""
    from pyinfra_cli.inventory import make_inventory

    if looks_like_file(inventory) and not Path(inventory).is_file():
        raise BadInput(f"no inventory file {inventory!r}")
    try:
        loaded = make_inventory(inventory)
    except SystemExit as error:  # an inventory file may stop itself with a message (inventories/vm.py does)
        raise BadInput(f"inventory {inventory!r}: {error.code}") from None
    except Exception as error:  # noqa: BLE001 - the user's own Python file: any error is theirs to fix
        cause = getattr(error, "exception", error)  # pyinfra wraps errors of the file it executes
        raise BadInput(f"inventory {inventory!r} failed to load: {type(cause).__name__}: {cause}") from None
    if not len(loaded):
        raise BadInput(f"no hosts in inventory {inventory!r}")
    return loaded


def writable_path(path: str) -> Path:
    """An output file whose directory exists and is writable, checked before any host is contacted."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise BadInput(f"{path!r} is a directory; give a file name")
    if not folder.is_dir():
        raise BadInput(f"cannot write {path!r}: no directory {str(folder)!r}")
    if not os.access(folder, os.W_OK):
        raise BadInput(f"cannot write {path!r}: directory {str(folder)!r} is not writable")
    return target
