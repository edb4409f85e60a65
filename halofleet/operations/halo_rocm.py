"""
Host ROCm on apt systems: the repository, a pin that holds the chosen release and bars denied ones, and the
install itself (moving up or down to the pinned release).
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import OperationError, QuoteString, StringCommand, operation
from pyinfra.facts.files import Sha256File

from .. import policy, validators
from ..paths import ROCM_KEY, ROCM_PIN, ROCM_SOURCES
from ..templating import render
from . import halo_files

APT_ENV = "DEBIAN_FRONTEND=noninteractive"


def render_sources(url: str, suite: str, key_path: str | None) -> str:
    return render("rocm.sources.j2", url=url, suite=suite, key_path=key_path)


def render_pin(version: str) -> str:
    """
    Every ROCm package depends on an exact rocm-core version, so holding ``rocm-core`` (and the metapackages)
    to one release holds the whole stack; denied releases get priority -1 so no upgrade can reach them.
    """
    policy.parse_rocm_version(version)
    return render("rocm-pin.pref.j2", version=version, denylist=policy.ROCM_DENYLIST)


def _update_only(sources_path: str) -> StringCommand:
    """``apt-get update`` of our one source: fast, and independent of the state of the host's other sources."""
    return StringCommand(
        APT_ENV, "apt-get", "update", policy.APT_LOCK_WAIT,
        "-o", QuoteString(f"Dir::Etc::sourcelist={sources_path}"),
        "-o", "Dir::Etc::sourceparts=-", "-o", "APT::Get::List-Cleanup=0",
    )


@operation()
def repository(
    url: str,
    suite: str,
    key_url: str | None = None,
    path: str = ROCM_SOURCES,
    key_path: str = ROCM_KEY,
    current: dict[str, str] | None = None,
):
    """
    Add the ROCm apt repository (deb822) and refresh its index when it changed.

    + url: repository base URL (AMD's, a mirror, or a ``file:`` repository)
    + suite: the suite (``noble`` for AMD's Ubuntu 24.04 repo)
    + key_url: ASCII-armored signing key to fetch; None marks the repository trusted (local test repos only)
    + path: the ``.sources`` file
    + key_path: where the key is stored
    + current: {path: sha256} of the managed files if already known

    **Example:**

    .. code:: python

        repository(name="ROCm repo", url="https://repo.radeon.com/rocm/apt/7.2.1", suite="noble",
                   key_url="https://repo.radeon.com/rocm/rocm.gpg.key")
    """
    for value, what in ((url, "URL"), (key_url, "key URL")):
        if value is not None and validators.check_url(value):
            raise OperationError(f"refusing ROCm repository {what} {value!r}: {validators.check_url(value)}")
    if validators.check_apt_suite(suite):
        raise OperationError(f"refusing ROCm repository suite {suite!r}: {validators.check_apt_suite(suite)}")
    if key_url:
        key_sha = current.get(key_path) if current is not None else host.get_fact(Sha256File, path=key_path)
        if key_sha is None:
            failure = shlex.quote(f"halofleet: could not fetch the ROCm signing key from {key_url}")
            yield StringCommand("mkdir", "-p", "/etc/apt/keyrings")
            yield StringCommand(
                "sh", "-c",
                QuoteString(
                    f"tmp={shlex.quote(key_path + '.halofleet-new')}; "
                    f"(curl -fsSL {shlex.quote(key_url)} || wget -qO- {shlex.quote(key_url)}) > $tmp && "
                    "grep -q 'BEGIN PGP PUBLIC KEY BLOCK' $tmp && chmod 0644 $tmp && "
                    f"mv -f $tmp {shlex.quote(key_path)} || "
                    f"{{ rm -f $tmp; echo {failure} >&2; exit 1; }}"
                ),
            )
    yield from halo_files.checked_file._inner(
        path=path,
        content=render_sources(url, suite, key_path if key_url else None),
        activate=_update_only(path),
        current_sha256=current.get(path) if current is not None else halo_files.UNKNOWN,
    )


@operation()
def pin(version: str, path: str = ROCM_PIN, current_sha256: str | None = halo_files.UNKNOWN):
    """
    Pin ROCm to one release and bar the denied ones (apt preferences), checked by ``apt-cache policy``.

    + version: the ROCm release to hold (X.Y or X.Y.Z)
    + path: the preferences file
    + current_sha256: the file's SHA-256 if already known (None: absent)

    **Example:**

    .. code:: python

        pin(name="Hold ROCm at 7.2.1", version="7.2.1")
    """
    try:
        content = render_pin(version)
    except ValueError as error:
        raise OperationError(str(error)) from None
    yield from halo_files.checked_file._inner(
        path=path,
        content=content,
        check=StringCommand('apt-cache -o Dir::Etc::preferences="$HALO_CANDIDATE" policy rocm-core >/dev/null'),
        current_sha256=current_sha256,
    )


@operation()
def release(version: str, packages: list[str], installed: str | None):
    """
    Install the ROCm packages at the pinned release, moving an installed release up or down to it.

    + version: the release the pin holds
    + packages: ROCm packages to install (e.g. ``["rocm"]``)
    + installed: the release installed now (from the RocmInstall fact), None if none

    **Example:**

    .. code:: python

        release(name="Install ROCm 7.2.1", version="7.2.1", packages=["rocm"], installed="6.4.4")
    """
    if not validators.ROCM_RELEASE.fullmatch(version):
        raise OperationError(f"refusing ROCm release {version!r}: X.Y or X.Y.Z expected")
    problem = validators.check_packages(packages)
    if problem:
        raise OperationError(f"refusing ROCm packages: {problem}")
    if installed and (installed == version or installed.startswith(version + ".")):
        host.noop(f"ROCm {version} is installed")
        return
    yield StringCommand(
        APT_ENV, "apt-get", "install", "-y", "--allow-downgrades", "--no-install-recommends", policy.APT_LOCK_WAIT,
        "--", "rocm-core", *[QuoteString(package) for package in packages],  # "--": no name is read as an option
    )
    # The pin decides what apt picks: prove it picked the release we asked for.
    yield StringCommand(
        "sh", "-c",
        QuoteString(
            "v=$(dpkg-query -W -f='${Version}' rocm-core); "
            f'case "$v" in {version}.*|{version}-*) ;; *) echo "halofleet: rocm-core is $v, not {version}" >&2; '
            "exit 1;; esac"
        ),
    )
