"""
Install a configuration file the careful way: upload beside the target, check it, back up the old one, move it
into place atomically, run the follow-up (``update-grub``, ``update-initramfs`` ...) and put everything back if
that fails.

Backups cannot collide: at halofleet's first touch of a path, the file as the user had it (bytes, mode, owner,
``cp -p``) is kept once under ``original/`` (or a ``.absent`` record says there was none); no later write of
halofleet's goes there. Every replaced or removed version also goes to ``generations/`` (the newest few kept).
The rollback (:func:`restored_file`) puts the original back, or removes what did not exist.
"""

from __future__ import annotations

import shlex
from io import StringIO

from pyinfra import host, logger, state
from pyinfra.api import FileUploadCommand, OperationError, QuoteString, StringCommand, operation
from pyinfra.facts.files import FileContents, Sha256File
from pyinfra.operations.util.files import generate_color_diff

from ..contract import validators
from ..contract.paths import BACKUP_DIR, BACKUP_GENERATIONS, BACKUP_ORIGINALS, SECRET_FILES
from ..contract.templating import sha256_text

# ORIGINALS: the user's file before halofleet's first touch, written once and never after; GENERATIONS: each
# version halofleet replaced or removed, timestamped.
ORIGINALS, GENERATIONS = BACKUP_ORIGINALS, BACKUP_GENERATIONS
GENERATIONS_KEPT = 5
MANAGED_MARK = "Managed by halofleet"  # in the first lines of every template halofleet writes
UNKNOWN = "unknown"  # sentinel for current_sha256: ask the host
RECORD_KINDS = {"": "original", ".absent": "absent", ".restored": "restored"}


def backup_name(path: str) -> str:
    return path.strip("/").replace("/", "__")


def backup_path(path: str) -> str:
    """Where releases before 0.4 kept the one backup of ``path`` (read once, to find a user's original)."""
    return f"{BACKUP_DIR}/{backup_name(path)}"


def original_path(path: str) -> str:
    return f"{ORIGINALS}/{backup_name(path)}"


def record_of(records: dict[str, str] | None, path: str) -> str | None:
    """What the host recorded at halofleet's first touch of ``path`` (from :func:`parse_records`' names):
    ``original`` (the user's file is kept), ``absent`` (there was none), ``restored`` (a rollback put it back),
    or None (never touched since these records exist)."""
    kinds = {kind for suffix, kind in RECORD_KINDS.items() if f"{backup_name(path)}{suffix}" in (records or {})}
    for kind in ("original", "absent", "restored"):
        if kind in kinds:
            return kind
    return None


def record_original(path: str) -> str:
    """
    Shell: at halofleet's first touch of ``path``, keep it as the user's original (or record that there was none),
    once. A file an earlier halofleet wrote is not the user's: one under a halofleet name, or one with its mark
    near the top; then the unmarked backup of releases before 0.4, if any, is.
    """
    original, legacy = original_path(path), backup_path(path)
    first = (f"if [ ! -e {original} ] && [ ! -e {original}.absent ]; then mkdir -p -m 0700 {ORIGINALS}; "
             f"rm -f {original}.restored; ")
    if "halofleet" in path:  # the user never had a file of this name
        return first + f": > {original}.absent; fi"
    unmarked = f"! head -n 3 {{}} | grep -q '{MANAGED_MARK}'"
    return first + (
        f"if [ -e {path} ] && {unmarked.format(path)}; then cp -p {path} {original}.new && "
        f"mv -f {original}.new {original}; "
        f"elif [ -e {path} ] && [ -f {legacy} ] && {unmarked.format(legacy)}; then "
        f"cp -p {legacy} {original}.new && mv -f {original}.new {original}; "
        f"else : > {original}.absent; fi; fi"
    )


def save_generation(path: str) -> str:
    """Shell: the current ``path`` (if any) copied to a new generation, ``$prev`` naming it; older ones pruned."""
    name = backup_name(path)
    return (
        f"prev=; if [ -e {path} ]; then mkdir -p -m 0700 {GENERATIONS}; "
        f"prev={GENERATIONS}/{name}.$(date -u +%Y%m%dT%H%M%S.%N); cp -p {path} $prev; "
        f"for old in $(ls -1r {GENERATIONS}/{name}.2* 2>/dev/null | tail -n +{GENERATIONS_KEPT + 1}); do "
        'rm -f "$old"; done; fi'
    )


