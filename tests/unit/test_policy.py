import pytest

from halofleet.contract import policy
from halofleet.contract.policy import Verdict


def test_701_refused_whatever_the_kernel():
    for cwsr in (True, False, None):
        verdict, message = policy.rocm_kernel_verdict("7.0.1", cwsr)
        assert verdict is Verdict.BAD
        assert "refused" in message


def test_644_accepted_on_a_kernel_without_the_cwsr_fix():
    assert policy.rocm_denied("6.4.4") is None
    assert policy.rocm_kernel_verdict("6.4.4", False)[0] is Verdict.WARN


@pytest.mark.parametrize(
    "version, with_fix, without_fix",
    [
        ("6.4.4", Verdict.BAD, Verdict.WARN),
        ("7.1.1", Verdict.BAD, Verdict.WARN),
        ("7.2.0", Verdict.OK, Verdict.BAD),
        ("7.2.1", Verdict.OK, Verdict.WARN),
        ("7.2.4", Verdict.OK, Verdict.WARN),
        ("7.9", Verdict.BAD, Verdict.WARN),
        ("7.10.0", Verdict.BAD, Verdict.WARN),
        ("7.11", Verdict.OK, Verdict.WARN),
        ("7.14.2", Verdict.OK, Verdict.WARN),
    ],
)
def test_support_matrix_pairs(version, with_fix, without_fix):
    assert policy.rocm_kernel_verdict(version, True)[0] is with_fix
    assert policy.rocm_kernel_verdict(version, False)[0] is without_fix


def test_unknown_kernel_support_is_a_warning_never_ok():
    assert policy.rocm_kernel_verdict("7.2.1", None)[0] is Verdict.WARN


def test_release_outside_the_matrix_warns():
    verdict, message = policy.rocm_kernel_verdict("8.0", True)
    assert verdict is Verdict.WARN and "not in the support matrix" in message


@pytest.mark.parametrize("text", ["7", "7.2.1.1", "7.x", "v7.2", "", "7..1", "latest"])
def test_malformed_versions(text):
    with pytest.raises(ValueError):
        policy.parse_rocm_version(text)


@pytest.mark.parametrize(
    "package, release",
    [("7.2.1.70201-81~24.04", "7.2.1"), ("6.4.4.60404-1", "6.4.4"), ("1:7.0.1.70001-42", "7.0.1"), ("7.1.0", "7.1.0")],
)
def test_release_of_package_version(package, release):
    assert policy.rocm_release_of_package(package) == release


def test_firmware_denylist():
    assert policy.firmware_denied("20251125") is not None
    assert policy.firmware_denied("20251111") is None
    assert policy.firmware_denied(None) is None
