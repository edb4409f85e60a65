"""The end-of-run summary's reading of a failed host's log lines."""

import pytest

from halofleet.views.summary import failed_outcome, failure_reason


@pytest.mark.parametrize("lines, reason, outcome", [
    (["halofleet: ROCm 7.2.1: kernel CWSR support unknown",
      "OperationError('vm1 did not come back in a new boot within 60 s; the rolling reboot stops here',)"],
     "vm1 did not come back in a new boot within 60 s; the rolling reboot stops here", "unreachable"),
    (["OperationError('not rebooted: the rollout stopped because vm1 did not come back within 60 s',)"],
     "not rebooted: the rollout stopped because vm1 did not come back within 60 s", "failed"),
    (["halofleet refuses this host: host 'vm3': ROCm 7.0.1 is installed and refused"],
     "halofleet refuses this host: host 'vm3': ROCm 7.0.1 is installed and refused", "failed"),
    (["SSHException('SSH session not active')"], "SSH session not active", "unreachable"),
    ([], "failed", "failed"),
])
def test_reason_and_outcome(lines, reason, outcome):
    assert failure_reason(lines) == reason
    assert failed_outcome(reason) == outcome