def _raw(command: StringCommand | str) -> str:
    return command if isinstance(command, str) else command.get_raw_value()


def log_diff(path: str, content: str | None, redact: bool = False, exists: bool | None = None) -> None:
    """What files.put prints under --diff, for our own operations (``content`` None: removal; ``exists`` from a
    known digest)."""
    if not state.config.DIFF:
        return
    # Before any read: a secret file's old content must not even reach pyinfra's -vvv output.
    if redact or path in SECRET_FILES:
        host.log(f"Will {'modify' if exists else 'create' if exists is False else 'write'} {path}", logger.info)
        logger.info("  (content withheld: it holds a secret)")
        return
    current = host.get_fact(FileContents, path=path) or []
    current_lines = [line + "\n" for line in current]
    desired_lines = content.splitlines(keepends=True) if content is not None else []
    verb = "remove" if content is None else ("modify" if current else "create")
    host.log(f"Will {verb} {path}", logger.info)
    for line in generate_color_diff(current_lines, desired_lines):
        logger.info("  %s", line)
    logger.info("")


@operation()
def checked_file(
    path: str,
    content: str,
    mode: str = "0644",
    check: StringCommand | str | None = None,
    activate: StringCommand | str | None = None,
    current_sha256: str | None = UNKNOWN,
    redact: bool = False,
):
    """
    Install ``content`` at ``path`` only after it passes ``check``; run ``activate`` afterwards and restore the
    previous file (and re-run ``activate``) if activation fails.

    + path: absolute path of the file to manage
    + content: the full text the file must have
    + mode: octal permissions, set before the file is moved into place (owner is always root:root)
    + check: shell command run on the candidate; ``$HALO_CANDIDATE`` holds its path; non-zero refuses it
    + activate: shell command run once the file is in place (e.g. ``update-grub``)
    + current_sha256: the file's SHA-256 if already known (None: absent), saving a round trip
    + redact: the content is secret: ``--diff`` says the file changes but never shows it

    **Example:**

    .. code:: python

        checked_file(
            name="Write the modprobe options",
            path="/etc/modprobe.d/zz-halofleet.conf",
            content="options ttm pages_limit=31457280\\n",
            check=StringCommand("modprobe", "-C", "$HALO_CANDIDATE", "--showconfig", ">/dev/null"),
        )
    """
    if validators.check_absolute_path(path):  # the path goes unquoted into the shell script below
        raise OperationError(f"checked_file needs an absolute path without spaces or shell syntax, got {path!r}")
    if current_sha256 == UNKNOWN:
        current_sha256 = host.get_fact(Sha256File, path=path)
    if current_sha256 == sha256_text(content):
        host.noop(f"{path} is up to date")
        return

    log_diff(path, content, redact=redact, exists=current_sha256 is not None)
    directory, name = path.rsplit("/", 1)
    candidate = f"{directory or ''}/.{name}.halofleet-new"
    # The candidate exists, empty and private, before the upload writes into it: a secret is never readable by
    # others, not even between the upload and the chmod below.
    yield StringCommand(
        "sh", "-c", QuoteString(f"mkdir -p {directory or '/'} && rm -f {candidate} && "
                                f"(umask 077 && : > {candidate})"),
    )
    yield FileUploadCommand(StringIO(content), candidate)
    script = [
        "set -e",
        f"export HALO_CANDIDATE={candidate}",
        f"chown root:root {candidate}",
        f"chmod {mode} {candidate}",
    ]
    if check is not None:
        script.append(
            f"if ! ( {_raw(check)} ); then rm -f {candidate}; "
            f"echo 'halofleet: refusing {path}: the new content failed its check' >&2; exit 1; fi"
        )
    script += [
        record_original(path),
        save_generation(path),
        f"mv -f {candidate} {path}",
    ]
    if activate is not None:
        activation = _raw(activate)
        script.append(
            f"if ! ( {activation} ); then "
            f'if [ -n "$prev" ]; then cp -p "$prev" {path}; else rm -f {path}; fi; '
            f"( {activation} ) >/dev/null 2>&1 || true; "
            f"echo 'halofleet: activating {path} failed; the previous file is back in place' >&2; exit 1; fi"
        )
    yield StringCommand("sh", "-c", QuoteString("\n".join(script)))


