"""
Host ROCm on apt systems, both streams: the repository (legacy deb822 with an ASCII-armored key; TheRock 7.x
one-line and 10.x deb822, each with a binary keyring), a pin that holds the chosen release and bars denied ones,
the removal of the legacy stack before TheRock, and the install itself (moving up or down to the pinned release).
"""

from __future__ import annotations

import re
import shlex

from pyinfra import host
from pyinfra.api import OperationError, QuoteString, StringCommand, operation
from pyinfra.facts.files import Sha256File

from ..contract import policy, validators
from ..contract.paths import ROCM_KEY, ROCM_PIN, ROCM_SOURCES
from ..contract.templating import render
from . import halo_files

APT_ENV = "DEBIAN_FRONTEND=noninteractive"


LEGACY_PIN_PACKAGES = ["rocm-core", "rocm", "rocm-dev", "rocm-libs", "rocm-hip-runtime", "rocm-hip-sdk"]
_PIN_VERSION = re.compile(r"\d+\.\d+(\.\d+)?(\.\*|-\*)")


def _checked_packages(packages: list[str]) -> list[str]:
    problem = validators.check_package_names(packages)
    if problem:
        raise OperationError(f"refusing ROCm packages: {problem}")
    return packages


def render_sources(url: str, suite: str, key_path: str | None, deb822: bool = True) -> str:
    """
    The repository's sources file: deb822 (``.sources``) or AMD's one-line format (``.list``); the URL and suite
    in the grammars host data is validated with (one grammar each: what validation accepts is written).
    """
    problem = validators.check_apt_url(url) or validators.check_apt_suite(suite)
    if problem:
        raise ValueError(f"not usable in an apt source: {validators.mask_url_credentials(url)!r} {suite!r}: {problem}")
    return render("rocm.sources.j2" if deb822 else "rocm.list.j2", url=url, suite=suite, key_path=key_path)


def render_pin(version: str, packages: list[str] | None = None, pin_version: str | None = None) -> str:
    """
    Legacy: every ROCm package depends on an exact rocm-core version, so holding ``rocm-core`` (and the
    metapackages) to one release holds the whole stack. TheRock: the per-target packages carry X.Y in their
    names, so the pin holds their patch level (``7.14.0-*``) or the series (``7.14.*``). Denied releases get
    priority -1 so no upgrade can reach them.
    """
    policy.parse_rocm_version(version)
    pin_version = pin_version or f"{version}.*"
    if not _PIN_VERSION.fullmatch(pin_version):
        raise ValueError(f"not a ROCm pin version: {pin_version!r}")
    problem = validators.check_package_names(packages or [])
    if problem:
        raise ValueError(f"refusing ROCm pin packages: {problem}")
    return render("rocm-pin.pref.j2", packages=packages or LEGACY_PIN_PACKAGES, pin_version=pin_version,
                  denylist=policy.ROCM_DENYLIST)


def _update_only(sources_path: str) -> StringCommand:
    """``apt-get update`` of our one source: fast, and independent of the state of the host's other sources."""
    return StringCommand(
        APT_ENV, "apt-get", "update", policy.APT_LOCK_WAIT,
        "-o", QuoteString(f"Dir::Etc::sourcelist={sources_path}"),
        "-o", "Dir::Etc::sourceparts=-", "-o", "APT::Get::List-Cleanup=0",
    )


_KEY_ARMORED_CHECK = "grep -q 'BEGIN PGP PUBLIC KEY BLOCK' $tmp"
# A binary keyring starts with a public-key packet: old format tag 6 (0x98/0x99/0x9a), new format 0xc6 [RFC 4880].
_KEY_BINARY_CHECK = ("! grep -q 'BEGIN PGP' $tmp && "
                     "case $(od -An -tx1 -N1 $tmp | tr -d ' ') in 98|99|9a|c6) true;; *) false;; esac")


@operation()
def repository(
    url: str,
    suite: str,
    key_url: str | None = None,
    path: str = ROCM_SOURCES,
    key_path: str = ROCM_KEY,
    current: dict[str, str] | None = None,
    key_binary: bool = False,
    deb822: bool = True,
):
    """
    Add the ROCm apt repository and refresh its index when it changed.

    + url: repository base URL (AMD's, a mirror, or a ``file:`` repository)
    + suite: the suite (``noble`` for AMD's legacy Ubuntu 24.04 repo, ``stable`` for TheRock)
    + key_url: signing key to fetch; None marks the repository trusted (local test repos only)
    + path: the sources file (``.sources`` for deb822, ``.list`` for the one-line format)
    + key_path: where the key is stored (``/etc/apt/keyrings/...``; ``signed-by`` points at it)
    + current: {path: sha256} of the managed files if already known
    + key_binary: the key is a binary (dearmored) keyring, as TheRock publishes it; checked for an OpenPGP
      public-key packet and stored as is (no gpg on the host); otherwise an ASCII-armored key
    + deb822: write a deb822 ``.sources`` file; False writes AMD's one-line ``deb [...]`` format

    **Example:**

    .. code:: python

        repository(name="ROCm repo", url="https://repo.radeon.com/rocm/apt/7.2.1", suite="noble",
                   key_url="https://repo.radeon.com/rocm/rocm.gpg.key")
    """
    for value, what, check in ((url, "URL", validators.check_apt_url), (key_url, "key URL", validators.check_url)):
        problem = check(value) if value is not None else None
        if problem:
            raise OperationError(f"refusing ROCm repository {what} {validators.mask_url_credentials(value)!r}: "
                                 f"{problem}")
    if validators.check_apt_suite(suite):
        raise OperationError(f"refusing ROCm repository suite {suite!r}: {validators.check_apt_suite(suite)}")
    try:
        content = render_sources(url, suite, key_path if key_url else None, deb822)
    except ValueError as error:
        raise OperationError(str(error)) from None
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
                    f"{_KEY_BINARY_CHECK if key_binary else _KEY_ARMORED_CHECK} && chmod 0644 $tmp && "
                    f"mv -f $tmp {shlex.quote(key_path)} || "
                    f"{{ rm -f $tmp; echo {failure} >&2; exit 1; }}"
                ),
            )
    yield from halo_files.checked_file._inner(
        path=path,
        content=content,
        activate=_update_only(path),
        current_sha256=current.get(path) if current is not None else halo_files.UNKNOWN,
    )


