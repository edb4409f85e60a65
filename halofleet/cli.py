"""The ``halofleet`` command: review the memory math without a host, list the host-data contract, run the demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click

from . import config as config_mod
from .config import ConfigError, HostRefused
from .memory import KIB_PER_GIB
from .operations.halo_kernel import render_modprobe
from .plan import build_plan


# Deploy files and inventories live in the project checkout, next to which the commands are run.
DEPLOYS = Path("deploys")


def synthetic_probe(ram_gib: int) -> dict:
    """A Debian/GRUB host that sees ``ram_gib`` GiB and has no GPU: enough for the plan's math."""
    return {
        "os": {"id": "debian"},
        "memtotal_kib": ram_gib * KIB_PER_GIB,
        "live_cmdline": [],
        "boot": {"kind": "grub", "cmdline": []},
        "cwsr": {"gfx1151_nodes": 0, "supported": None, "missing": []},
        "rocm": {},
        "files": {},
    }


@click.group()
def main() -> None:
    """halofleet: Strix Halo LLM servers, provisioned with pyinfra."""


@main.command()
@click.option("--ram-gib", type=int, required=True, help="GiB of RAM Linux sees (MemTotal), e.g. 128.")
@click.option("--reserve-gib", type=int, default=None, help="GiB kept for the OS (halo_os_reserve_gib).")
@click.option("--gtt-gib", type=int, default=None, help="Explicit GTT size (halo_gtt_gib).")
@click.option("--iommu", type=click.Choice(["off", "pt"]), default="off")
@click.option("--no-gttsize", is_flag=True, help="Leave out the deprecated amdgpu.gttsize.")
def plan(ram_gib: int, reserve_gib: int | None, gtt_gib: int | None, iommu: str, no_gttsize: bool) -> None:
    """Print the kernel params and modprobe file the deploy would write for a box with RAM_GIB."""
    data = {"halo_allow_non_strix_halo": True, "halo_iommu": iommu, "halo_emit_gttsize": not no_gttsize}
    if reserve_gib is not None:
        data["halo_os_reserve_gib"] = reserve_gib
    if gtt_gib is not None:
        data["halo_gtt_gib"] = gtt_gib
    try:
        host_plan = build_plan("plan", data, synthetic_probe(ram_gib))
    except (ConfigError, HostRefused) as error:
        click.echo(f"halofleet: {error}", err=True)
        sys.exit(2)
    gtt = host_plan.gtt
    click.echo(f"# {ram_gib} GiB visible, {gtt.reserve_gib} GiB reserved for the OS -> GTT {gtt.gtt_gib} GiB")
    click.echo("kernel cmdline params:")
    click.echo("  " + " ".join(host_plan.kernel_params))
    click.echo("modprobe file:")
    for line in render_modprobe(host_plan.modprobe).splitlines():
        click.echo("  " + line)
    for warning in host_plan.warnings:
        click.echo(f"warning: {warning}", err=True)


@main.command()
def options() -> None:
    """Print the host-data contract (every halo_* key, its type, default and allowed values)."""
    click.echo(config_mod.describe_options())


@main.command()
@click.argument("inventory")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def verify(inventory: str, as_json: bool) -> None:
    """Read what is live on every host of INVENTORY (changes nothing); exit 1 if any host is not ok."""
    from .verify import collect, format_table

    rows = collect(inventory)
    click.echo(json.dumps(rows, indent=2) if as_json else format_table(rows))
    sys.exit(0 if all(row["status"] == "ok" for row in rows) else 1)


@main.command()
@click.argument("inventory")
@click.option("--deploy", default=str(DEPLOYS / "full.py"), show_default=True, help="Deploy file to review.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), help="Write the Markdown here (default: stdout).")
def diff(inventory: str, deploy: str, out_path: str | None) -> None:
    """What DEPLOY would change on every host of INVENTORY, as Markdown for a pull request (changes nothing)."""
    from .review import review, to_markdown

    reviews = review(inventory, deploy)
    text = to_markdown(reviews, inventory, deploy)
    if out_path:
        Path(out_path).write_text(text)
        click.echo(f"wrote {out_path}: " + ", ".join(f"{r.host} {r.status}" for r in reviews))
    else:
        click.echo(text)


@main.command()
@click.argument("inventory")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Write the HTML report here.")
@click.option("--md", "md_path", type=click.Path(dir_okay=False), help="Write the Markdown report here.")
def report(inventory: str, html_path: str | None, md_path: str | None) -> None:
    """Render the verification facts of every host of INVENTORY as an HTML and/or Markdown table."""
    from .report import render_report
    from .verify import collect, format_table

    rows = collect(inventory)
    for path, fmt in ((html_path, "html"), (md_path, "md")):
        if path:
            Path(path).write_text(render_report(rows, fmt, title=inventory))
            click.echo(f"wrote {path}")
    if not (html_path or md_path):
        click.echo(format_table(rows))
    sys.exit(0 if all(row["status"] == "ok" for row in rows) else 1)


@main.command()
@click.argument("inventory")
def bench(inventory: str) -> None:
    """Run llama-bench (pp512, tg128) on every llama-server host of INVENTORY; print tokens/s vs the roofline."""
    from .verify import collect

    result = subprocess.run([sys.executable, "-m", "pyinfra", "-y", inventory, str(DEPLOYS / "bench.py")])
    rows = collect(inventory)
    width = max(len(row["host"]) for row in rows)
    for row in rows:
        click.echo(f"{row['host'].ljust(width)}  {row['bench']}")
    sys.exit(result.returncode or (0 if all(row["bench"] != "-" for row in rows) else 1))


@main.command()
@click.option("--keep", is_flag=True, help="Leave the VM running (inventories/vm.py then reaches it).")
@click.option("--deploy", default=str(DEPLOYS / "full.py"), show_default=True, help="Deploy file to run.")
def demo(keep: bool, deploy: str) -> None:
    """
    Boot a local QEMU VM (Debian forky, no GPU), run the full deploy on it serving a tiny generated model with
    llama-server on the CPU backend, reboot it when the kernel stage asks, and print the verification table.
    """
    from .testing import vm as vm_mod
    from .testing.tinymodel import write_tiny_llama
    from .verify import collect, format_table

    workdir = vm_mod.cache_dir() / "demo"
    workdir.mkdir(parents=True, exist_ok=True)
    model = write_tiny_llama(workdir / "tiny-llama.gguf")
    base = vm_mod.base_image(vm_mod.SERVING_SUITE, vm_mod.SERVING_PACKAGES)
    machines = vm_mod.boot_vms(["halo-demo"], base, workdir)
    serving = {"halo_serve": "llama-server", "halo_llama_backend": "cpu", "halo_model": str(model),
               "halo_model_push": True, "halo_ctx": 512}
    description = vm_mod.write_inventory(machines, workdir / "vms.json", group_data=serving)
    env = {**os.environ, "HALOFLEET_VM_INVENTORY": str(description)}
    inventory = "inventories/vm.py"
    try:
        result = subprocess.run([sys.executable, "-m", "pyinfra", "-y", inventory, deploy], env=env)
        os.environ["HALOFLEET_VM_INVENTORY"] = str(description)
        rows = collect(inventory)
        click.echo(format_table(rows))
    finally:
        if not keep:
            for machine in machines:
                machine.stop()
    if keep:
        click.echo(f"VM left running: HALOFLEET_VM_INVENTORY={description} pyinfra {inventory} ...")
    sys.exit(0 if result.returncode == 0 and all(row["status"] == "ok" for row in rows) else 1)


if __name__ == "__main__":
    main()
