"""
Stage 4, ROCm: with halo_rocm_version set, add the repository, pin the release (denied releases barred) and
install it. With 'none', only the preflight checks of what is installed apply.
"""

from halofleet import policy
from halofleet.deploy import current_plan, managed_sha256
from halofleet.operations import halo_rocm
from halofleet.paths import ROCM_PIN

plan = current_plan()
if plan is not None and plan.config.rocm_version != "none":
    version = plan.config.rocm_version
    halo_rocm.repository(
        name=f"ROCm {version} apt repository",
        url=plan.config.rocm_repo_url or policy.ROCM_APT_URL_TEMPLATE.format(version=version),
        suite=plan.config.rocm_repo_suite,
        key_url=None if plan.config.rocm_repo_trusted else plan.config.rocm_repo_key_url,
        current=plan.probe["files"],
    )
    halo_rocm.pin(
        name=f"Pin ROCm to {version}",
        version=version,
        current_sha256=managed_sha256(plan, ROCM_PIN),
    )
    halo_rocm.release(
        name=f"Install ROCm {version}",
        version=version,
        packages=plan.config.rocm_packages,
        installed=plan.probe["rocm"].get("version"),
    )
