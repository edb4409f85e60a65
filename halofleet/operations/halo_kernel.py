"""
Kernel cmdline and module options for Strix Halo: a GRUB drop-in (never an edit of the user's
``/etc/default/grub``), grubby on Fedora, and an ``/etc/modprobe.d`` file that sorts last.
"""

from __future__ import annotations

import logging
import re
import time

import gevent
from pyinfra import host, logger, state
from pyinfra.api import FunctionCommand, OperationError, QuoteString, StringCommand, operation
from pyinfra.api.facts import FactBase

from ..box import cmdline as cmdline_mod
from ..box.stack import running_kernel, safe_entry
from ..contract import policy, validators
from ..contract.paths import BACKUP_DIR, GRUB_DROPIN, MODPROBE_FILE
from ..contract.templating import render
from ..facts.halo import LiveCmdline
from . import halo_files

_SAFE_PARAM = re.compile(r"^[A-Za-z0-9_.-]+(=[A-Za-z0-9_.,:-]+)?$")


def _check_params(params: list[str]) -> None:
    for param in params:
        if not _SAFE_PARAM.match(param):
            raise OperationError(f"refusing kernel parameter {param!r}: only name=value without quoting is allowed")


def render_grub_dropin(params: list[str], managed_keys: tuple[str, ...] = policy.MANAGED_PARAM_KEYS,
                       default: str | None = None) -> str:
    """
    The drop-in grub-mkconfig sources after /etc/default/grub: it strips every managed key from the user's
    variables (so ours replace, never duplicate) and appends ours, leaving the user's file untouched. ``default``
    (halo_stack): GRUB_DEFAULT, the menu entry of the profile's kernel (``submenu id>entry id``).
    """
    _check_params(params)
    if default is not None and not safe_entry(default):
        raise OperationError(f"refusing GRUB entry id {default!r}")
    keys = {cmdline_mod.key(k) for k in managed_keys} | {cmdline_mod.key(p) for p in params}
    # The kernel treats - and _ alike in names, so both spellings are matched.
    patterns = sorted({k.replace("_", "[-_]") for k in keys})
    return render("grub-dropin.cfg.j2", params=params, key_patterns=patterns, default=default)


def grub_check(params: list[str], path: str = GRUB_DROPIN) -> StringCommand:
    """
    Shell check of a candidate drop-in: valid sh, and sourcing the whole chain as grub-mkconfig does yields
    each of our params exactly once.
    """
    keys = " ".join(sorted({cmdline_mod.key(p).replace("_", "[-_]") for p in params}))
    wanted = " ".join(params)
    script = (
        'sh -n "$HALO_CANDIDATE" && '
        'out=$( [ -r /etc/default/grub ] && . /etc/default/grub; '
        f'for f in /etc/default/grub.d/*.cfg; do [ "$f" = {path} ] || {{ [ -r "$f" ] && . "$f"; }}; done; '
        '. "$HALO_CANDIDATE"; echo " $GRUB_CMDLINE_LINUX $GRUB_CMDLINE_LINUX_DEFAULT " ) && set -f && '
        f'for p in {wanted}; do case "$out" in *" $p "*) ;; *) echo "missing $p in: $out" >&2; exit 1;; esac; done && '
        f'for k in {keys}; do n=$(printf "%s\\n" $out | grep -c "^$k\\(=\\|$\\)"); '
        '[ "$n" = 1 ] || { echo "$k appears $n times in: $out" >&2; exit 1; }; done'
    )
    return StringCommand(script)


GRUB_ACTIVATE = StringCommand(
    "if command -v update-grub >/dev/null 2>&1; then update-grub; "
    "else grub-mkconfig -o /boot/grub/grub.cfg; fi"
)


@operation()
def grub_cmdline(params: list[str], path: str = GRUB_DROPIN, current_sha256: str | None = halo_files.UNKNOWN,
                 default: str | None = None, kernel_file: str | None = None):
    """
    Put kernel params on the GRUB cmdline through a drop-in, check it, then run ``update-grub``.

    The user's ``/etc/default/grub`` is never edited. The candidate must be valid sh and, sourced after the
    user's config, must produce each param exactly once; if ``update-grub`` fails the previous drop-in (or none)
    is restored and ``update-grub`` re-run, so the host boots as before. With ``default`` (halo_stack) the drop-in
    also sets ``GRUB_DEFAULT``: ``kernel_file`` must exist before, and the generated grub.cfg (kept first as
    ``/var/backups/halofleet/grub.cfg.before``) must carry the entry after, or the previous state is put back. No
    kernel leaves the menu: the previous one stays bootable.

    + params: the full list of params halofleet manages (``name=value``)
    + path: drop-in path (sourced by grub-mkconfig in lexical order; ours sorts last)
    + current_sha256: the drop-in's SHA-256 if already known (None: absent)
    + default: GRUB_DEFAULT, ``<submenu id>><entry id>`` of the kernel to boot (None: the user's own)
    + kernel_file: ``/boot/vmlinuz-<release>`` that entry boots

    **Example:**

    .. code:: python

        grub_cmdline(
            name="Set the Strix Halo cmdline",
            params=["amd_iommu=off", "amdgpu.gttsize=122880", "ttm.pages_limit=31457280"],
        )
    """
    check, activate = grub_check(params, path), GRUB_ACTIVATE
    if default is not None:
        if not kernel_file or validators.check_absolute_path(kernel_file):
            raise OperationError(f"refusing kernel file {kernel_file!r}")
        check = StringCommand(f"{check.get_raw_value()} && test -s {kernel_file}")
        activate = StringCommand(
            f"mkdir -p -m 0700 {BACKUP_DIR} && {{ cp -p /boot/grub/grub.cfg {BACKUP_DIR}/grub.cfg.before 2>/dev/null "
            f"|| true; }} && {GRUB_ACTIVATE.get_raw_value()} && "
            f"grep -qF \"'{default.split('>')[-1]}'\" /boot/grub/grub.cfg")
    yield from halo_files.checked_file._inner(
        path=path,
        content=render_grub_dropin(params, default=default),
        check=check,
        activate=activate,
        current_sha256=current_sha256,
    )


