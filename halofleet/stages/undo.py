"""Undoing a deploy, as a ``@deploy`` function."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import server

from ..box import cmdline
from ..contract.paths import (
    CONFIG_DIR,
    GRUB_DROPIN,
    HF_HEADER,
    MANAGED_FILES,
    MODELS_PRESET,
    MODPROBE_FILE,
    PROMETHEUS_DIR,
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
from ..operations import halo_files, halo_kernel, halo_serve, halo_stack
from ..views import summary
from .gateway import remove_gateway
from .monitor import remove_monitor
from .rpc import remove_worker


@deploy("rollback")
def rollback() -> None:
    """
    Undo what halofleet added: the engine (stopped, its units, environment and stamp removed), an RPC worker (its
    units, nft table and file), a gateway (its haproxy configuration and certificate; haproxy stopped), the GRUB
    drop-in (then update-grub and, if the live cmdline still carries params the user's own config does not, a reboot),
    the modprobe file (then the initramfs), the ROCm pin, repository and key, and the service user; with
    halo_stack, GRUB's default goes with the drop-in (it is the user's again), the package holds halofleet placed are
    released and the carve-out index it wrote is put back (the kernel and firmware packages stay installed). A file the
    user had before halofleet's first touch is put back exactly (bytes, mode, owner); the others are removed and
    kept under /var/backups/halofleet/generations (the API key file too, mode kept); /etc/halofleet goes once
    empty. Packages and models stay.
    Idempotent: a second run changes nothing. Works on hosts a deploy would refuse.
    """
    summary.install()
    context = current_config_and_probe()
    if context is None:
        return
    config, probe = context
    files = probe["files"]

    units = (SERVE_UNIT, SERVE_QUADLET)
    records = (probe.get("backups") or {}).get("records") or []
    # A unit file a rollback put back is the user's own, not an engine of ours.
    ours = [path for path in units if path in files and halo_files.record_of(records, path) != "restored"]
    halo_serve.engine_stopped(
        name="Stop the engine",
        present=bool(ours) or probe["serve"]["active"] not in ("inactive", "unknown"),
    )

    def undo(what: str, path: str, activate=None):
        """The user's original back where there was one, else halofleet's file removed (kept as a generation)."""
        return halo_files.restored_file(name=f"{what}: {path}", path=path, record=halo_files.record_of(records, path),
                                        current_sha256=files.get(path), activate=activate)

    for path in units:
        undo("Engine unit", path, activate=halo_serve.DAEMON_RELOAD)
    for path in (SERVE_ENV, SERVE_CONF, SERVE_STAMP, MODELS_PRESET, HF_HEADER):
        undo("Engine file", path)

    remove_worker(probe, records)  # an RPC worker: its firewall table goes with it
    remove_gateway(records)  # a gateway: its haproxy configuration and certificate
    remove_monitor(records, files)  # node exporter's drop-in, the textfile timer, the fleet's Prometheus

    dropin = undo("GRUB drop-in", GRUB_DROPIN, activate=halo_kernel.GRUB_ACTIVATE)
    # halo_stack: GRUB's default went with the drop-in (the kernel stays installed and in the menu); the holds
    # halofleet placed released, the carve-out index found before halofleet's write put back.
    halo_stack.holds_released(name="Release the holds of the stack's packages",
                              packages=halo_stack.hold_records(records))
    carveout = halo_stack.carveout_restored(name="BIOS carve-out back to its index before halofleet",
                                            previous=halo_stack.carveout_records(records))
    undo("modprobe options", MODPROBE_FILE, activate=halo_kernel.INITRAMFS_ACTIVATE)
    for path, what in ((ROCM_PIN, "ROCm pin"), (ROCM_SOURCES, "ROCm repository"), (ROCM_LIST, "ROCm repository"),
                       (ROCM_KEY, "ROCm key"), (ROCM_KEY_THEROCK, "ROCm key"),
                       (ROCM_KEY_THEROCK_STABLE, "ROCm key")):
        undo(what, path)
    # /etc/halofleet holds only halofleet's files (removed above): the directory goes too, unless a file that is
    # not one of them is there.
    ours = {path.rsplit("/", 1)[1] for path in MANAGED_FILES if path.startswith(CONFIG_DIR + "/")}
    ours.add(PROMETHEUS_DIR.rsplit("/", 1)[1])  # the monitor's directory, emptied and removed above
    left = (probe.get("backups") or {}).get("config_dir")
    halo_files.empty_directory_removed(name=f"Remove {CONFIG_DIR} (empty)", path=CONFIG_DIR,
                                       present=left is not None and set(left) <= ours)

    user = config.service_user
    if f"user__{user}.created" in records:  # created by halofleet: removed with its home
        halo_serve.created_user_removed(name=f"Remove service user {user} and its home", user=user, created=True,
                                        present=user in (probe.get("accounts") or {}).get("users", {}))
    elif f"user__{user}.existed" not in records:  # no record (a release before 0.4): removed as before, home stays
        server.user(name=f"Remove service user {user}", user=user, present=False)
    # An account that existed before halofleet's first touch is the user's: it stays.

    # Without our drop-in the configured cmdline is the user's own: reboot if the live one differs from it
    # (an earlier, interrupted rollback), or when this run removed the drop-in.
    live_differs = GRUB_DROPIN not in files and cmdline.managed_subset(
        probe["live_cmdline"]
    ) != cmdline.managed_subset(probe["boot"]["cmdline"])
    if config.reboot == "auto":
        halo_kernel.reboot(
            name="Reboot into the user's own cmdline",
            timeout=config.reboot_timeout,
            _if=lambda: dropin.did_change() or carveout.did_change() or live_differs,
            _parallel=1,
        )
