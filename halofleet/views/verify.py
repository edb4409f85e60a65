"""
What is actually live on each host: the preflight probe read again after a deploy, judged against the host's own
plan. Read-only: gathering it changes nothing.
"""

from __future__ import annotations

from typing import Any

from ..box import cmdline
from ..box.bench import BenchFigures, bench_cell
from ..box.cmdline import ParamConflict
from ..box.plan import build_plan
from ..box.serving import ServePlan, config_stamp, split_stamp
from ..box.stack import digest_drift, drift_cell
from ..contract import policy, stacks
from ..contract.config import PARSE_FAILURES, ConfigError, HostRefused, option_value
from ..fleet import rpc
from ..fleet.gateway import gateway_cell, inventory_groups, served_models
from ..models.specs import validate
from . import correctness

DEEP_COLUMN = "correctness"  # `verify --deep` only: the correctness gate per host
COLUMNS = ("host", "cmdline", "ttm GiB", "gtt (sysfs)", "rocm", "cwsr", "mes", "stack", "gpu faults", "runtime",
           "reboot pending", "serving", "models", "engine", "image", "completion", "rpc", "bench", "gateway", "status")
PENDING, DRIFT = "pending restart", "drift"


def serving_cells(health: dict[str, Any] | None) -> tuple[str, str]:
    """The 'serving' and 'completion' cells from the ServeHealth fact."""
    if not health or not health.get("configured"):
        return "none", "-"
    if health.get("error"):
        return health["error"], "-"
    serving = f"{health.get('engine')} {health.get('active')}, /health {health.get('health') or 'no answer'}"
    if health.get("completion") == 200 and health.get("tokens"):
        latency = health.get("latency_s")
        completion = f"{health['tokens']} tokens" + (f" in {latency:.2f} s" if latency is not None else "")
    else:
        completion = f"failed (HTTP {health.get('completion') or 'no answer'})"
    return serving, completion


def engine_cell(serve: ServePlan, probe: dict[str, Any]) -> tuple[str, str | None]:
    """
    The 'engine' cell and its verdict (None: live, else ``pending restart`` or ``drift``): what runs (the
    engine's real command line, the stamp of what last started verified) against what is written on the host
    (the probe's digests of the unit, environment and preset) and what the host data asks for (the plan).
    """
    state, files = probe.get("serve") or {}, probe.get("files") or {}
    recorded_model, recorded_config = split_stamp(state.get("stamp"))
    written = config_stamp(files, serve.watched_paths)
    argv = state.get("argv")
    if serve.unit_path not in files:
        return "not deployed", None
    if written != serve.config_stamp:
        return "drift: the files on the host are not what its data asks for (run the deploy)", DRIFT
    if recorded_model is None:
        return f"{PENDING}: never started verified by halofleet", PENDING
    if recorded_model != serve.model_stamp:
        return f"{PENDING}: the model on the host is not the one the engine started with", PENDING
    if recorded_config is not None and recorded_config != written:
        return f"{PENDING}: unit or environment written but not live", PENDING
    if serve.exec_argv is not None and argv is not None and argv != serve.exec_argv:
        return "drift: the engine's command line is not its unit's", DRIFT
    if argv is None:
        return "not running", None
    return "live" if serve.exec_argv is not None else "live (stamp)", None


