"""GTT sizing at its bounds (mutation-tested): expected values are hand-computed
(pages = GiB x 262144, MiB = GiB x 1024)."""

import pytest

from halofleet.box import gtt as memory


def test_128_gib_box_with_8_gib_reserve():
    plan = memory.plan_gtt(128, 8)
    assert (plan.gtt_gib, plan.visible_gib, plan.reserve_gib) == (120, 128, 8)
    assert plan.pages_limit == 31457280  # 120 x 262144
    assert plan.gttsize_mib == 122880  # 120 x 1024
    assert plan.fraction_of_ram == 0.9375  # 120 / 128


def test_fraction_of_a_host_that_sees_no_ram_is_zero():
    assert memory.GttPlan(gtt_gib=4, visible_gib=0, reserve_gib=4).fraction_of_ram == 0.0


@pytest.mark.parametrize("kib, gib", [(134217728, 128), (134217727, 127), (1048576, 1), (1048575, 0), (0, 0)])
def test_visible_gib_rounds_down_whole_gib(kib, gib):
    assert memory.visible_gib(kib) == gib


def test_smallest_reserve_and_smallest_gtt_are_allowed():
    assert memory.plan_gtt(128, 4).gtt_gib == 124
    assert memory.plan_gtt(128, 124).gtt_gib == 4  # leaves exactly the 4 GiB GTT floor
    assert memory.plan_gtt(8, 4).gtt_gib == 4


def test_reserve_below_the_floor_is_refused_with_its_bound():
    with pytest.raises(ValueError, match=r"^must be at least 4 GiB$"):
        memory.plan_gtt(128, 3)


def test_reserve_leaving_less_than_4_gib_is_refused_with_both_numbers():
    with pytest.raises(ValueError) as error:
        memory.plan_gtt(128, 125)
    assert str(error.value) == "must leave at least 4 GiB of the 128 GiB Linux sees for GTT (at most 124)"


def test_explicit_gtt_bounds():
    assert memory.plan_gtt(128, 8, 4).gtt_gib == 4
    assert memory.plan_gtt(128, 8, 120).gtt_gib == 120
    assert memory.plan_gtt(128, 8, 120).pages_limit == 31457280
    with pytest.raises(ValueError, match=r"^must be at least 4 GiB$"):
        memory.plan_gtt(128, 8, 3)
    with pytest.raises(ValueError) as error:
        memory.plan_gtt(128, 8, 121)
    assert str(error.value) == "must be at most 120 GiB (128 GiB visible minus 8 GiB OS reserve)"


def test_explicit_gtt_keeps_the_reserve_it_was_given():
    plan = memory.plan_gtt(64, 5, 32)
    assert (plan.gtt_gib, plan.visible_gib, plan.reserve_gib, plan.gttsize_mib, plan.pages_limit) == (
        32, 64, 5, 32768, 8388608)
