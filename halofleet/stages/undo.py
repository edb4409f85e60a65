"""Undoing a deploy, as a ``@deploy`` function."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import server

from ..box import cmdline
from ..contract.paths import (
    GRUB_DROPIN,
    HF_HEADER,
    MODELS_PRESET,
    MODPROBE_FILE,
    ROCM_KEY,
    ROCM_KEY_THEROCK,
    ROCM_KEY_THEROCK_STABLE,
    ROCM_LIST,
    ROCM_PIN,
    ROCM_SOURCES,
    SERVE_CONF,
    SERVE_ENV,
    SERVE_QUADLET,
    SERVE_STAMP,
    SERVE_UNIT,
)
from ..deploy import current_config_and_probe
from ..operations import halo_files, halo_kernel, halo_serve
from ..views import summary
from .gateway import remove_gateway
from .rpc import remove_worker


@deploy("rollback")
def rollback() -> None:
    """
    Undo what halofleet added: the engine (stopped, its units, environment and stamp removed), an RPC worker (its units, nft table and file), a
    gateway (its haproxy configuration and certificate; haproxy stopped), the GRUB drop-in
    (then update-grub and, if the live cmdline still carries params the user's own config does not, a reboot),
    the modprobe file (then the initramfs), the ROCm pin, repository and key, and the service user. Removed files
    are kept under /var/backups/halofleet (the API key file too, mode kept). Packages and models stay.
    Idempotent: a second run changes nothing. Works on hosts a deploy would refuse.
    """
    summary.install()
    context = current_config_and_probe()
    if context is None:
        return
    config, probe = context
    files = probe["files"]

    units = (SERVE_UNIT, SERVE_QUADLET)
    halo_serve.engine_stopped(
        name="Stop the engine",
        present=any(path in files for path in units) or probe["serve"]["active"] not in ("inactive", "unknown"),
    )
    for path in units:
        halo_files.absent_file(name=f"Remove {path}", path=path, activate=halo_serve.DAEMON_RELOAD,
                               current_sha256=files.get(path))
    for path in (SERVE_ENV, SERVE_CONF, SERVE_STAMP, MODELS_PRESET, HF_HEADER):
        halo_files.absent_file(name=f"Remove {path}", path=path, current_sha256=files.get(path))

    remove_worker(probe)  # an RPC worker: its firewall table goes with it
    remove_gateway()  # a gateway: its haproxy configuration and certificate

    dropin = halo_files.absent_file(
        name="Remove the GRUB drop-in",
        path=GRUB_DROPIN,
        activate=halo_kernel.GRUB_ACTIVATE,
        current_sha256=files.get(GRUB_DROPIN),
    )
    halo_files.absent_file(
        name="Remove the modprobe options",
        path=MODPROBE_FILE,
        activate=halo_kernel.INITRAMFS_ACTIVATE,
        current_sha256=files.get(MODPROBE_FILE),
    )
    for path, what in ((ROCM_PIN, "ROCm pin"), (ROCM_SOURCES, "ROCm repository"), (ROCM_LIST, "ROCm repository"),
                       (ROCM_KEY, "ROCm key"), (ROCM_KEY_THEROCK, "ROCm key"),
                       (ROCM_KEY_THEROCK_STABLE, "ROCm key")):
        halo_files.absent_file(name=f"Remove the {what}", path=path, current_sha256=files.get(path))

    server.user(name=f"Remove service user {config.service_user}", user=config.service_user, present=False)

    # Without our drop-in the configured cmdline is the user's own: reboot if the live one differs from it
    # (an earlier, interrupted rollback), or when this run removed the drop-in.
    live_differs = GRUB_DROPIN not in files and cmdline.managed_subset(
        probe["live_cmdline"]
    ) != cmdline.managed_subset(probe["boot"]["cmdline"])
    if config.reboot == "auto":
        halo_kernel.reboot(
            name="Reboot into the user's own cmdline",
            timeout=config.reboot_timeout,
            _if=lambda: dropin.did_change() or live_differs,
            _parallel=1,
        )
