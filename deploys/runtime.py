"""
Stage 6, runtime: podman (or docker where asked) and the non-root service user with GPU access (video/render).
"""

from pyinfra import host, logger
from pyinfra.operations import apt, dnf, server, systemd

from halofleet import policy
from halofleet.deploy import current_plan

plan = current_plan()
if plan is not None:
    runtime = plan.config.runtime
    packages = list(policy.RUNTIME_PACKAGES[runtime])
    if plan.uses_apt:
        apt.packages(name=f"Install {runtime}", packages=packages, no_recommends=True,
                     extra_install_args=policy.APT_LOCK_WAIT)
    else:
        dnf.packages(name=f"Install {runtime}", packages=packages)
    if runtime == "docker":
        systemd.service(name="Docker daemon running", service="docker", running=True, enabled=True)
    # Ids decided in the plan (existing ones kept), so container units can name them before the user exists.
    ids, user = plan.ids, plan.config.service_user
    for group, gid in ids.new_groups.items():
        server.group(name=f"Group {group} (gid {gid})", group=group, gid=gid, system=True)
    server.user(
        name=f"Service user {user} with GPU access",
        user=user,
        uid=ids.uid if ids.new_user else None,
        group=user if ids.new_user else None,
        system=True,
        home=f"/var/lib/{user}",
        create_home=True,
        shell="/usr/sbin/nologin",
        groups=list(policy.GPU_GROUPS),
    )
    devices = plan.probe["os"].get("devices", [])
    kfd = "/dev/kfd" in devices
    dri = any(device.startswith("/dev/dri/") for device in devices)
    logger.info(f"{host.print_prefix}GPU devices: /dev/kfd {plan.gpu_check(kfd)}, /dev/dri render {plan.gpu_check(dri)}")
