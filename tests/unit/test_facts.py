"""Fact fixtures (command + output in, parsed fact out), plus what the plan makes of real captured probes."""

from pathlib import Path

import pytest
from pyinfra_testing.facts import make_fact_tests

from halofleet.box.plan import build_plan
from halofleet.contract.config import HostRefused
from halofleet.facts.halo import cwsr_status, parse_kfd_nodes
from halofleet.facts.probe import parse_probe
from halofleet.testing.fake import kfd_node_lines

FIXTURES = Path(__file__).parent.parent / "fixtures"

for _folder in sorted((FIXTURES / "facts").iterdir()):
    globals()["Test_" + _folder.name.replace(".", "_")] = make_fact_tests("halofleet.facts", _folder.name, _folder)


def captured(name: str) -> dict:
    return parse_probe((FIXTURES / "captured" / name).read_text().splitlines())


@pytest.mark.parametrize(
    "lines, supported, missing",
    [
        (kfd_node_lines(1, 110501, True), True, []),
        (kfd_node_lines(1, 110501, False), False, ["ctl_stack_size", "cwsr_size"]),
        (kfd_node_lines(0, 0, False), None, []),
        (kfd_node_lines(1, 110000, False), None, []),  # another GPU: nothing to judge
    ],
)
def test_cwsr_status(lines, supported, missing):
    status = cwsr_status(parse_kfd_nodes(lines))
    assert (status["supported"], status["missing"]) == (supported, missing)


def test_captured_vm_with_rocm_701_is_refused():
    probe = captured("probe_trixie_vm_rocm701.txt")
    assert probe["rocm"]["version"] == "7.0.1"
    with pytest.raises(HostRefused, match="ROCm 7.0.1 is installed and refused"):
        build_plan("vm3", {"halo_allow_non_strix_halo": True, "halo_serve": "none"}, probe)


def test_captured_vm_with_configured_but_not_live_params_needs_a_reboot():
    probe = captured("probe_trixie_vm_reboot_pending.txt")
    plan = build_plan("vm2", {"halo_allow_non_strix_halo": True, "halo_serve": "none"}, probe)
    assert plan.gtt.visible_gib == 15 and plan.gtt.gtt_gib == 7
    assert plan.kernel_params == ["amd_iommu=off", "ttm.pages_limit=1835008", "amdgpu.gttsize=7168"]
    assert plan.expected_cmdline == probe["boot"]["cmdline"]  # already configured ...
    assert plan.reboot_needed  # ... but not live yet
    assert set(probe["files"]) == {"/etc/default/grub.d/zz-halofleet.cfg", "/etc/modprobe.d/zz-halofleet.conf"}
    assert plan.gpu_check(plan.cwsr["supported"]) == "skipped"
