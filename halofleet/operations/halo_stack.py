"""
A host brought to its stack profile (``halo_stack``): the profile's kernel and firmware packages installed and held
(``apt-mark hold``), the BIOS carve-out set through its sysfs file (GRUB's default goes into the cmdline's drop-in:
:func:`halofleet.operations.halo_kernel.grub_cmdline`). Each step leaves a record under
``/var/backups/halofleet/original`` so the rollback undoes exactly what halofleet did.
"""

from __future__ import annotations

from pyinfra import host, logger, state
from pyinfra.api import OperationError, QuoteString, StringCommand, operation

from ..contract import policy, validators
from ..contract.paths import BACKUP_ORIGINALS
from ..contract.stacks import DEBIAN_VERSION
from . import halo_files

HOLD_RECORD = "apt-hold__{package}.halofleet"  # in BACKUP_ORIGINALS: halofleet placed this hold
CARVEOUT_RECORD = "{name}.was-{index}"  # in BACKUP_ORIGINALS: the carve-out index before halofleet's write


def hold_records(records: list[str] | None) -> list[str]:
    """The packages whose hold halofleet placed (from the backups part's record names)."""
    prefix, suffix = HOLD_RECORD.split("{package}")
    return sorted(name[len(prefix):-len(suffix)] for name in records or []
                  if name.startswith(prefix) and name.endswith(suffix)
                  and policy.DEBIAN_PACKAGE_NAME.fullmatch(name[len(prefix):-len(suffix)]))


def carveout_records(records: list[str] | None) -> dict[str, int]:
    """{sysfs path: index before halofleet's write} from the record names."""
    found = {}
    for name in records or []:
        stem, dot, index = name.rpartition(".was-")
        if dot and index.isdigit() and len(index) <= 3 and stem.startswith("sys__") and stem.endswith("__carveout"):
            found["/" + stem.replace("__", "/")] = int(index)
    return found


@operation()
def package_held(package: str, version: str | None = None, install: bool = True, hold: bool = True):
    """
    Install a Debian package (at ``version``, else apt's candidate) and hold it, so ``apt upgrade`` leaves it.

    A hold halofleet places is recorded; the rollback releases it (the package stays installed).

    + package: the Debian package name
    + version: the exact Debian version to install (None: the candidate apt offers)
    + install: the package is missing or not at ``version`` (from the probe)
    + hold: the package is not held yet (from the probe)

    **Example:**

    .. code:: python

        package_held(name="Kernel of the stack", package="linux-image-7.0.0-31-generic")
    """
    if not policy.DEBIAN_PACKAGE_NAME.fullmatch(package) or version is not None and \
            not DEBIAN_VERSION.fullmatch(version):
        raise OperationError(f"refusing package {package!r} version {version!r}")
    if not install and not hold:
        host.noop(f"{package} is installed and held")
        return
    if install:
        wanted = f"{package}={version}" if version else package
        yield StringCommand("apt-get", "update", "-qq", policy.APT_LOCK_WAIT)
        yield StringCommand("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
                            "--no-install-recommends", "--allow-downgrades", "--allow-change-held-packages",
                            policy.APT_LOCK_WAIT, QuoteString(wanted))
    if hold:
        record = f"{BACKUP_ORIGINALS}/{HOLD_RECORD.format(package=package)}"
        yield StringCommand("sh", "-c", QuoteString(
            f"mkdir -p -m 0700 {BACKUP_ORIGINALS} && apt-mark hold {package} >/dev/null && : > {record}"))


@operation()
def carveout(path: str, index: int, previous: int):
    """
    Set the BIOS carve-out (UMA frame buffer) through its sysfs file (Linux 7.0+, where the VBIOS supports it):
    the index of one of ``uma/carveout_options``, applied at the next boot. The index before is recorded for the
    rollback.

    + path: ``/sys/class/drm/<card>/device/uma/carveout``
    + index: the option to write
    + previous: the index read by the probe

    **Example:**

    .. code:: python

        carveout(name="Carve-out to its minimum", path="/sys/class/drm/card1/device/uma/carveout", index=0,
                 previous=3)
    """
    if validators.check_absolute_path(path) or not path.endswith("/uma/carveout") or not 0 <= index < 1000:
        raise OperationError(f"refusing carve-out {path!r} {index!r}")
    if state.config.DIFF:
        host.log(f"Will write {index} to {path} (was {previous}; applies at the next boot)", logger.info)
    record = f"{BACKUP_ORIGINALS}/{CARVEOUT_RECORD.format(name=halo_files.backup_name(path), index=previous)}"
    yield StringCommand("sh", "-c", QuoteString(
        f"set -e; mkdir -p -m 0700 {BACKUP_ORIGINALS}; "
        f"ls {BACKUP_ORIGINALS}/{halo_files.backup_name(path)}.was-* >/dev/null 2>&1 || : > {record}; "
        f"echo {int(index)} > {path}"))


@operation()
def holds_released(packages: list[str]):
    """
    Release the holds halofleet placed (the packages stay installed) and drop their records.

    + packages: from :func:`hold_records`

    **Example:**

    .. code:: python

        holds_released(name="Release the stack's holds", packages=["linux-image-7.0.0-31-generic"])
    """
    if not packages:
        host.noop("no hold of halofleet's")
        return
    for package in packages:
        if not policy.DEBIAN_PACKAGE_NAME.fullmatch(package):
            raise OperationError(f"refusing package name {package!r}")
        yield StringCommand("sh", "-c", QuoteString(
            f"apt-mark unhold {package} >/dev/null; rm -f {BACKUP_ORIGINALS}/{HOLD_RECORD.format(package=package)}"))


@operation()
def carveout_restored(previous: dict[str, int]):
    """
    Write back the carve-out index found before halofleet's first write (applies at the next boot).

    + previous: {sysfs path: index}, from :func:`carveout_records`

    **Example:**

    .. code:: python

        carveout_restored(name="Carve-out back", previous={"/sys/class/drm/card1/device/uma/carveout": 3})
    """
    if not previous:
        host.noop("no carve-out write of halofleet's")
        return
    for path, index in sorted(previous.items()):
        if validators.check_absolute_path(path) or not path.endswith("/uma/carveout"):
            raise OperationError(f"refusing carve-out {path!r}")
        name = CARVEOUT_RECORD.format(name=halo_files.backup_name(path), index=index)
        yield StringCommand("sh", "-c", QuoteString(
            f"if [ -e {path} ]; then echo {int(index)} > {path}; fi; rm -f {BACKUP_ORIGINALS}/{name}"))