def verify_row(host: str, data: dict[str, Any], probe: dict[str, Any] | None,
               health: dict[str, Any] | None = None, bench: BenchFigures | None = None,
               fleet: dict[str, dict[str, Any]] | None = None,
               worker_plans: dict[str, Any] | None = None, reason: str | None = None) -> dict[str, str]:
    """One row of the verification table for ``host``; never raises. RPC groups need ``fleet`` (every host's
    data) and, for a head, its workers' plans (:func:`plans_of_workers`); ``reason``: why a host without a probe
    could not be reached (pyinfra's words)."""
    row = {column: "-" for column in COLUMNS}
    row["host"] = host
    if probe is None:
        row["status"] = f"unreachable: {reason}" if reason else "unreachable"
        return row
    gtt = probe.get("gtt") or {}
    modules = (probe.get("stack") or {}).get("ttm_modules") or {}
    # The TTM module present, in amd-smi's order (amdttm, amd_ttm, ttm): its live pages_limit
    pages = next((modules[name] for name in policy.TTM_MODULES if modules.get(name)), None) \
        or gtt.get("ttm_pages_limit") or gtt.get("amdttm_pages_limit")
    row["ttm GiB"] = f"{pages / policy.PAGES_PER_GIB:g}" if pages else "not loaded"
    cards = gtt.get("cards") or {}
    row["gtt (sysfs)"] = ", ".join(f"{card} {size / 2**30:g} GiB" for card, size in sorted(cards.items())) or "skipped"
    row["rocm"] = (probe.get("rocm") or {}).get("version") or "none"
    row["runtime"] = ", ".join(sorted(probe.get("runtimes") or {})) or "none"
    row["serving"], row["completion"] = serving_cells(health)
    if health and health.get("ids") is not None:
        row["models"] = ", ".join(health["ids"]) or "none"  # what /v1/models answers, not what the data says
    faults = probe.get("faults") or {}
    row["gpu faults"] = "unknown" if faults.get("count") is None else str(faults["count"])
    image = probe.get("running_image")
    # name@digest prefix: enough to see which hosts of a fleet run another build of the same tag
    row["image"] = f"{image['name'].rsplit('/', 1)[-1]}@{image['digest'][len('sha256:'):][:12]}" if image else "-"
    # A gateway host: each backend as haproxy sees it (its stats socket); "-" where no haproxy of ours runs.
    row["gateway"] = gateway_cell((probe.get("gateway") or {}).get("backends"))
    try:
        plan = build_plan(host, data, probe, fleet=fleet, worker_plans=worker_plans)
    except (ConfigError, HostRefused, ParamConflict) as error:
        row["status"] = f"refused: {error}"
        return row
    except PARSE_FAILURES as error:  # facts this code cannot judge: this row says so, the others carry on
        row["status"] = f"refused: host {host!r}: could not judge its facts ({type(error).__name__}: {error})"
        return row
    row["bench"] = bench_cell(bench, plan.config.mem_bandwidth_gbs, plan.config.mem_bandwidth_measured_gbs)
    live = probe.get("live_cmdline") or []
    live_ok = cmdline.satisfies(live, plan.kernel_params)
    row["cmdline"] = "ok" if live_ok else "differs"
    row["cwsr"] = plan.gpu_check(plan.cwsr["supported"])
    mes = (probe.get("amdgpu") or {}).get("mes") or []
    row["mes"] = ", ".join(f"{version:#x}" for version in mes) or ("unknown" if plan.strix_halo else "skipped")
    stack_reboot = plan.stack is not None and plan.stack.reboot_needed or plan.carveout is not None
    row["reboot pending"] = "yes" if plan.reboot_needed or stack_reboot else "no"
    row["stack"] = f"{plan.stack.profile.name}: {drift_cell(plan.stack.drift)}" if plan.stack else "-"
    # Without a GPU driver ttm may not be loaded at all (forky's VM kernel: no ttm user): nothing to compare there.
    pages_ok = pages == plan.gtt.pages_limit or (pages is None and not plan.strix_halo)
    # What the driver maps, per card, must be the planned GTT too (a carve-out or a stale module param shows here).
    gtt_ok = not plan.strix_halo or bool(cards) and all(size == plan.gtt.gtt_gib * 2**30 for size in cards.values())
    serving_ok = plan.serve is None or bool(health and health.get("healthy"))
    rpc_ok = True
    if plan.rpc:
        row["rpc"], rpc_ok = rpc.worker_cell(plan, probe)
    elif plan.rpc_members:
        row["rpc"], rpc_ok = rpc.head_cell(plan, probe.get("rpc_log"))
    serving_ok = serving_ok and rpc_ok
    verdict = None
    if plan.serve is not None:
        row["engine"], verdict = engine_cell(plan.serve, probe)
    if not (live_ok and pages_ok and gtt_ok):
        row["status"] = "not converged"
    elif faults.get("count"):
        row["status"] = "gpu faults"
    elif verdict:
        row["status"] = verdict
    elif not serving_ok:
        row["status"] = "unhealthy"
    elif plan.stack is not None and plan.stack.drifted:
        row["status"] = "stack drift"
    else:
        row["status"] = "ok"
    return row


def format_table(rows: list[dict[str, str]]) -> str:
    extra = [column for column in (DEEP_COLUMN, "perplexity") if any(column in row for row in rows)]
    columns = [*COLUMNS[:-1], *extra, COLUMNS[-1]]
    widths = {column: max(len(column), *(len(row.get(column, "-")) for row in rows)) for column in columns}
    lines = ["  ".join(column.ljust(widths[column]) for column in columns)]
    lines.append("  ".join("-" * widths[column] for column in columns))
    for row in rows:
        lines.append("  ".join(row.get(column, "-").ljust(widths[column]) for column in columns))
    return "\n".join(lines)