@operation()
def grubby_cmdline(params: list[str], configured: list[str], managed_keys: tuple[str, ...] = policy.MANAGED_PARAM_KEYS):
    """
    Put kernel params on every kernel's cmdline with grubby (Fedora/RHEL BLS), removing other values of the
    managed keys first.

    + params: the full list of params halofleet manages
    + configured: the default kernel's current args (from the BootConfig fact)
    + managed_keys: keys whose other values are removed

    **Example:**

    .. code:: python

        grubby_cmdline(name="Set the cmdline", params=["iommu=pt"], configured=["rhgb", "quiet"])
    """
    _check_params(params)
    current = cmdline_mod.managed_subset(configured, managed_keys)
    if sorted(current) == sorted(params):
        host.noop("grubby args already carry the halofleet params")
        return
    stale = [p for p in current if p not in params]
    if stale:
        yield StringCommand("grubby", "--update-kernel=ALL", QuoteString("--remove-args=" + " ".join(stale)))
    yield StringCommand("grubby", "--update-kernel=ALL", QuoteString("--args=" + " ".join(params)))


def render_modprobe(options: dict[str, dict[str, int | str]]) -> str:
    """``{"ttm": {"pages_limit": N}}`` -> ``options ttm pages_limit=N`` lines."""
    return render("modprobe.conf.j2", options=options)


# Rebuild the initramfs only when a module we configure is inside it (as AMD's amd-ttm does), so the option
# applies at early load; otherwise the file is read when the module loads from the root filesystem.
INITRAMFS_ACTIVATE = StringCommand(
    "k=$(uname -r); "
    "if command -v update-initramfs >/dev/null 2>&1; then "
    "  if lsinitramfs /boot/initrd.img-$k 2>/dev/null | grep -qE '/(ttm|amdttm|amd-ttm|amd_ttm|amdgpu)\\.ko'; then "
    "    cp -p /boot/initrd.img-$k /var/backups/halofleet/initrd.img-$k && update-initramfs -u -k $k; fi; "
    "elif command -v dracut >/dev/null 2>&1; then "
    "  if lsinitrd 2>/dev/null | grep -qE '/(ttm|amdttm|amd-ttm|amd_ttm|amdgpu)\\.ko'; then dracut -f; fi; "
    "fi"
)


@operation()
def modprobe_options(
    options: dict[str, dict[str, int | str]],
    path: str = MODPROBE_FILE,
    current_sha256: str | None = halo_files.UNKNOWN,
):
    """
    Write module options to ``/etc/modprobe.d``, checked by ``modprobe --showconfig`` first; regenerate the
    initramfs only when the file changed and a configured module is inside it.

    + options: ``{module: {param: value}}``
    + path: the modprobe.d file (must sort after every other one)
    + current_sha256: the file's SHA-256 if already known (None: absent)

    **Example:**

    .. code:: python

        modprobe_options(name="TTM limit", options={"ttm": {"pages_limit": 31457280}})
    """
    for module, values in options.items():
        for name, value in values.items():
            if not re.fullmatch(r"[a-z0-9_]+", module + name) or not re.fullmatch(r"[A-Za-z0-9_.,-]+", str(value)):
                raise OperationError(f"refusing modprobe option {module} {name}={value!r}")
    check_parts = ['modprobe -C "$HALO_CANDIDATE" --showconfig >/dev/null']
    for module, values in options.items():
        for name, value in values.items():
            check_parts.append(
                f'modprobe -C "$HALO_CANDIDATE" --showconfig | grep -q "^options {module} .*{name}={value}"'
            )
    yield from halo_files.checked_file._inner(
        path=path,
        content=render_modprobe(options),
        check=StringCommand(" && ".join(check_parts)),
        activate=INITRAMFS_ACTIVATE,
        current_sha256=current_sha256,
    )


