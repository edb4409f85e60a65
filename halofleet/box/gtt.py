"""
GTT sizing for Strix Halo's unified memory: pure functions, no host access.

The GPU maps system RAM through GTT; TTM's page limit is what actually caps it [C: DOMAIN.md "Memory limits"].
Sizes come from MemTotal (what Linux sees after the BIOS carve-out), never from the nominal RAM.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..contract import policy

KIB_PER_GIB = 1024 * 1024


@dataclass(frozen=True)
class GttPlan:
    gtt_gib: int
    visible_gib: int  # whole GiB of MemTotal
    reserve_gib: int

    @property
    def gttsize_mib(self) -> int:
        """Value for the deprecated ``amdgpu.gttsize`` (MiB)."""
        return self.gtt_gib * policy.MIB_PER_GIB

    @property
    def pages_limit(self) -> int:
        """Value for ``ttm.pages_limit`` (4 KiB pages)."""
        return self.gtt_gib * policy.PAGES_PER_GIB

    @property
    def fraction_of_ram(self) -> float:
        return self.gtt_gib / self.visible_gib if self.visible_gib else 0.0


def visible_gib(memtotal_kib: int) -> int:
    """Whole GiB of MemTotal, rounded down: a 128 GB box reporting ~125.6 GiB counts as 125."""
    return memtotal_kib // KIB_PER_GIB


def plan_gtt(visible: int, reserve_gib: int, gtt_gib: int | None = None) -> GttPlan:
    """
    GTT size for a host that sees ``visible`` GiB: ``gtt_gib`` when given, else ``visible - reserve_gib``.

    Raises ValueError naming the bound that was crossed.
    """
    if reserve_gib < policy.MIN_OS_RESERVE_GIB:
        raise ValueError(f"must be at least {policy.MIN_OS_RESERVE_GIB} GiB")
    if reserve_gib > visible - policy.MIN_GTT_GIB:
        raise ValueError(
            f"must leave at least {policy.MIN_GTT_GIB} GiB of the {visible} GiB Linux sees for GTT "
            f"(at most {visible - policy.MIN_GTT_GIB})"
        )
    size = visible - reserve_gib if gtt_gib is None else gtt_gib
    if size < policy.MIN_GTT_GIB:
        raise ValueError(f"must be at least {policy.MIN_GTT_GIB} GiB")
    if size > visible - reserve_gib:
        raise ValueError(
            f"must be at most {visible - reserve_gib} GiB ({visible} GiB visible minus {reserve_gib} GiB OS reserve)"
        )
    return GttPlan(gtt_gib=size, visible_gib=visible, reserve_gib=reserve_gib)