@operation()
def pin(
    version: str,
    path: str = ROCM_PIN,
    current_sha256: str | None = halo_files.UNKNOWN,
    packages: list[str] | None = None,
    pin_version: str | None = None,
):
    """
    Pin ROCm to one release and bar the denied ones (apt preferences), checked by ``apt-cache policy``.

    + version: the ROCm release to hold (X.Y or X.Y.Z)
    + path: the preferences file
    + current_sha256: the file's SHA-256 if already known (None: absent)
    + packages: the packages held (default: legacy rocm-core and its metapackages)
    + pin_version: the version glob they are held to (default: ``<version>.*``, the legacy scheme)

    **Example:**

    .. code:: python

        pin(name="Hold ROCm at 7.2.1", version="7.2.1")
        pin(name="Hold ROCm at 7.14.1", version="7.14.1", packages=["amdrocm7.14-gfx1151"], pin_version="7.14.1-*")
    """
    try:
        content = render_pin(version, packages, pin_version)
    except ValueError as error:
        raise OperationError(str(error)) from None
    held = (packages or LEGACY_PIN_PACKAGES)[0]
    yield from halo_files.checked_file._inner(
        path=path,
        content=content,
        check=StringCommand(
            'apt-cache -o Dir::Etc::preferences="$HALO_CANDIDATE" policy', QuoteString(held), ">/dev/null"
        ),
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


def _matches(version: str, pin_version: str) -> bool:
    """Whether a Debian version satisfies a pin glob of the forms ``X.Y.Z-*`` / ``X.Y.*``."""
    return version.startswith(pin_version[:-1])


@operation()
def legacy_removed(legacy: str | None, version: str):
    """
    Remove the legacy ROCm stack (``rocm-core`` and every package depending on it) before TheRock, as AMD's
    install docs ask for 7.2.4 and older.

    + legacy: the legacy release installed now (from the RocmInstall fact), None if none
    + version: the TheRock release that follows (for the messages)

    **Example:**

    .. code:: python

        legacy_removed(name="Remove legacy ROCm 7.2.1 before TheRock 7.14", legacy="7.2.1", version="7.14")
    """
    if not legacy:
        host.noop("no legacy ROCm installed")
        return
    if not re.fullmatch(r"[0-9A-Za-z.+~]+", legacy):  # it reaches a message inside sh -c
        raise OperationError(f"not a ROCm release: {legacy!r}")
    try:
        policy.parse_rocm_version(version)
    except ValueError as error:
        raise OperationError(str(error)) from None
    # apt removes the packages depending on rocm-core with it; purge drops their conffiles too.
    yield StringCommand(
        APT_ENV, "apt-get", "purge", "-y", policy.APT_LOCK_WAIT, policy.ROCM_LEGACY_CORE,
    )
    yield StringCommand(
        "sh", "-c",
        QuoteString(
            f"if dpkg-query -W -f='${{db:Status-Status}}' {policy.ROCM_LEGACY_CORE} 2>/dev/null | grep -qx installed; "
            f"then echo 'halofleet: legacy ROCm {legacy} is still installed; TheRock {version} needs it gone' >&2; "
            "exit 1; fi"
        ),
    )


@operation()
def therock_release(version: str, packages: list[str], installed: dict[str, str], pin_version: str):
    """
    Install TheRock's per-target ROCm packages at the pinned patch level or series, moving installed ones to it.

    + version: the release the pin holds (X.Y or X.Y.Z)
    + packages: the packages (``amdrocm7.14-gfx1151``; the first one is checked after the install)
    + installed: {package: Debian version} of the amdrocm* packages installed now (from the RocmInstall fact)
    + pin_version: the pin's version glob (``7.14.1-*`` or ``7.14.*``)

    **Example:**

    .. code:: python

        therock_release(name="Install ROCm 7.14.1 (TheRock)", version="7.14.1", packages=["amdrocm7.14-gfx1151"],
                        installed={}, pin_version="7.14.1-*")
    """
    _checked_packages(packages)
    try:
        policy.parse_rocm_version(version)
    except ValueError as error:
        raise OperationError(str(error)) from None
    if not packages:
        raise OperationError("no ROCm package to install")
    if not _PIN_VERSION.fullmatch(pin_version):
        raise OperationError(f"not a ROCm pin version: {pin_version!r}")
    if all(package in installed and _matches(installed[package], pin_version) for package in packages):
        host.noop(f"ROCm {version} is installed ({', '.join(packages)})")
        return
    yield StringCommand(
        APT_ENV, "apt-get", "install", "-y", "--allow-downgrades", "--no-install-recommends", policy.APT_LOCK_WAIT,
        *[QuoteString(package) for package in packages],
    )
    # The pin decides what apt picks: prove it picked the release we asked for.
    prefix = pin_version[:-1]
    yield StringCommand(
        "sh", "-c",
        QuoteString(
            f"v=$(dpkg-query -W -f='${{Version}}' {packages[0]}); "
            f'case "$v" in {prefix}*) ;; *) echo "halofleet: {packages[0]} is $v, not {version}" >&2; '
            "exit 1;; esac"
        ),
    )
