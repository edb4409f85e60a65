"""
Loading a pyinfra inventory for halofleet's own commands (verify, report, diff, bench), with the errors a user can
act on: a missing file, an inventory that fails to load, an inventory without hosts. Each is a :class:`BadInput`
(exit 2), never a traceback.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# The directory of the inventory file last loaded here: relative control-machine paths in host data start there.
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # pyinfra colours some messages
# (A plain value, not a ContextVar: pyinfra prepares hosts in greenlets, which start with an empty context.)
_loaded_dir: dict[str, str | None] = {"dir": None}


def loaded_inventory_dir() -> str | None:
    return _loaded_dir["dir"]


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
    _loaded_dir["dir"] = inventory_dir_of(inventory)
    return loaded


def inventory_dir_of(inventory: str) -> str | None:
    """The absolute directory of an inventory file (None: a host list or connector, paths stay as given)."""
    return os.path.dirname(os.path.abspath(inventory)) if os.path.isfile(inventory) else None


def limited_hosts(inventory, limit: tuple[str, ...] | list[str] | None) -> list | None:
    """
    The hosts ``--limit`` selects, as pyinfra's own ``--limit``: each pattern a group name, else a host name
    (shell wildcards allowed); None: no limit. A pattern that matches nothing is bad usage, not an empty run.
    """
    from fnmatch import fnmatch

    if not limit:
        return None
    hosts: list = []
    for pattern in limit:
        matched = inventory.get_group(pattern, default=None) or [each for each in inventory
                                                                 if fnmatch(each.name, pattern)]
        if not matched:
            raise BadInput(f"--limit {pattern!r} matches no host or group of the inventory")
        hosts += [each for each in matched if each not in hosts]
    return hosts


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


def connect_hosts(state) -> dict[str, str]:
    """
    Connect to every host of ``state``'s inventory at once; the hosts that fail are failed in ``state`` and
    returned with pyinfra's own reason ("Could not resolve hostname", "Authentication failed"...).
    """
    from pyinfra.api.exceptions import ConnectError, PyinfraError

    hosts = [each for each in state.inventory if state.is_host_in_limit(each)]

    def attempt(each) -> str | None:
        try:
            each.connect(raise_exceptions=True)  # pyinfra still logs the reason itself
        except ConnectError as error:
            return ANSI.sub("", str(error.args[0] if error.args else error)).strip() or "could not connect"
        return None

    greenlets = {each: state.pool.spawn(attempt, each) for each in hosts}
    reasons = {}
    for each, greenlet in greenlets.items():
        reason = greenlet.get()
        if each.connected:
            state.activate_host(each)
        else:
            reasons[each.name] = reason or "could not connect"
    try:
        state.fail_hosts({each for each in hosts if each.name in reasons}, activated_count=len(hosts))
    except PyinfraError:  # no host reachable: each one's row says why
        pass
    return reasons
