import subprocess

import pytest

from halofleet.box import cmdline
from halofleet.box.cmdline import KernelParams, ParamConflict
from halofleet.operations.halo_kernel import render_grub_dropin

OURS = ["amd_iommu=off", "ttm.pages_limit=31457280", "amdgpu.gttsize=122880"]


def test_users_params_kept_ours_replace_never_duplicate():
    existing = cmdline.parse("quiet splash ttm.pages_limit=100 iommu=pt foo=bar amdgpu.gttsize=5")
    merged = cmdline.merge(existing, OURS)
    assert merged == ["quiet", "splash", "foo=bar", *OURS]
    assert cmdline.merge(merged, OURS) == merged  # idempotent


def test_dash_and_underscore_spellings_are_one_key():
    merged = cmdline.merge(["ttm.pages-limit=1", "amd-iommu=on"], OURS)
    assert merged == OURS


def test_quoted_values_stay_whole():
    assert cmdline.parse('quiet dyndbg="file drm* +p" x=1') == ["quiet", 'dyndbg="file drm* +p"', "x=1"]


def test_satisfies_uses_the_last_occurrence():
    assert cmdline.satisfies(["ttm.pages_limit=1", *OURS], OURS)
    assert not cmdline.satisfies([*OURS, "ttm.pages_limit=1"], OURS)
    assert not cmdline.satisfies(OURS[:2], OURS)


def test_conflicting_contributions_are_refused():
    params = KernelParams()
    params.add("amd_iommu=off", "kernel")
    params.add("amd_iommu=off", "other")  # same value: fine
    with pytest.raises(ParamConflict, match="already set"):
        params.add("amd_iommu=on", "other")


def test_misspelled_names_are_refused():
    with pytest.raises(ParamConflict, match="gtt_size"):
        KernelParams().add("amdgpu.gtt_size=1024", "memory")


@pytest.mark.parametrize(
    "linux, default",
    [
        ("console=ttyS0", "quiet"),
        ("console=ttyS0 ttm.pages_limit=5", "quiet amd_iommu=on splash"),
        ("", "iommu=pt ttm.pages-limit=7 amdgpu.gttsize=9 keep=1"),
    ],
)
def test_grub_dropin_in_real_sh_matches_python_merge(tmp_path, linux, default):
    """The drop-in's shell filter and the Python merge must agree, as grub-mkconfig sources it."""
    dropin = tmp_path / "zz-halofleet.cfg"
    dropin.write_text(render_grub_dropin(OURS))
    script = (
        f'GRUB_CMDLINE_LINUX="{linux}"; GRUB_CMDLINE_LINUX_DEFAULT="{default}"; . {dropin}; '
        'echo "$GRUB_CMDLINE_LINUX $GRUB_CMDLINE_LINUX_DEFAULT"'
    )
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    assert cmdline.parse(out) == cmdline.merge(cmdline.parse(f"{linux} {default}"), OURS)
    # sourcing it twice (a second run) changes nothing
    twice = subprocess.run(["sh", "-c", script.replace(f". {dropin};", f". {dropin}; . {dropin};")],
                           capture_output=True, text=True, check=True).stdout
    assert cmdline.parse(twice) == cmdline.parse(out)
