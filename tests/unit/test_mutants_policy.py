"""ROCm policy at the edges of AMD's matrix (mutation-tested).
Expected verdicts: ../shared/DOMAIN.md "ROCm versions"."""

import pytest
from packaging.version import Version

from halofleet.contract import policy
from halofleet.contract.policy import Verdict

OK, WARN, BAD = Verdict.OK, Verdict.WARN, Verdict.BAD


@pytest.mark.parametrize(
    "version, with_fix, without_fix",
    [
        ("6.4", BAD, WARN),
        ("6.4.0", BAD, WARN),
        ("6.4.9", BAD, WARN),
        ("7.0", BAD, WARN),
        ("7.0.2", BAD, WARN),
        ("7.1", BAD, WARN),
        ("7.1.9", BAD, WARN),
        ("7.2", OK, BAD),  # X.Y is X.Y.0
        ("7.2.0", OK, BAD),
        ("7.2.1", OK, WARN),
        ("7.2.4", OK, WARN),
        ("7.9.0", BAD, WARN),
        ("7.10.9", BAD, WARN),
        ("7.11.0", OK, WARN),
        ("7.14", OK, WARN),
        ("7.14.9", OK, WARN),
    ],
)
def test_matrix_rows(version, with_fix, without_fix):
    assert policy.rocm_kernel_verdict(version, True)[0] is with_fix
    assert policy.rocm_kernel_verdict(version, False)[0] is without_fix


@pytest.mark.parametrize("version", ["6.3.9", "6.5", "6.5.0", "7.2.5", "7.3", "7.8.9", "7.15", "7.15.0", "8.0",
                                     "10.3.0"])
def test_releases_just_outside_the_matrix_warn_whatever_the_kernel(version):
    for cwsr in (True, False, None):
        verdict, message = policy.rocm_kernel_verdict(version, cwsr)
        assert verdict is WARN
        assert message == f"ROCm {version} is not in the support matrix halofleet knows"


def test_720_with_unknown_cwsr_support_is_a_warning_naming_the_reason():
    verdict, message = policy.rocm_kernel_verdict("7.2.0", None)
    assert verdict is WARN
    assert message == "ROCm 7.2.0: kernel CWSR support unknown (no gfx1151 KFD node) [AMD rdna3-5 support matrix]"


def test_messages_name_the_kernel_kind_the_verdict_and_the_source():
    assert policy.rocm_kernel_verdict("7.2.1", True)[1] == (
        "ROCm 7.2.1 on a kernel with the CWSR fix is ok [AMD rdna3-5 support matrix]")
    assert policy.rocm_kernel_verdict("7.2.0", False)[1] == (
        "ROCm 7.2.0 on a kernel without the CWSR fix is bad [AMD rdna3-5 support matrix]")
    assert policy.rocm_kernel_verdict("7.1.1", True)[1] == (
        "ROCm 7.1.1 on a kernel with the CWSR fix is bad [AMD rdna3-5 support matrix; ROCm/TheRock#2991]")


def test_701_refusal_message_and_reason():
    verdict, message = policy.rocm_kernel_verdict("7.0.1", True)
    assert verdict is BAD
    assert message.startswith("ROCm 7.0.1 is refused: reported gfx1151 regression (pp 325 vs 1132 t/s on 6.4.4)")
    assert policy.rocm_denied("7.0.1") == policy.ROCM_DENYLIST["7.0.1"]
    assert policy.rocm_denied("7.0.10") is None
    assert policy.rocm_denied("7.0") is None
    assert policy.rocm_denied("7.0.2") is None


def test_parse_rocm_version_accepts_x_y_and_x_y_z_only():
    assert policy.parse_rocm_version("7.2.1") == Version("7.2.1")
    assert policy.parse_rocm_version("7.14") == Version("7.14")
    with pytest.raises(ValueError):  # data is matched whole: no surrounding space
        policy.parse_rocm_version(" 7.2.1\n")


@pytest.mark.parametrize("text", ["7", "7.2.1.1", "7.2.", ".7.2", "7.-2", "7.2a", "7 .2"])
def test_parse_rocm_version_refuses_other_shapes_with_the_text(text):
    with pytest.raises(ValueError) as error:
        policy.parse_rocm_version(text)
    assert str(error.value) == f"not a ROCm release (X.Y or X.Y.Z): {text!r}"


@pytest.mark.parametrize(
    "package, release",
    [("7.2", "7.2"), ("2:6.4.4.60404-1~22.04", "6.4.4"), ("7.14.0-3", "7.14.0"), ("7.2.1.70201", "7.2.1")],
)
def test_release_of_package(package, release):
    assert policy.rocm_release_of_package(package) == release


def test_rule_bounds_are_low_inclusive_high_exclusive():
    rule = policy.RocmRule("7.2.1", "7.2.5", OK, WARN, "test")
    assert rule.matches(Version("7.2.1")) and rule.matches(Version("7.2.4.9"))
    assert not rule.matches(Version("7.2.0")) and not rule.matches(Version("7.2.5"))


def test_firmware_denylist_matches_the_release_inside_a_package_version():
    assert policy.firmware_denied("20251125") == policy.FIRMWARE_DENYLIST["20251125"]
    assert policy.firmware_denied("20251125.git1a2b-1") == policy.FIRMWARE_DENYLIST["20251125"]
    assert policy.firmware_denied("") is None
    assert policy.firmware_denied("20260110") is None
