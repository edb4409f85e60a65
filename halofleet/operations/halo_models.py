"""
Model files fetched on the host (``halo_models`` url and hf sources): downloaded as the service user, resumed
from the partial file a broken run left, verified before they are moved into place, and recorded so the next run
neither hashes nor downloads them again.

The client is curl, not ``hf download`` (Debian's python3-huggingface-hub): curl is on every host already (the
engine's readiness check uses it), one client covers plain URLs and the Hub, ``--continue-at -`` resumes into a
file we name, and ``-H @-`` reads the token from stdin, so it is never in argv. The Hub's digests come from the
plan (its tree API), so verification does not depend on the client.
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import OperationError, QuoteString, StringCommand, operation

from ..contract import policy, validators
from ..contract.paths import VERIFIED_DIR
from ..facts.halo_models import sidecar_path, verified_record_path

# Retries inside one curl run (transient errors); a run that still fails keeps the partial file for the next one.
CURL = ("curl --fail --location --silent --show-error --retry 3 --retry-delay 2 --connect-timeout 30 "
        "--proto =http,https --proto-redir =http,https")
# curl's "server does not do ranges" (33) and HTTP errors such as 416 on a complete partial (22): start over once.
RESTART_CODES = "22|33"


def space_check(directory: str, part: str, name: str, size: int) -> str:
    """
    Shell: refuse before a byte is fetched when the model directory's filesystem has less free space than the bytes
    still to fetch (the file's size less what a partial file from an earlier run holds already) plus a margin.
    """
    q = shlex.quote
    margin = policy.DOWNLOAD_FREE_MARGIN_BYTES
    refusal = (f"echo {q(f'halofleet: not enough disk space for {name}: ')}\"$need\"{q(' bytes still to fetch ')}"
               f"{q(f'plus a margin of {margin} bytes, but {directory} has ')}\"$free\""
               f"{q(' bytes free; nothing was downloaded')} >&2")
    return "\n".join([
        f"have=0; [ -e {q(part)} ] && have=$(stat -c %s {q(part)})",
        f"need=$(( {int(size)} - have )); [ $need -ge 0 ] || need=0",
        f"free=$(df -P -B1 {q(directory)} | awk 'NR == 2 {{ print $4 }}')",
        f'case "$free" in ""|*[!0-9]*) ;; *) if [ "$free" -lt $(( need + {margin} )) ]; then '
        f'{refusal}; exit 1; fi;; esac',
    ])


def download_script(path: str, url: str, owner: str, sha256: str | None, git_oid: str | None,
                    header_file: str | None, size: int | None = None) -> str:
    """The shell script of :func:`model_download` (every value quoted; pure, for tests)."""
    directory, name = path.rsplit("/", 1)
    part, record = f"{directory}/.{name}.part", sidecar_path(path)
    q = shlex.quote
    header = f" -H @- < {q(header_file)}" if header_file else ""
    if sha256:
        expected, digest = sha256, f'$(sha256sum < {q(part)} | cut -c1-64)'
        what = "SHA-256"
    else:  # a small non-LFS Hub file: its git blob id, SHA-1 of "blob <size>\0" + content
        expected = git_oid
        digest = (f"$( {{ printf 'blob %s\\0' $(stat -c %s {q(part)}); cat {q(part)}; }} | sha1sum | cut -c1-40)")
        what = "git blob id"
    fetch = f"runuser -u {q(owner)} -- {CURL} --output {q(part)}"
    refusal = f", expected {expected}: corrupt or a different file; not installed, the model served now is unchanged"
    full = f"halofleet: the disk is full: {directory} has no space left for {name}; the partial download was removed"
    return "\n".join([
        "set -e",
        f"runuser -u {q(owner)} -- mkdir -p {q(directory)}",
        *([space_check(directory, part, name, size)] if size is not None else []),
        f"if [ -e {q(part)} ]; then resume='--continue-at -'; else resume=; fi",
        f"rc=0; {fetch} $resume {q(url)}{header} || rc=$?",
        f'case "$rc" in 0) ;; {RESTART_CODES}) rm -f {q(part)}; rc=0; {fetch} {q(url)}{header} || rc=$?;; esac',
        # curl's write error (23) with the filesystem full: said so, and the partial file does not stay to fill it.
        f'if [ "$rc" = 23 ] && [ "$(df -P -B1 {q(directory)} | awk \'NR == 2 {{ print $4 }}\')" -lt 1048576 ]; then '
        f"rm -f {q(part)}; echo {q(full)} >&2; exit 1; fi",
        f'if [ "$rc" != 0 ]; then echo {q(f"halofleet: download of {url} failed")}" (curl exit $rc); the partial '
        f'file is kept and the next run continues it" >&2; exit 1; fi',
        f"got={digest}",
        f'if [ "$got" != {q(expected)} ]; then rm -f {q(part)}; '
        f'echo {q(f"halofleet: {name} from {url} has {what} ")}"$got"{q(refusal)} >&2; exit 1; fi',
        f"chmod 0640 {q(part)}",
        f"mv -f {q(part)} {q(path)}",
        f"sum=$(sha256sum < {q(path)} | cut -c1-64)" if not sha256 else f"sum={q(sha256)}",
        f"set -- $(stat -c '%s %Y' {q(path)})",
        f"printf '%s %s %s %s\\n' \"$sum\" \"$1\" \"$2\" {q(git_oid or '-')} > {q(record)}",
        f"chown {q(f'{owner}:{owner}')} {q(record)}",
        f"echo {q(f'halofleet: {name} verified and installed')}",
    ])


@operation()
def model_download(path: str, url: str, owner: str, sha256: str | None = None, git_oid: str | None = None,
                   header_file: str | None = None, current: dict | None = None, size: int | None = None):
    """
    Download one model file on the host as ``owner``, verify it, then move it into place atomically.

    + path: the file's final path (its directory is created as ``owner``)
    + url: http(s) URL to fetch (redirects followed; curl sends a custom Authorization header to the first host
      only)
    + owner: the service user that downloads and owns the file
    + sha256: expected SHA-256 (required unless ``git_oid`` is given)
    + git_oid: expected git blob id of a small non-LFS Hub file
    + header_file: a root-only file with header lines (the Hub token) fed to curl on stdin (``-H @-``)
    + current: the probe's view of ``path`` (``sha256``, ``git_oid``); a match is a no-op: no network at all
    + size: the file's size in bytes if known (the Hub's): the download is refused before it starts when the
      directory's filesystem has less free space than what is still to fetch plus a margin

    **Example:**

    .. code:: python

        model_download(name="Model tiny: tiny.gguf", path="/var/lib/halofleet/models/tiny/tiny.gguf",
                       url="https://example.org/tiny.gguf", owner="halo", sha256="...")
    """
    if validators.check_absolute_path(path):
        raise OperationError(f"model_download needs an absolute path in the path grammar, got {path!r}")
    if not url.startswith(("http://", "https://")):
        raise OperationError(f"model_download fetches http(s) URLs only, got {url!r}")
    if not (sha256 or git_oid):
        raise OperationError(f"model_download of {path} needs the expected sha256 (or a git blob id)")
    if current and ((sha256 and current.get("sha256") == sha256) or (not sha256 and current.get("git_oid") == git_oid)):
        host.noop(f"{path} is present and verified")
        return
    if size is not None and size < 0:
        raise OperationError(f"model_download of {path}: size {size} is not a byte count")
    yield StringCommand("sh", "-c", QuoteString(download_script(path, url, owner, sha256, git_oid, header_file,
                                                                size)))


def record_script(path: str, sha256: str, stat: str | None = None) -> str:
    """
    Shell: halofleet's verified record of ``path`` (digest, size, mtime, ctime, inode) written, so the next run
    stats it instead of hashing it. With ``stat`` (as the hashing probe saw it), only if the file is still exactly
    that file; a file changed meanwhile is left unrecorded (hashed again next time).
    """
    q = shlex.quote
    record = verified_record_path(path)
    write = f"printf '%s %s\\n' {q(sha256)} \"$st\" > {q(record + '.new')} && mv -f {q(record + '.new')} {q(record)}"
    check = f'[ "$st" = {q(stat)} ] && ' if stat is not None else ""
    return (f"mkdir -p -m 0700 {VERIFIED_DIR} && st=$(stat -L -c '%s %Y %Z %i' {q(path)}) && "
            f"{{ {check}{write} || echo {q(f'halofleet: {path} changed while it was verified: not recorded')} >&2; }}")


@operation()
def model_recorded(path: str, sha256: str, stat: str | None, recorded: bool):
    """
    Keep halofleet's verified record of a model file it hashed and accepted (a ``path`` model, a pushed one), where
    halofleet owns it (:data:`~halofleet.contract.paths.VERIFIED_DIR`): later runs stat the file instead of reading
    it in full while size, mtime, ctime and inode match.

    + path: the model file on the host
    + sha256: its digest as the probe computed it (and the plan accepted)
    + stat: ``"<size> <mtime> <ctime> <inode>"`` as the probe saw it while hashing
    + recorded: the probe's digest came from the record already (nothing to do)

    **Example:**

    .. code:: python

        model_recorded(name="Verified record", path="/srv/models/m.gguf", sha256="...",
                       stat="4096 1764110000 1764110000 1234", recorded=False)
    """
    if validators.check_absolute_path(path):
        raise OperationError(f"model_recorded needs an absolute path in the path grammar, got {path!r}")
    if recorded or stat is None:
        host.noop(f"{path}: verified record up to date")
        return
    yield StringCommand("sh", "-c", QuoteString(record_script(path, sha256, stat)))
