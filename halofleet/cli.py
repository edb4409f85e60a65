"""The ``halofleet`` command: review the memory math without a host, list the host-data contract, run the demo."""

from __future__ import annotations

import sys

import click

from . import config as config_mod
from .config import ConfigError, HostRefused
from .memory import KIB_PER_GIB
from .operations.halo_kernel import render_modprobe
from .plan import build_plan


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


if __name__ == "__main__":
    main()