def plans_of_workers(probes: dict[str, dict[str, Any] | None], fleet: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The plans of every RPC worker that answered (None where refused): what their heads' rows are judged by."""
    plans: dict[str, Any] = {}
    for name, data in fleet.items():
        probe = probes.get(name)
        if probe is None or data.get("halo_serve") != "rpc-worker":
            continue
        try:
            plans[name] = build_plan(name, data, probe, fleet=fleet)
        except (ConfigError, HostRefused, ParamConflict, *PARSE_FAILURES):
            plans[name] = None
    return plans


def collect(inventory_path: str, limit: tuple[str, ...] = (), deep: bool = False, record: bool = False,
            replace: bool = False, perplexity: bool = False) -> list[dict[str, str]]:
    """
    Connect to every host of a pyinfra inventory (those ``limit`` selects, as pyinfra's ``--limit``), probe it
    and ask its engine, and build the rows (a host that cannot be reached is a row saying so). A missing or empty
    inventory is a :class:`~.inventory.BadInput`. ``deep``: also the correctness gate per host (column
    ``correctness``; ``record``: write missing goldens, ``replace``: re-record them, as ``halofleet qualify`` does).
    """
    from pyinfra.api import Config, State
    from pyinfra.api.connect import disconnect_all
    from pyinfra.api.facts import get_fact
    from pyinfra.context import ctx_host, ctx_inventory, ctx_state

    from ..box.serving import probe_args
    from ..contract.localfiles import anchor_local_paths
    from ..facts.probe import HostProbe
    from .inventory import connect_hosts, limited_hosts, load_inventory, loaded_inventory_dir

    state = State()
    ctx_state.set(state)
    inventory = load_inventory(inventory_path)
    ctx_inventory.set(inventory)
    selected = limited_hosts(inventory, limit)
    state.init(inventory, Config(FAIL_PERCENT=100), initial_limit=selected)
    reasons = connect_hosts(state)
    base = loaded_inventory_dir()
    datas = {host.name: anchor_local_paths(host.data.dict(), base) for host in inventory}

    def facts_of(host) -> tuple[dict, dict, BenchFigures | None] | str:
        try:
            args = probe_args(validate(host.name, datas[host.name]))
        except ConfigError:
            args = {}
        with ctx_host.use(host):
            try:
                probe = get_fact(state, host, HostProbe, kwargs={**args, "live": True, "stack": True})
            except PARSE_FAILURES as error:
                return f"refused: host {host.name!r}: could not read its facts ({type(error).__name__}: {error})"
            if deep:
                probe["answers"] = correctness.ask(state, host, probe, fleet, perplexity)
            return probe, probe.get("health"), probe.get("bench")

    fleet = datas  # every host's data, paths anchored: the RPC groups and the gate read the other hosts
    try:
        greenlets = {host: state.pool.spawn(facts_of, host) for host in inventory if host in state.activated_hosts}
        results = {host: greenlet.get() for host, greenlet in greenlets.items()}
    finally:
        disconnect_all(state)
    probes = {host.name: result[0] for host, result in results.items() if not isinstance(result, str)}
    worker_plans = plans_of_workers(probes, fleet)
    rows = []
    for host in inventory:
        if selected is not None and host not in selected:
            continue
        result = results.get(host, (None, None, None))
        if isinstance(result, str):
            rows.append({**{column: "-" for column in COLUMNS}, "host": host.name, "status": result})
            continue
        probe, health, bench = result
        rows.append(verify_row(host.name, datas[host.name], probe, health, bench, fleet, worker_plans,
                               reason=reasons.get(host.name)))
    served = {host.name: (result[1] or {}).get("ids") for host, result in results.items()
              if not isinstance(result, str)}
    image_drift(rows, probes, datas)
    for row in rows:
        routes_cell(row, datas[row["host"]], inventory, served)
    if deep:
        correctness.judge_rows(rows, probes, record=record, replace=replace)
    return rows


def image_drift(rows: list[dict[str, str]], probes: dict[str, dict], datas: dict[str, dict]) -> None:
    """Hosts of one stack profile running one image tag at different digests: each says so in its stack cell."""
    images = {}
    for name, probe in probes.items():
        running = probe.get("running_image") or {}
        try:
            profile = stacks.resolve(option_value(name, "halo_stack", datas[name].get("halo_stack")))
        except ConfigError:
            continue
        if profile is not None and running.get("name") and running.get("digest"):
            images[name] = (profile.name, running["name"], running["digest"])
    for row in rows:
        found = digest_drift(images).get(row["host"])
        if found:
            row["stack"] = f"{row['stack']}; drift: {found}" if row["stack"] not in ("-", "") else f"drift: {found}"
            if row["status"] == "ok":
                row["status"] = "stack drift"


def routes_cell(row: dict[str, str], data: dict[str, Any], inventory, served: dict[str, list[str] | None]) -> None:
    """
    A gateway's routing next to what its backends serve (each one's own /v1/models): ``model -> group (hosts
    serving it)``; a routed model no backend of its group serves makes the gateway's row unhealthy.
    """
    try:
        if not option_value(row["host"], "halo_gateway", data.get("halo_gateway")):
            return
        config = validate(row["host"], data, serving=False)
        groups = inventory_groups(config, inventory)
    except (ConfigError, HostRefused):
        return
    def serves(name: str, backend: dict[str, Any], model: str) -> bool:
        live = served.get(name) or []
        if model in live:
            return True
        try:  # one model without a name answers whatever name a request carries [U]: answering at all counts
            engine = option_value(name, "halo_serve", backend.get("halo_serve"))
            return bool(live) and served_models(name, engine, backend) is None
        except ConfigError:
            return False

    parts, missing = [], []
    for model, group in sorted((config.gateway_models or {}).items()):
        hosts = [name for name, backend in groups.get(group, []) if serves(name, backend, model)]
        parts.append(f"{model} -> {group} ({', '.join(hosts) or 'served by none'})")
        if not hosts:
            missing.append(model)
    if parts:
        row["gateway"] = f"{row['gateway']}; routes: {'; '.join(parts)}"
    if missing and row["status"] == "ok":
        row["status"] = f"unhealthy: the gateway routes {', '.join(missing)} but no backend serves it"