@operation()
def absent_file(path: str, activate: StringCommand | None = None, current_sha256: str | None = UNKNOWN):
    """
    Remove a file halofleet installed, keeping a backup, and run ``activate`` afterwards.

    + path: absolute path of the file to remove
    + activate: shell command run after removal (e.g. ``update-grub``)
    + current_sha256: the file's SHA-256 if already known (None: absent)

    **Example:**

    .. code:: python

        absent_file(name="Drop the GRUB drop-in", path="/etc/default/grub.d/zz-halofleet.cfg",
                    activate=StringCommand("update-grub"))
    """
    if current_sha256 == UNKNOWN:
        current_sha256 = host.get_fact(Sha256File, path=path)
    if current_sha256 is None:
        host.noop(f"{path} is already absent")
        return
    if validators.check_absolute_path(path):
        raise OperationError(f"absent_file needs an absolute path without spaces or shell syntax, got {path!r}")
    log_diff(path, None)
    yield StringCommand("sh", "-c", QuoteString(f"set -e; {save_generation(path)}; rm -f {path}"))
    if activate is not None:
        yield activate


@operation()
def restored_file(path: str, record: str | None, current_sha256: str | None = UNKNOWN,
                  activate: StringCommand | str | None = None):
    """
    Undo halofleet's file at ``path``: the user's original back exactly as it was (bytes, mode, owner), or the file
    removed where there was none before halofleet's first touch; the version removed kept as a generation.

    + path: absolute path of the managed file
    + record: what the host recorded at the first touch (:func:`record_of`): original | absent | restored | None
      (None: written by a release before these records: removed, as before)
    + current_sha256: the file's SHA-256 if already known (None: absent)
    + activate: shell command run afterwards (e.g. ``systemctl daemon-reload``)

    **Example:**

    .. code:: python

        restored_file(name="haproxy.cfg back to the user's", path="/etc/haproxy/haproxy.cfg", record="original")
    """
    if validators.check_absolute_path(path):
        raise OperationError(f"restored_file needs an absolute path without spaces or shell syntax, got {path!r}")
    if current_sha256 == UNKNOWN:
        current_sha256 = host.get_fact(Sha256File, path=path)
    if record == "restored" or (record is None and current_sha256 is None):
        host.noop(f"{path}: nothing of halofleet's to undo")
        return
    original = original_path(path)
    directory, name = path.rsplit("/", 1)
    script = ["set -e", save_generation(path)]
    if record == "original":
        temporary = f"{directory}/.{name}.halofleet-restore"
        # The record stays (renamed): a second rollback finds nothing to do; a new deploy records afresh.
        script += [f"cp -p {original} {temporary}", f"mv -f {temporary} {path}",
                   f"mv -f {original} {original}.restored"]
        verb = "restore the user's"
    else:
        script += [f"rm -f {path} {original}.absent"]
        verb = "remove"
    if state.config.DIFF:
        host.log(f"Will {verb} {path}", logger.info)
    yield StringCommand("sh", "-c", QuoteString("; ".join(script)))
    if activate is not None:
        yield activate


@operation()
def empty_directory_removed(path: str, present: bool):
    """
    Remove a directory halofleet created, once nothing is left in it (a file of the user's there keeps it).

    + path: absolute directory path
    + present: the directory exists and holds nothing but what this run removes (from the probe)

    **Example:**

    .. code:: python

        empty_directory_removed(name="Remove /etc/halofleet", path="/etc/halofleet", present=True)
    """
    if not present:
        host.noop(f"{path} is absent or holds files that are not halofleet's")
        return
    # Checked again on the host: an earlier operation of the same run may have removed it with its parent.
    quoted = shlex.quote(path)
    yield StringCommand("sh", "-c", QuoteString(
        f"if [ -d {quoted} ]; then rmdir --ignore-fail-on-non-empty {quoted}; fi"))
