"""
The ROCm pin and TheRock scenarios, written once for both tiers that run them on a real apt host holding the local
repository of :mod:`.aptrepo` at :data:`.aptrepo.REPO_PATH`: a QEMU VM (``tests/vm/test_fleet.py``, opt-in) and a
forky systemd-nspawn container (``tests/nspawn/test_rocm_pins.py``, in CI). Each scenario asserts as it goes.

A tier hands its host over as a :class:`RocmHost`::

    host = RocmHost(sh=lambda command, check=True: ..., deploy=lambda data, deploy, review=False: ...)
    rocmpins.pin_holds_against_apt(host)

ROCm is judged with the kernel as a pair (``policy.rocm_kernel_verdict``), from the KFD topology of the kernel the
host runs: a VM under TCG has none, a container reads its machine's. :func:`kernel_pair` reads it on the host with
the probe's own command and parser, so a scenario can say what preflight must say there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..contract import policy
from ..facts.halo import KfdNodes, cwsr_status, parse_kfd_nodes
from ..facts.halo_rocm import ROCM_COMMAND, parse_rocm
from .aptrepo import REPO_PATH, rocm_group_data, therock_group_data
from .runs import PyinfraRun

LEGACY_721 = f"dpkg -i {REPO_PATH}/pool/main/rocm-core_7.2.1.*.deb {REPO_PATH}/pool/main/rocm_7.2.1.*.deb"
VERSION_OF = "dpkg-query -W -f='${Version}' "


@dataclass
class RocmHost:
    """
    One test host as the scenarios drive it.

    + sh: ``sh(command, check=True)`` runs a shell command as root there and returns its stdout, stripped
      (``check=False``: whatever it printed, whatever its status)
    + deploy: ``deploy(data, deploy_file, review=False)`` runs a packaged deploy (``deploys/rocm.py``) on this host
      alone with ``data`` as its group data (``review``: ``--dry --diff``)
    """

    sh: Callable[..., str]
    deploy: Callable[..., PyinfraRun]


def installed_rocm(host: RocmHost) -> dict:
    """The RocmInstall fact, read on the host with the probe's own command and parser."""
    return parse_rocm(host.sh(ROCM_COMMAND).splitlines())


def kernel_pair(host: RocmHost, version: str) -> tuple[policy.Verdict, str]:
    """Preflight's verdict on ROCm ``version`` with the kernel this host runs (its KFD topology, read as the probe
    reads it: no gfx1151 node means "unknown", a warning)."""
    nodes = parse_kfd_nodes(host.sh(KfdNodes().command()).splitlines())
    return policy.rocm_kernel_verdict(version, cwsr_status(nodes)["supported"])


def says_kernel_pair(host: RocmHost, run: PyinfraRun, version: str) -> None:
    """The run said what preflight must say of ``version`` on this host's kernel: the warning when the pair is one,
    nothing about the pair when it is fine (a refused pair never gets this far: :func:`kernel_refuses`)."""
    verdict, message = kernel_pair(host, version)
    assert verdict is not policy.Verdict.BAD, message
    assert (message in run.stderr) is (verdict is policy.Verdict.WARN), (verdict, message, run.stderr[-3000:])


def kernel_refuses(host: RocmHost, data: dict) -> str | None:
    """
    When this host's kernel makes ``data``'s ROCm release a refused pair (6.4.4 on a gfx1151 kernel with the CWSR
    fix, seen by a container on a Strix Halo machine): prove the stage refuses it and changes nothing, and return
    preflight's reason. None where the pair is allowed (the scenario can run).
    """
    verdict, message = kernel_pair(host, data["halo_rocm_version"])
    if verdict is not policy.Verdict.BAD:
        return None
    refused = host.deploy(data, "deploys/rocm.py")
    assert refused.returncode != 0 and refused.changed_ops == [], refused.changed_ops
    assert message in refused.stderr, refused.stderr[-3000:]
    return message


def pin_holds_against_apt(host: RocmHost) -> None:
    """
    From legacy 7.2.1 down to 6.4.4 through the stage (the pin allows the downgrade), where unpinned apt would take
    7.2.1; upgrade and dist-upgrade stay on 6.4.4 and 7.0.1 is barred at priority -1; a second run changes nothing;
    a 7.0.1 forced past the pin (apt obeys an explicit version) is refused by the next full run.
    """
    assert host.sh(VERSION_OF + "rocm-core") == "7.2.1.70201-1", "the scenario starts from legacy 7.2.1"
    run = host.deploy(rocm_group_data("6.4.4"), "deploys/rocm.py")
    assert run.returncode == 0, run.stderr[-3000:]
    says_kernel_pair(host, run, "6.4.4")
    assert host.sh(VERSION_OF + "rocm-core") == "6.4.4.60404-1"
    # ... without the pin apt would take 7.2.1 (so the assertions below can fail) ...
    unpinned = host.sh("apt-cache -o Dir::Etc::PreferencesParts=/nonexistent policy rocm-core "
                       "| awk '/Candidate/ {print $2}'")
    assert unpinned == "7.2.1.70201-1"
    # ... with it, an upgrade stays on 6.4.4 and 7.0.1 is never a candidate.
    host.sh("DEBIAN_FRONTEND=noninteractive apt-get -y upgrade && "
            "DEBIAN_FRONTEND=noninteractive apt-get -y dist-upgrade")
    assert host.sh(VERSION_OF + "rocm-core") == "6.4.4.60404-1"
    policy_text = host.sh("apt-cache policy rocm-core")
    assert "Candidate: 6.4.4.60404-1" in policy_text
    assert "7.0.1.70001-1 -1" in " ".join(policy_text.split())  # 7.0.1 barred at priority -1
    again = host.deploy(rocm_group_data("6.4.4"), "deploys/rocm.py")
    assert again.returncode == 0 and again.changed_ops == [], again.changed_ops
    # apt obeys an explicit `rocm-core=7.0.1...` over any pin; halofleet then refuses the host on its next run.
    host.sh("DEBIAN_FRONTEND=noninteractive apt-get -y install rocm-core=7.0.1.70001-1")
    refused = host.deploy(rocm_group_data("6.4.4"), "deploys/full.py")
    assert refused.returncode != 0
    assert "ROCm 7.0.1 is installed and refused" in refused.stderr


