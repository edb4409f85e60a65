"""Kernel cmdline parsing, merging and the reboot decision (mutation-tested): hand-written expected lists."""

import pytest

from halofleet.box import cmdline
from halofleet.box.cmdline import KernelParams, ParamConflict

OURS = ["amd_iommu=off", "ttm.pages_limit=31457280", "amdgpu.gttsize=122880"]


@pytest.mark.parametrize(
    "text, params",
    [
        ("", []),
        ("   \t\n", []),
        ("quiet", ["quiet"]),
        ("  quiet\tsplash\n ro  ", ["quiet", "splash", "ro"]),
        ('a="b c"  d', ['a="b c"', "d"]),
        ('"x y" z', ['"x y"', "z"]),
        ("k=v=w", ["k=v=w"]),
    ],
)
def test_parse(text, params):
    assert cmdline.parse(text) == params


@pytest.mark.parametrize(
    "param, name",
    [("amd-iommu=off", "amd_iommu"), ("quiet", "quiet"), ("a=b=c", "a"), ("ttm.pages-limit=1", "ttm.pages_limit")],
)
def test_key(param, name):
    assert cmdline.key(param) == name


def test_merge_drops_every_managed_key_even_when_we_do_not_set_it():
    # halo_iommu: pt replaces a user's amd_iommu=on; emit_gttsize off drops their amdgpu.gttsize
    ours = ["iommu=pt", "ttm.pages_limit=1048576"]
    merged = cmdline.merge(["ro", "amd_iommu=on", "amdgpu.gttsize=5", "quiet"], ours)
    assert merged == ["ro", "quiet", "iommu=pt", "ttm.pages_limit=1048576"]


def test_merge_with_own_managed_keys():
    assert cmdline.merge(["a=1", "b=2", "c=3"], ["d=4"], managed_keys=("b",)) == ["a=1", "c=3", "d=4"]
    assert cmdline.merge(["a=1", "d=9"], ["d=4"], managed_keys=()) == ["a=1", "d=4"]


def test_managed_subset_keeps_order_and_duplicates():
    params = ["ttm.pages_limit=1", "quiet", "amd-iommu=on", "ttm.pages_limit=2"]
    assert cmdline.managed_subset(params) == ["ttm.pages_limit=1", "amd-iommu=on", "ttm.pages_limit=2"]
    assert cmdline.managed_subset(params, ("quiet",)) == ["quiet"]


def test_a_stale_trailing_duplicate_means_a_reboot_is_needed():
    live = ["ro", *OURS, "ttm.pages_limit=1048576"]  # the kernel uses the last one: 4 GiB, not ours
    assert not cmdline.satisfies(live, OURS)


def test_a_stale_leading_duplicate_is_overridden_by_ours():
    assert cmdline.satisfies(["ttm.pages_limit=1048576", "quiet", *OURS], OURS)


def test_an_extra_managed_param_means_a_reboot_is_needed():
    assert not cmdline.satisfies([*OURS, "iommu=pt"], OURS)
    assert not cmdline.satisfies(OURS, OURS[:2])  # amdgpu.gttsize no longer wanted
    assert cmdline.satisfies([], [])
    assert not cmdline.satisfies([], OURS)


def test_satisfies_with_own_managed_keys():
    assert cmdline.satisfies(["x=1", "y=2"], ["x=1"], managed_keys=("x",))
    assert not cmdline.satisfies(["x=1", "y=2"], ["x=1"], managed_keys=("x", "y"))


def test_kernel_params_keep_order_and_refuse_conflicts_naming_both_stages():
    params = KernelParams()
    params.add("amd_iommu=off", "kernel")
    params.add("ttm.pages_limit=31457280", "memory")
    params.add("amd_iommu=off", "memory")
    assert params.as_list() == ["amd_iommu=off", "ttm.pages_limit=31457280"]
    assert params.params["amd_iommu"] == ("amd_iommu=off", "memory")
    with pytest.raises(ParamConflict) as error:
        params.add("amd_iommu=on", "other")
    assert str(error.value) == "other sets 'amd_iommu=on' but memory already set 'amd_iommu=off'"


def test_kernel_params_accept_dash_spelling_and_refuse_unknown_names():
    params = KernelParams()
    params.add("amdttm.pages-limit=1", "memory")
    assert params.as_list() == ["amdttm.pages-limit=1"]
    with pytest.raises(ParamConflict) as error:
        KernelParams().add("amdgpu.gtt_size=1024", "memory")
    assert str(error.value) == "memory: 'amdgpu.gtt_size' is not a kernel parameter halofleet knows"
