"""
Install a configuration file the careful way: upload beside the target, check it, back up the old one, move it
into place atomically, run the follow-up (``update-grub``, ``update-initramfs`` ...) and put everything back if
that fails.
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host, logger, state
from pyinfra.api import FileUploadCommand, OperationError, QuoteString, StringCommand, operation
from pyinfra.facts.files import FileContents, Sha256File
from pyinfra.operations.util.files import generate_color_diff

from ..contract import validators
from ..contract.paths import SECRET_FILES
from ..contract.templating import sha256_text

BACKUP_DIR = "/var/backups/halofleet"
UNKNOWN = "unknown"  # sentinel for current_sha256: ask the host


def backup_path(path: str) -> str:
    return f"{BACKUP_DIR}/{path.strip('/').replace('/', '__')}"


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
    backup = backup_path(path)
    # The candidate exists, empty and private, before the upload writes into it: a secret is never readable by
    # others, not even between the upload and the chmod below.
    yield StringCommand(
        "sh", "-c", QuoteString(f"mkdir -p {directory or '/'} {BACKUP_DIR} && rm -f {candidate} && "
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
        f"if [ -e {path} ]; then cp -p {path} {backup}; had_old=1; else rm -f {backup}; had_old=0; fi",
        f"mv -f {candidate} {path}",
    ]
    if activate is not None:
        activation = _raw(activate)
        script.append(
            f"if ! ( {activation} ); then "
            f"if [ $had_old = 1 ]; then cp -p {backup} {path}; else rm -f {path}; fi; "
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
    log_diff(path, None)
    yield StringCommand("mkdir", "-p", QuoteString(BACKUP_DIR))
    yield StringCommand("mv", "-f", QuoteString(path), QuoteString(backup_path(path)))
    if activate is not None:
        yield activate