def replaces_legacy_721(host: RocmHost, data: dict, series: str, package_version: str) -> None:
    """The stage, asked for ``data``'s TheRock release on a host with legacy 7.2.1, removes the legacy stack (named
    so in the run), installs ``amdrocm<series>-gfx1151`` at ``package_version`` and points ``/opt/rocm/core`` at
    ``core-<series>``."""
    version = data["halo_rocm_version"]
    run = host.deploy(data, "deploys/rocm.py")
    assert run.returncode == 0, run.stderr[-3000:]
    says_kernel_pair(host, run, version)
    assert f"Remove legacy ROCm 7.2.1 before TheRock {version}" in run.changed_names
    assert host.sh("dpkg -l rocm-core rocm 2>/dev/null | grep -c '^ii'", check=False) == "0"
    assert host.sh(VERSION_OF + f"amdrocm{series}-gfx1151") == package_version
    assert host.sh("readlink -f /opt/rocm/core") == f"/opt/rocm/core-{series}"


def therock_714_replaces_legacy(host: RocmHost) -> None:
    """
    Legacy 7.2.1 to TheRock 7.14.0 (one-line source): the dry run names the removal first, the run purges the
    legacy stack, holds 7.14.0-3 though 7.14.1-1 is in the repository (also against ``apt-get upgrade``), points
    ``/opt/rocm/core`` at ``core-7.14``, leaves no deb822 source; the fact reads it back; a second run changes nothing.
    """
    host.sh(f"dpkg --purge rocm rocm-core >/dev/null 2>&1 || true; {LEGACY_721}")
    assert installed_rocm(host)["legacy"] == "7.2.1"
    data = therock_group_data("7.14.0", "packages-multi-arch/debian13")
    # The dry run names the transition before anything changes.
    review = host.deploy(data, "deploys/rocm.py", review=True)
    assert review.returncode == 0, review.stderr[-3000:]
    assert "Remove legacy ROCm 7.2.1 before TheRock 7.14.0" in review.stderr
    assert "apt-get purge -y -o DPkg::Lock::Timeout=300 rocm-core" in review.stderr

    # 7.14.1-1 is in the repository: the pin holds the patch level asked for.
    replaces_legacy_721(host, data, "7.14", "7.14.0-3")
    assert host.sh("cat /etc/apt/sources.list.d/halofleet-rocm.list").splitlines()[-1] == (
        f"deb [arch=amd64 trusted=yes] file:{REPO_PATH}/therock/packages-multi-arch/debian13 stable main")
    assert host.sh("test -e /etc/apt/sources.list.d/halofleet-rocm.sources && echo legacy-source", check=False) == ""
    host.sh("DEBIAN_FRONTEND=noninteractive apt-get -y upgrade")
    assert host.sh(VERSION_OF + "amdrocm7.14-gfx1151") == "7.14.0-3"
    fact = installed_rocm(host)
    assert (fact["version"], fact["stream"], fact["legacy"], fact["core"]) == (
        "7.14.0", "therock", None, "/opt/rocm/core-7.14")
    again = host.deploy(data, "deploys/rocm.py")
    assert again.returncode == 0 and again.changed_ops == [], again.changed_ops


def therock_10_from_deb822(host: RocmHost) -> None:
    """
    From TheRock 7.14 back on legacy 7.2.1 to TheRock 10.0 from a deb822 source: legacy purged, ``core-10.0``
    linked, the pin on ``10.0.*``, no one-line source left; the fact reads it back; a second run changes nothing.
    Ends with TheRock purged (``/opt/rocm/core`` goes with it) and a forced legacy 7.0.1 installed.
    """
    host.sh(f"dpkg --purge amdrocm7.14-gfx1151 && {LEGACY_721}")
    data = therock_group_data("10.0", "core/packages/debian13")
    replaces_legacy_721(host, data, "10.0", "10.0.0-1")
    sources = host.sh("cat /etc/apt/sources.list.d/halofleet-rocm.sources")
    assert f"URIs: file:{REPO_PATH}/therock/core/packages/debian13" in sources and "Suites: stable" in sources
    assert host.sh("test -e /etc/apt/sources.list.d/halofleet-rocm.list && echo one-line-source", check=False) == ""
    assert "Pin: version 10.0.*" in host.sh("cat /etc/apt/preferences.d/halofleet-rocm")
    fact = installed_rocm(host)
    assert (fact["version"], fact["stream"], fact["core"]) == ("10.0.0", "therock", "/opt/rocm/core-10.0")
    again = host.deploy(data, "deploys/rocm.py")
    assert again.returncode == 0 and again.changed_ops == [], again.changed_ops
    host.sh(f"dpkg --purge amdrocm10.0-gfx1151 && dpkg -i {REPO_PATH}/pool/main/rocm-core_7.0.1.*.deb")
    assert host.sh("test -e /opt/rocm/core || echo gone") == "gone"