class BootId(FactBase[str]):
    """The running boot's random id: it changes on every boot, unlike uptime it cannot be confused by clocks."""

    def command(self) -> str:
        return "cat /proc/sys/kernel/random/boot_id"

    def process(self, output):
        return "".join(output).strip()


def _read_boot_id(attempt_timeout: float) -> str | None:
    """Connect and read the boot id within ``attempt_timeout`` s; None if the host is not (properly) there."""
    try:
        with gevent.Timeout(attempt_timeout):
            host.connect(show_errors=False)
            if not host.connected:
                return None
            return host.get_fact(BootId)
    except (gevent.Timeout, Exception):  # a half-dead session of the old boot hangs or errors: drop it
        host.disconnect()
        return None


ROLLOUT_HALT_ATTR = "_halofleet_rollout_halted"


def rollout_halted() -> str | None:
    """Why the rolling reboot was stopped in this run (a host did not come back right), or None."""
    return getattr(state, ROLLOUT_HALT_ATTR, None)


def _halt_rollout(reason: str) -> None:
    if not rollout_halted():
        setattr(state, ROLLOUT_HALT_ATTR, reason)


@operation(is_idempotent=False)
def reboot(timeout: int = 600, interval: float = 5, attempt_timeout: float = 20,
           expect_params: list[str] | None = None, expect_kernel: str | None = None):
    """
    Reboot and wait until the host is back in a *new* boot (its boot id changed) with ``expect_params`` live.

    Rolling: run it with ``_parallel=N``; a host that does not come back in time, or comes back without the
    params, stops the rollout: every later host of the run is failed instead of rebooted.

    pyinfra's ``server.reboot`` can reconnect to the old system while it is still shutting down and then
    wait forever on that dead session; here every attempt is bounded and the boot id proves the reboot.

    + timeout: seconds to wait for the new boot before failing this host
    + interval: seconds between attempts
    + attempt_timeout: bound on one connect-and-read attempt
    + expect_params: kernel params ``/proc/cmdline`` must carry after the reboot
    + expect_kernel: the kernel release whose image must have booted (``BOOT_IMAGE=.../vmlinuz-<release>``)

    **Example:**

    .. code:: python

        reboot(name="Reboot into the new cmdline", timeout=600, expect_params=["amd_iommu=off"], _parallel=1)
    """
    before: list[str] = []

    def remember_boot():
        halted = rollout_halted()
        if halted:
            raise OperationError(f"not rebooted: the rollout stopped because {halted}")
        before.append(host.get_fact(BootId))

    def wait_for_new_boot():
        host.disconnect()
        deadline = time.monotonic() + timeout
        # Failed attempts while the host is down are expected: keep paramiko from printing a traceback for each.
        transport_log = logging.getLogger("paramiko.transport")
        level = transport_log.level
        transport_log.setLevel(logging.CRITICAL)
        try:
            while time.monotonic() < deadline:
                gevent.sleep(interval)
                boot_id = _read_boot_id(attempt_timeout)
                if boot_id and boot_id != before[0]:
                    logger.info(f"{host.print_prefix}back in a new boot")
                    _check_live(expect_params, expect_kernel)
                    return True
                if boot_id:
                    host.disconnect()  # still the old boot, shutting down
        finally:
            transport_log.setLevel(level)
        _halt_rollout(f"{host.name} did not come back within {timeout} s")
        raise OperationError(f"{host.name} did not come back in a new boot within {timeout} s; "
                             "the rolling reboot stops here")

    yield FunctionCommand(remember_boot, (), {})
    # A timer in PID 1, not a background shell: a shell child of this SSH session could die with the session we
    # close right after (seen once in ~20 reboots: the host never went down). systemd-run returns at once.
    yield StringCommand("systemd-run", "--quiet", "--on-active=2", "--timer-property=AccuracySec=100ms",
                        "systemctl", "reboot")
    yield FunctionCommand(wait_for_new_boot, (), {})


def _check_live(expect_params: list[str] | None, expect_kernel: str | None = None) -> None:
    """After the reboot, before the next batch goes down: the configured params (and kernel) must be live."""
    if not expect_params and not expect_kernel:
        return
    live = host.get_fact(LiveCmdline)
    if expect_kernel:
        booted = running_kernel({"live_cmdline": live, "os": {}})
        if booted != expect_kernel:
            _halt_rollout(f"{host.name} came back in kernel {booted or 'unknown'}, not {expect_kernel}")
            raise OperationError(f"{host.name} came back in kernel {booted or 'unknown'}, not {expect_kernel} "
                                 "(its GRUB default did not take); the rolling reboot stops here")
    expect_params = expect_params or []
    if not cmdline_mod.satisfies(live, expect_params):
        missing = [param for param in expect_params if not cmdline_mod.satisfies(live, [param])]
        _halt_rollout(f"{host.name} came back without {' '.join(missing)} in /proc/cmdline")
        raise OperationError(f"{host.name} came back without {' '.join(missing)} in /proc/cmdline; "
                             "the rolling reboot stops here")
