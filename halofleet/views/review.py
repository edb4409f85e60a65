"""
``halofleet diff``: what a deploy would change on every host, as Markdown for a pull request. The same as
``pyinfra INV deploys/full.py --dry --diff`` (the deploy is prepared against the live hosts, nothing executes):
each changing operation with its file diff and the commands it would run. Secrets never appear: files holding
one are announced but not shown, and every ``halo_api_key`` of the inventory is masked in the text as well.
"""

from __future__ import annotations

import logging
import os

from .changes import HostReview, _Capture, _redact, host_changes, host_warnings, inventory_secrets  # noqa: F401


def check_deploy(deploy: str):
    """
    The deploy to prepare: a file's path (``deploys/full.py``) or a packaged function (``halofleet.stages.full``).
    One that cannot be loaded is bad usage (BadInput), found before any host is contacted.
    """
    from pyinfra_cli.util import try_import_module_attribute

    from .inventory import BadInput

    if deploy.endswith(".py"):
        if not os.path.isfile(deploy):
            raise BadInput(f"no deploy file {deploy!r}")
        return deploy
    try:
        function = try_import_module_attribute(deploy, raise_for_none=False)
    except Exception:  # noqa: BLE001 - pyinfra's CLI error for an unknown module
        function = None
    if not callable(function):
        raise BadInput(f"no deploy {deploy!r}: give a deploy file (.py) or a function like halofleet.stages.full")
    return function


def load_deploy(state, deploy: str) -> None:
    """Prepare a deploy given as a file (``deploys/full.py``) or a packaged function (``halofleet.stages.full``)."""
    from pyinfra_cli.util import load_deploy_file, load_func

    found = check_deploy(deploy)
    if callable(found):
        load_func(state, found)
    else:
        load_deploy_file(state, found)


def review(inventory_path: str, deploy_path: str, limit: tuple[str, ...] = ()) -> list[HostReview]:
    """Prepare ``deploy_path`` against every host of ``inventory_path`` (those ``limit`` selects, as pyinfra's
    ``--limit``) and collect what would change."""
    import pyinfra
    from pyinfra.api import Config, State
    from pyinfra.api.connect import disconnect_all
    from pyinfra.api.exceptions import PyinfraError
    from pyinfra.api.state import StateStage
    from pyinfra.context import ctx_inventory, ctx_state

    from .inventory import connect_hosts, limited_hosts, load_inventory

    pyinfra.is_cli = True  # operation order from the call stack, as under the CLI (hosts may run different ops)
    state = State(check_for_changes=True)
    ctx_state.set(state)
    inventory = load_inventory(inventory_path)
    ctx_inventory.set(inventory)
    selected = limited_hosts(inventory, limit)
    state.init(inventory, Config(DIFF=True, FAIL_PERCENT=100), initial_limit=selected)
    state.cwd = os.getcwd()
    capture = _Capture()
    pyinfra_logger = logging.getLogger("pyinfra")
    level = pyinfra_logger.level
    pyinfra_logger.setLevel(logging.INFO)  # the diffs are logged at INFO
    pyinfra_logger.addHandler(capture)
    reviews: dict[str, HostReview] = {}
    try:
        state.set_stage(StateStage.Connect)
        unreachable = connect_hosts(state)
        state.set_stage(StateStage.Prepare)
        if state.active_hosts:
            try:
                load_deploy(state, deploy_path)
            except PyinfraError as error:  # every host refused: each one's review carries its reason
                if state.active_hosts:
                    raise
                capture.lines.append(str(error))
        for host in inventory:
            if selected is not None and host not in selected:
                continue
            if host not in state.activated_hosts:
                reviews[host.name] = HostReview(host.name, "unreachable",
                                                reason=unreachable.get(host.name, "could not connect"))
                continue
            if host in state.failed_hosts:
                errors = [line for line in capture.lines if f"[{host.name}]" in line and "refuses" in line]
                reviews[host.name] = HostReview(host.name, "refused", reason=errors[-1] if errors else "refused")
                continue
            reviews[host.name] = host_changes(state, host, capture)
        for host in inventory:
            if host.name in reviews:
                reviews[host.name].warnings = host_warnings(capture.lines, host.name)
    finally:
        pyinfra_logger.removeHandler(capture)
        pyinfra_logger.setLevel(level)
        disconnect_all(state)
    secrets = inventory_secrets(inventory)
    return [_redact(reviews[host.name], secrets) for host in inventory if host.name in reviews]


def to_markdown(reviews: list[HostReview], inventory_path: str, deploy_path: str) -> str:
    lines = [f"# halofleet diff: `{deploy_path}` on `{inventory_path}`", ""]
    counts = {status: sum(r.status == status for r in reviews) for status in ("changes", "converged", "refused",
                                                                               "unreachable")}
    lines.append(" · ".join(f"{status}: **{count}**" for status, count in counts.items() if count) or "no hosts")
    lines.append("")
    for result in reviews:
        if result.status == "changes":
            lines += [f"## {result.host}: {len(result.operations)} operation(s) would change", ""]
        elif result.status == "converged":
            lines += [f"## {result.host}: no changes (converged)", ""]
        else:
            lines += [f"## {result.host}: {result.status}", "", f"> {result.reason}", ""]
        lines += [f"> **warning:** {warning}" for warning in result.warnings] + ([""] if result.warnings else [])
        if result.status != "changes":
            continue
        for change in result.operations:
            lines += [f"### {change.name}", ""]
            block: list[str] = []
            for line in change.diff + [""]:
                if line.startswith(("Will ", "(content withheld")) or line == "":
                    if block:
                        lines += ["```diff", *block, "```", ""]
                        block = []
                    if line:
                        lines += [f"*{line}*", ""]
                else:
                    block.append(line)
            lines += ["```sh", *change.commands, "```", ""]
    return "\n".join(lines).rstrip() + "\n"
