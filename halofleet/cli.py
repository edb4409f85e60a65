"""
The ``halofleet`` command: the memory plan without a host, the host-data contract, a starter site, review, verify,
report and bench of an inventory, and the local demo.

Exit codes: 0 done; 1 a host failed, was refused or is not ok (or halofleet itself failed); 2 bad usage, inventory
or path (nothing was done). Every error is one line; ``HALOFLEET_DEBUG=1`` shows the traceback of an internal one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from importlib import resources
from pathlib import Path

import click

from . import __version__
from .box.gtt import KIB_PER_GIB
from .contract import config as config_mod
from .contract import validators
from .contract.config import ConfigError, HostRefused
from .views import sizing
from .views.check import InvalidInventory, require_valid
from .views.inventory import BadInput, writable_path

# The packaged deploys, by dotted name: pyinfra runs them without any file of this checkout.
FULL_DEPLOY = "halofleet.stages.full"
BENCH_DEPLOY = "halofleet.stages.bench"

EXIT_HOST_FAILED = 1
EXIT_BAD_INPUT = 2


class HalofleetGroup(click.Group):
    """Turns every error into one line and a meaningful exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except InvalidInventory as error:  # one line per error, each naming file, host and key
            for line in error.lines:
                click.echo(f"halofleet: {line}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except (BadInput, ConfigError) as error:
            _fail(str(error), EXIT_BAD_INPUT)
        except Exception as error:  # noqa: BLE001 - the last line of defence against a traceback
            from .testing.prereqs import MissingPrerequisite

            if isinstance(error, MissingPrerequisite):
                _fail(str(error), EXIT_BAD_INPUT)
            if os.environ.get("HALOFLEET_DEBUG"):
                raise
            _fail(f"{type(error).__name__}: {error} (HALOFLEET_DEBUG=1 shows where)", EXIT_HOST_FAILED)


def _fail(message: str, code: int) -> None:
    line = validators.mask_url_credentials(message.splitlines()[0]) if message else "error"
    click.echo(f"halofleet: {line}", err=True)
    sys.exit(code)


def _run_pyinfra(*args: str, env: dict | None = None) -> int:
    return subprocess.run([sys.executable, "-m", "pyinfra", *args], env=env).returncode


@click.group(cls=HalofleetGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="halofleet")
def main() -> None:
    """halofleet: Strix Halo LLM servers, provisioned with pyinfra."""


def synthetic_probe(ram_gib: int, model_gguf: bool = True) -> dict:
    """A Debian/GRUB host that sees ``ram_gib`` GiB, has no GPU and holds the model: enough for the plan's math."""
    return {
        "os": {"id": "debian", "version_id": "13"},  # trixie: also gives TheRock ROCm a suite directory
        "memtotal_kib": ram_gib * KIB_PER_GIB,
        "live_cmdline": [],
        "boot": {"kind": "grub", "cmdline": []},
        "cwsr": {"gfx1151_nodes": 0, "supported": None, "missing": []},
        "rocm": {},
        "files": {},
        "model": {"kind": "file", "magic": "GGUF", "size": 0, "mtime": 0} if model_gguf else {"kind": "dir",
                                                                                              "has_config": True},
    }


def _data_items(items: tuple[str, ...]) -> dict:
    """``--data key=value`` pairs; a value is read as JSON where it parses (numbers, true, lists), else text."""
    data = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("halo_"):
            raise BadInput(f"--data {item!r}: give halo_KEY=VALUE (halofleet options lists the keys)")
        try:
            data[key] = json.loads(value)
        except ValueError:
            data[key] = value
    return data


def _option_range(key: str) -> click.IntRange:
    """A CLI number in the range of the host-data key it stands for (nonsense is a usage error, exit 2)."""
    option = config_mod.OPTIONS[key]
    return click.IntRange(option.minimum, option.maximum)


class TensorSplit(click.ParamType):
    """``--tensor-split 3,1``: halo_tensor_split's grammar (numbers from 0 to a bound, not all zero)."""

    name = "N0,N1,..."

    def convert(self, value, param, ctx):  # noqa: ANN001 (click's signature)
        if isinstance(value, list):
            return value
        try:
            return validators.parse_tensor_split(value)
        except ValueError as error:
            self.fail(str(error), param, ctx)


@main.command()
@click.option("--ram-gib", type=click.IntRange(1, 4096), required=True,
              help="GiB of RAM Linux sees (MemTotal), e.g. 128.")
@click.option("--reserve-gib", type=_option_range("halo_os_reserve_gib"), default=None,
              help="GiB kept for the OS (halo_os_reserve_gib).")
@click.option("--gtt-gib", type=_option_range("halo_gtt_gib"), default=None, help="Explicit GTT size (halo_gtt_gib).")
@click.option("--iommu", type=click.Choice(["off", "pt"]), default="off")
@click.option("--no-gttsize", is_flag=True, help="Leave out the deprecated amdgpu.gttsize.")
@click.option("--serve", type=click.Choice(config_mod.SERVE_ENGINES), default="none", show_default=True,
              help="Also plan this engine (needs --model).")
@click.option("--model", "models", multiple=True, metavar="PATH[@CTX]",
              help="Model for --serve: a GGUF path on the host, or a HF id for vllm. Local GGUF files (repeatable, "
                   "PATH@CTX sets that model's context) also get the memory table: weights + KV vs the GTT budget.")
@click.option("--ctx", type=click.IntRange(*sizing.CTX_RANGE), default=None,
              help="Context for the memory table where PATH@CTX does not say (default: halo_ctx).")
@click.option("--kv-type", type=click.Choice(sizing.KV_CHOICES), default=None,
              help="KV cache type, K and V (halo_llama_kv_type).")
@click.option("--kv-type-v", type=click.Choice(sizing.KV_CHOICES), default=None,
              help="V cache type when it differs from K (halo_llama_kv_type_v).")
@click.option("--kv-unified/--no-kv-unified", default=None, help="One KV buffer for all slots (halo_llama_kv_unified).")
@click.option("--swa-full/--no-swa-full", default=None, help="Full-size sliding-window cache (halo_llama_swa_full).")
@click.option("--flash-attn", type=click.Choice(["on", "off"]), default=None, help="-fa (halo_llama_flash_attn).")
@click.option("--parallel", type=click.IntRange(1, 64), default=None, help="Slots, -np (halo_llama_parallel).")
@click.option("--ubatch", type=click.IntRange(32, 16384), default=None, help="-ub (halo_llama_ubatch).")
@click.option("--models-max", type=click.IntRange(0, 1024), default=sizing.DEFAULT_MODELS_MAX, show_default=True,
              help="Models loaded at once (llama-server --models-max; 0 = no limit): the largest are counted.")
@click.option("--rpc-worker-ram-gib", "worker_ram", multiple=True, type=click.IntRange(1, 4096),
              help="RAM of an RPC worker (repeatable, in --rpc order): print the model's split across the group.")
@click.option("--tensor-split", type=TensorSplit(), default=None, metavar="N0,N1,...",
              help="llama-server --tensor-split ratios, workers first and the head last (default: by memory).")
@click.option("--data", "data_items", multiple=True, metavar="halo_KEY=VALUE", help="Any other host data key.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan(ram_gib: int, reserve_gib: int | None, gtt_gib: int | None, iommu: str, no_gttsize: bool, serve: str,
         models: tuple[str, ...], ctx: int | None, kv_type: str | None, kv_type_v: str | None,
         kv_unified: bool | None, swa_full: bool | None, flash_attn: str | None, parallel: int | None,
         ubatch: int | None, models_max: int, worker_ram: tuple[int, ...], tensor_split: list[float] | None,
         data_items: tuple[str, ...], as_json: bool) -> None:
    """Print the kernel params, modprobe file (and engine unit, with --serve; the memory table, with --model) for a
    box with RAM_GIB. The engine flags are host data here, so the table sizes what the unit passes."""
    from .box.plan import build_plan
    from .operations.halo_kernel import render_modprobe

    model = models[0].rpartition("@")[0] if models and sizing.has_ctx(models[0]) else (models[0] if models else None)
    data = {"halo_allow_non_strix_halo": True, "halo_iommu": iommu, "halo_emit_gttsize": not no_gttsize,
            "halo_serve": serve, "halo_model": model}
    for key, value in (("halo_os_reserve_gib", reserve_gib), ("halo_gtt_gib", gtt_gib)):
        if value is not None:
            data[key] = value
    data.update(_data_items(data_items))
    for key, value in (("halo_llama_kv_type", kv_type), ("halo_llama_kv_type_v", kv_type_v),
                       ("halo_llama_kv_unified", kv_unified), ("halo_llama_swa_full", swa_full),
                       ("halo_llama_flash_attn", flash_attn), ("halo_llama_parallel", parallel),
                       ("halo_llama_ubatch", ubatch)):
        if value is not None:
            data[key] = value
    directory_model = data.get("halo_serve") == "vllm" and not str(data.get("halo_model") or "").endswith(".gguf")
    try:
        host_plan = build_plan("plan", data, synthetic_probe(ram_gib, model_gguf=not directory_model))
    except HostRefused as error:
        raise BadInput(str(error)) from None
    gtt, engine = host_plan.gtt, host_plan.serve
    modprobe = render_modprobe(host_plan.modprobe)
    try:
        memory = sizing.size(host_plan, models, ctx=ctx, models_max=models_max,
                            worker_ram=worker_ram, tensor_split=tensor_split, served=serve != "none")
    except ValueError as error:  # KVError (unreadable or unsized model), bad --tensor-split, a worker's RAM
        raise BadInput(str(error)) from None
    if as_json:
        result = {
            "ram_gib": ram_gib, "reserve_gib": gtt.reserve_gib, "gtt_gib": gtt.gtt_gib,
            "kernel_params": host_plan.kernel_params, "modprobe": modprobe, "warnings": host_plan.warnings,
            "serve": None if engine is None else {"engine": engine.engine, "flavour": engine.flavour,
                                                  "url": engine.url, "unit_path": engine.unit_path,
                                                  "unit": engine.unit, "packages": engine.packages},
        }
        if memory is not None:
            result.update(memory.as_json())
        click.echo(json.dumps(result, indent=2))
        _refuse_if_over(memory)
        return
    click.echo(f"# {ram_gib} GiB visible, {gtt.reserve_gib} GiB reserved for the OS -> GTT {gtt.gtt_gib} GiB")
    click.echo("kernel cmdline params:")
    click.echo("  " + " ".join(host_plan.kernel_params))
    click.echo("modprobe file:")
    for line in modprobe.splitlines():
        click.echo("  " + line)
    if engine is not None:
        click.echo(f"serving: {engine.engine} ({engine.flavour}) on {engine.url}, unit {engine.unit_path}:")
        for line in engine.unit.splitlines():
            click.echo("  " + line)
    if memory is not None:
        for line in memory.lines():
            click.echo(line)
    for warning in host_plan.warnings:
        click.echo(f"warning: {warning}", err=True)
    _refuse_if_over(memory)


def _refuse_if_over(memory) -> None:
    if memory is not None and memory.refusal():
        _fail(memory.refusal(), EXIT_HOST_FAILED)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the contract as JSON.")
def options(as_json: bool) -> None:
    """Print the host-data contract (every halo_* key, its type, default and allowed values)."""
    if as_json:
        click.echo(json.dumps(config_mod.options_as_dicts(), indent=2))
    else:
        click.echo(config_mod.describe_options())


def _starter_files() -> dict[str, str]:
    """Relative path -> text of every file of the starter site shipped in the package."""
    files: dict[str, str] = {}

    def walk(folder, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                if entry.name != "__pycache__":
                    walk(entry, f"{prefix}{entry.name}/")
            elif entry.name.endswith((".py", ".md")):
                files[prefix + entry.name] = entry.read_text()

    walk(resources.files("halofleet") / "starter", "")
    return files


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
def init(directory: str) -> None:
    """Write a starter site in DIRECTORY: an inventory with groups, group_data/*.py and deploy files."""
    target = Path(directory)
    files = _starter_files()
    existing = sorted(name for name in files if (target / name).exists())
    if existing:
        raise BadInput(f"{directory}: would overwrite {', '.join(existing)}; nothing written")
    try:
        for name, text in sorted(files.items()):
            path = target / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    except OSError as error:
        raise BadInput(f"cannot write the starter site in {directory!r}: {error.strerror}") from None
    for name in sorted(files):
        click.echo(f"wrote {target / name}")
    click.echo(f"next: edit {target / 'inventory.py'} and group_data/, then "
               f"`halofleet diff {target / 'inventory.py'} --deploy {target / 'deploy.py'}`")


@main.command()
@click.argument("inventory", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the hosts and findings as JSON.")
def check(inventory: str, as_json: bool) -> None:
    """Check INVENTORY without contacting any host: every host's data, RPC groups, gateway pools, groups that
    disagree, files on this machine; exit 2 on an error (each names file, host, key and the fix)."""
    from .views.check import check as check_inventory
    from .views.check import format_table

    result = check_inventory(inventory)
    click.echo(json.dumps(result.as_json(), indent=2) if as_json else format_table(result))
    sys.exit(EXIT_BAD_INPUT if result.errors else 0)


def limit_option(command):
    return click.option("--limit", "limit", multiple=True, metavar="HOST|GROUP",
                        help="Only these hosts or groups (repeatable; shell wildcards in host names), as pyinfra's "
                             "--limit.")(command)


def _rows_exit(rows: list[dict[str, str]]) -> int:
    return 0 if all(row["status"] == "ok" for row in rows) else EXIT_HOST_FAILED


@main.command()
@click.argument("inventory", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@limit_option
@click.option("--deep", is_flag=True, help="Also ask every engine our fixed prompts and check the answers against "
                                           "the model's golden and the other hosts serving it (the correctness gate).")
def verify(inventory: str, as_json: bool, limit: tuple[str, ...], deep: bool) -> None:
    """Read what is live on every host of INVENTORY (changes nothing); exit 1 if any host is not ok."""
    from .views.verify import collect

    require_valid(inventory)
    rows = collect(inventory, limit, deep=deep)
    _print_rows(rows, as_json)
    sys.exit(_rows_exit(rows))


def _print_rows(rows: list[dict[str, str]], as_json: bool) -> None:
    from .views.correctness import DETAIL
    from .views.verify import format_table

    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(format_table(rows))
    for row in rows:
        if row.get(DETAIL) and not row["correctness"].startswith("ok"):
            click.echo(f"\n{row['host']}: {row[DETAIL]}")


@main.command()
@click.argument("inventory", type=click.Path(dir_okay=False))
@click.option("--replace", is_flag=True, help="Record this run's answers even where a golden exists (after a "
                                              "deliberate change of model file, build or backend).")
@click.option("--perplexity", is_flag=True, help="Also run llama-perplexity over our text on each host serving the "
                                                  "distro's llama-server (skipped where the model is larger than half "
                                                  "the free memory).")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@limit_option
def qualify(inventory: str, replace: bool, perplexity: bool, as_json: bool, limit: tuple[str, ...]) -> None:
    """Record the golden of every model served in INVENTORY (fixed prompts, greedy tokens, top-k log-probabilities),
    where none exists, once the hosts serving it agree; exit 1 if a host disagrees or is not ok."""
    from .box.golden import directory
    from .views.verify import collect

    require_valid(inventory)
    rows = collect(inventory, limit, deep=True, record=True, replace=replace, perplexity=perplexity)
    _print_rows(rows, as_json)
    if not as_json:
        click.echo(f"goldens: {directory()}")
    sys.exit(_rows_exit(rows))


@main.command()
@click.argument("inventory", type=click.Path(dir_okay=False))
@click.option("--deploy", default=FULL_DEPLOY, show_default=True, type=click.Path(dir_okay=False),
              help="Deploy to review: a deploy file, or a packaged function such as halofleet.stages.kernel.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), help="Write the Markdown here (default: stdout).")
@click.option("--json", "as_json", is_flag=True, help="Print the review as JSON.")
@limit_option
def diff(inventory: str, deploy: str, out_path: str | None, as_json: bool, limit: tuple[str, ...]) -> None:
    """What DEPLOY would change on every host of INVENTORY, as Markdown for a pull request (changes nothing);
    exit 1 if a host is refused or unreachable."""
    from .views.review import check_deploy, review, to_markdown

    target = writable_path(out_path) if out_path else None
    check_deploy(deploy)
    require_valid(inventory)
    reviews = review(inventory, deploy, limit)
    if as_json:
        text = json.dumps([asdict(item) for item in reviews], indent=2)
    else:
        text = to_markdown(reviews, inventory, deploy)
    if target:
        target.write_text(text + "\n")
        click.echo(f"wrote {out_path}: " + ", ".join(f"{r.host} {r.status}" for r in reviews))
    else:
        click.echo(text)
    sys.exit(0 if all(r.status in ("changes", "converged") for r in reviews) else EXIT_HOST_FAILED)


@main.command()
@click.argument("inventory", type=click.Path(dir_okay=False))
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Write the HTML report here.")
@click.option("--md", "md_path", type=click.Path(dir_okay=False), help="Write the Markdown report here.")
@limit_option
def report(inventory: str, html_path: str | None, md_path: str | None, limit: tuple[str, ...]) -> None:
    """Render the verification facts of every host of INVENTORY as an HTML and/or Markdown table; the HTML
    report also draws the last day per host from the inventory's monitor host (halo_monitor), when there is one."""
    from .views.report import render_report
    from .views.verify import collect, format_table

    targets = [(writable_path(path), fmt) for path, fmt in ((html_path, "html"), (md_path, "md")) if path]
    require_valid(inventory)
    rows = collect(inventory, limit)
    history = None
    if html_path:
        from .views.plots import fleet_history, inventory_hosts

        history = fleet_history(inventory_hosts(inventory))
    for path, fmt in targets:
        path.write_text(render_report(rows, fmt, title=inventory, history=history if fmt == "html" else None))
        click.echo(f"wrote {path}")
    if not targets:
        click.echo(format_table(rows))
    sys.exit(_rows_exit(rows))


@main.command()
@click.argument("inventory", type=click.Path(dir_okay=False))
@limit_option
def bench(inventory: str, limit: tuple[str, ...]) -> None:
    """Run llama-bench (pp512, tg128) on every llama-server host of INVENTORY; print tokens/s vs the roofline.

    llama-bench needs the memory the engine holds: halo-serve.service is stopped on a host while it runs there
    (drained at its gateway first) and started again after, halo_restart_batch hosts at a time (default 1); an
    engine that does not serve again stops the later batches."""
    from pyinfra.api import State
    from pyinfra.context import ctx_state

    from .views.inventory import limited_hosts, load_inventory
    from .views.verify import collect

    require_valid(inventory)  # a missing, empty or invalid inventory stops here, before pyinfra runs
    ctx_state.set(State())
    limited_hosts(load_inventory(inventory), limit)  # a --limit that matches nothing stops here too
    returncode = _run_pyinfra("-y", *(arg for pattern in limit for arg in ("--limit", pattern)), inventory,
                              BENCH_DEPLOY)
    rows = collect(inventory, limit)
    width = max(len(row["host"]) for row in rows)
    for row in rows:
        click.echo(f"{row['host'].ljust(width)}  {row['bench']}")
    # A host that serves no llama-server (a gateway, an RPC worker, vLLM) has no figures to miss.
    missing = [row for row in rows if row["bench"] == "-" and row["serving"].startswith(("llama-server", "-"))]
    sys.exit(EXIT_HOST_FAILED if returncode or missing else 0)


@main.command(context_settings={"ignore_unknown_options": True}, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def pyinfra(args: tuple[str, ...]) -> None:
    """Run the pyinfra installed beside halofleet with ARGS (uv tool and pipx installs keep it off PATH)."""
    sys.exit(_run_pyinfra(*args))


@main.command()
@click.option("--keep", is_flag=True, help="Leave the VM running (its inventory is printed).")
@click.option("--deploy", default=FULL_DEPLOY, show_default=True,
              help="Deploy to run: a deploy file, or a packaged function.")
def demo(keep: bool, deploy: str) -> None:
    """
    Boot a local QEMU VM (Debian forky, no GPU), run the full deploy on it serving a tiny generated model with
    llama-server on the CPU backend, reboot it when the kernel stage asks, and print the verification table.
    """
    from .testing import prereqs

    prereqs.check(modules=prereqs.DEMO_MODULES)  # before anything is written or started
    from .testing import vm as vm_mod
    from .testing.tinymodel import write_tiny_llama
    from .views.verify import collect, format_table

    workdir = vm_mod.cache_dir() / "demo"
    workdir.mkdir(parents=True, exist_ok=True)
    model = write_tiny_llama(workdir / "tiny-llama.gguf")
    base = vm_mod.base_image(vm_mod.SERVING_SUITE, vm_mod.SERVING_PACKAGES)
    machines = vm_mod.boot_vms(["halo-demo"], base, workdir)
    serving = {"halo_serve": "llama-server", "halo_llama_backend": "cpu", "halo_model": str(model),
               "halo_model_push": True, "halo_ctx": 512}
    description = vm_mod.write_inventory(machines, workdir / "vms.json", group_data=serving)
    os.environ["HALOFLEET_VM_INVENTORY"] = str(description)
    inventory = str(vm_mod.INVENTORY_FILE)
    try:
        returncode = _run_pyinfra("-y", inventory, deploy)
        rows = collect(inventory)
        click.echo(format_table(rows))
    finally:
        if not keep:
            for machine in machines:
                machine.stop()
    if keep:
        click.echo(f"VM left running: HALOFLEET_VM_INVENTORY={description} pyinfra {inventory} {FULL_DEPLOY}")
    sys.exit(EXIT_HOST_FAILED if returncode or _rows_exit(rows) else 0)


if __name__ == "__main__":
    main()
