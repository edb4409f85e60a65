import pytest

from halofleet.box import gtt as memory


@pytest.mark.parametrize(
    "visible, reserve, gttsize, pages",
    [
        (128, 8, 122880, 31457280),  # AMD playbooks: amd-ttm --set 120 [C]
        (128, 4, 126976, 32505856),  # kyuz0: 124 GiB on 128 GB [C]
        (64, 5, 60416, 15466496),  # 64 GB boxes: 59 GiB [C/S]
    ],
)
def test_documented_values(visible, reserve, gttsize, pages):
    plan = memory.plan_gtt(visible, reserve)
    assert (plan.gttsize_mib, plan.pages_limit) == (gttsize, pages)


def test_size_comes_from_memtotal_not_nominal_ram():
    # A 128 GB box with a 0.5 GB carve-out shows ~125.6 GiB: 125 whole GiB, not 128.
    memtotal_kib = int(125.6 * 1024 * 1024)
    assert memory.visible_gib(memtotal_kib) == 125
    assert memory.plan_gtt(memory.visible_gib(memtotal_kib), 8).gtt_gib == 117


def test_pages_and_mib_always_describe_the_same_size():
    for gib in range(4, 129):
        plan = memory.plan_gtt(gib + 8, 8)
        assert plan.pages_limit * 4096 == plan.gttsize_mib * 1024 * 1024


def test_explicit_gtt_is_kept_within_ram_minus_reserve():
    assert memory.plan_gtt(128, 8, 100).gtt_gib == 100
    with pytest.raises(ValueError, match="at most 120 GiB"):
        memory.plan_gtt(128, 8, 121)
    with pytest.raises(ValueError, match="at least 4 GiB"):
        memory.plan_gtt(128, 8, 2)


@pytest.mark.parametrize("reserve, message", [(0, "at least 4"), (-3, "at least 4"), (125, "at most 124")])
def test_reserve_bounds(reserve, message):
    with pytest.raises(ValueError, match=message):
        memory.plan_gtt(128, reserve)
