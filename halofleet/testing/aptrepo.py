"""
A local apt repository of fake ROCm packages, built with dpkg-deb, for proving the ROCm stage's pin for real.

Legacy stream (constructed; names and version scheme as AMD's repo.radeon.com): each release gets ``rocm-core``
(installing ``/opt/rocm-<release>/.info/version`` as the real one does) and the ``rocm`` metapackage depending
on that exact ``rocm-core``, with AMD's version scheme (``7.2.1`` -> ``7.2.1.70201-1``).

TheRock stream (constructed after DOMAIN.md "ROCm 7.14+ and 10.x": per-version, per-target package names, Debian
versions X.Y.Z-N, prefix ``/opt/rocm/core-X.Y``, ``update-alternatives`` for ``/opt/rocm/core``), under the same
directory layout as AMD's two repositories: ``therock/packages-multi-arch/<dir>`` (7.x, suite ``stable``) and
``therock/core/packages/<dir>`` (10.x, suite ``stable``). The packages hold no ROCm, only what halofleet reads.
"""

from __future__ import annotations

import email.utils
import hashlib
import subprocess
import tempfile
from pathlib import Path

DEFAULT_RELEASES = ("6.4.4", "7.0.1", "7.2.1")
SUITE = "stable"
THEROCK_TARGET = "gfx1151"
# {repository directory under therock/: ((release, Debian revision), ...)}; the suite dir matches trixie's.
THEROCK_RELEASES: dict[str, tuple[tuple[str, str], ...]] = {
    "packages-multi-arch/debian13": (("7.14.0", "3"), ("7.14.1", "1")),
    "core/packages/debian13": (("10.0.0", "1"),),
}
THEROCK_ALTERNATIVE = "halofleet-test-rocm-core"  # [U] the real group name; only /opt/rocm/core matters here
# Where the test hosts (VMs and containers) keep the repository: their ROCm sources point here (``file:``).
REPO_PATH = "/srv/halofleet-test-repo"


def package_version(release: str) -> str:
    major, minor, patch = (release.split(".") + ["0"])[:3]
    return f"{release}.{int(major)}{int(minor):02d}{int(patch):02d}-1"


def _build_deb(workdir: Path, name: str, version: str, depends: str | None, files: dict[str, str | Path],
               scripts: dict[str, str] | None = None, compression: str = "gzip") -> Path:
    root = workdir / f"{name}_{version}"
    (root / "DEBIAN").mkdir(parents=True)
    control = [
        f"Package: {name}",
        f"Version: {version}",
        "Architecture: amd64",
        "Maintainer: halofleet tests <tests@halofleet.invalid>",
        "Section: devel",
        "Priority: optional",
        f"Description: fake {name} for halofleet's ROCm pin tests",
    ]
    if depends:
        control.insert(3, f"Depends: {depends}")
    (root / "DEBIAN" / "control").write_text("\n".join(control) + "\n")
    for path, content in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):  # a file's bytes (a kernel image), copied as they are
            target.write_bytes(content.read_bytes())
        else:
            target.write_text(content)
    for script, body in (scripts or {}).items():  # postinst, prerm: maintainer scripts must be executable
        path = root / "DEBIAN" / script
        path.write_text("#!/bin/sh\nset -e\n" + body)
        path.chmod(0o755)
    deb = workdir / f"{name}_{version}_amd64.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", str(root), str(deb)], check=True,
                   capture_output=True)
    return deb


def _control_of(deb: Path) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb)], check=True, capture_output=True, text=True).stdout.strip()


def therock_deb(workdir: Path, release: str, revision: str, target: str = THEROCK_TARGET) -> Path:
    """``amdrocmX.Y-<target>`` at ``release-revision``: ``/opt/rocm/core-X.Y/.info/version`` and the
    ``/opt/rocm/core`` alternative (registered by postinst, dropped by prerm, as AMD's packages do)."""
    major, minor = release.split(".")[:2]
    series, version = f"{major}.{minor}", f"{release}-{revision}"
    prefix = f"/opt/rocm/core-{series}"
    return _build_deb(
        workdir, f"amdrocm{series}-{target}", version, None, {f"{prefix}/.info/version": version + "\n"},
        scripts={
            "postinst": f"update-alternatives --install /opt/rocm/core {THEROCK_ALTERNATIVE} {prefix} "
                        f"{int(major) * 100 + int(minor)}\n",
            "prerm": f'if [ "$1" = remove ] || [ "$1" = deconfigure ]; then '
                     f"update-alternatives --remove {THEROCK_ALTERNATIVE} {prefix}; fi\n",
        },
    )


def build_repo(target: Path, releases: tuple[str, ...] = DEFAULT_RELEASES, suite: str = SUITE,
               therock: dict[str, tuple[tuple[str, str], ...]] | None = None) -> Path:
    """
    Write a repository (``dists/<suite>/main/binary-amd64`` + ``pool/``) of the legacy ``releases`` under
    ``target``, and one per entry of ``therock`` (default :data:`THEROCK_RELEASES`) under ``target/therock/``;
    return ``target``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        debs = []
        for release in releases:
            version = package_version(release)
            debs += [
                _build_deb(Path(tmp), "rocm-core", version, None, {f"/opt/rocm-{release}/.info/version": version + "\n"}),
                _build_deb(Path(tmp), "rocm", version, f"rocm-core (= {version})", {}),
            ]
        _write_index(target, suite, debs)
        for directory, therock_releases in (THEROCK_RELEASES if therock is None else therock).items():
            _write_index(target / "therock" / directory, SUITE,
                         [therock_deb(Path(tmp), release, revision) for release, revision in therock_releases])
    return target


def _write_index(target: Path, suite: str, debs: list[Path]) -> None:
    """Copy ``debs`` into ``target/pool/main`` and write the unsigned ``Packages`` and ``Release`` of ``suite``."""
    pool = target / "pool" / "main"
    pool.mkdir(parents=True, exist_ok=True)
    binary = target / "dists" / suite / "main" / "binary-amd64"
    binary.mkdir(parents=True, exist_ok=True)
    stanzas = []
    for deb in debs:
        final = pool / deb.name
        final.write_bytes(deb.read_bytes())
        data = final.read_bytes()
        stanzas.append(
            _control_of(final)
            + f"\nFilename: pool/main/{final.name}\nSize: {len(data)}\n"
            f"SHA256: {hashlib.sha256(data).hexdigest()}\n"
        )
    packages = "\n".join(stanzas)
    (binary / "Packages").write_text(packages)
    digest = hashlib.sha256(packages.encode()).hexdigest()
    (target / "dists" / suite / "Release").write_text(
        f"Origin: halofleet-test\nLabel: halofleet-test\nSuite: {suite}\nCodename: {suite}\n"
        f"Date: {email.utils.formatdate(usegmt=True)}\n"
        "Architectures: amd64\nComponents: main\n"
        f"SHA256:\n {digest} {len(packages.encode())} main/binary-amd64/Packages\n"
    )


def build_stack_repo(target: Path, kernel_release: str, kernel_version: str, vmlinuz: Path, initrd: Path,
                     firmware_versions: tuple[str, ...], suite: str = SUITE) -> Path:
    """
    A repository for the stack tests (constructed): ``linux-image-<kernel_release>`` at ``kernel_version`` carrying
    a copy of a real kernel image and initramfs as ``/boot/vmlinuz-<release>`` and ``/boot/initrd.img-<release>``
    (no maintainer scripts: the image keeps its own ``uname -r``, so it boots with the modules it came with), and
    ``firmware-amd-graphics`` at each of ``firmware_versions`` (a README only: the version is what halofleet reads).
    """
    with tempfile.TemporaryDirectory() as tmp:
        # Uncompressed: the image and initramfs are compressed already, and gunzip in a TCG guest is slow.
        debs = [_build_deb(Path(tmp), f"linux-image-{kernel_release}", kernel_version, None,
                           {f"/boot/vmlinuz-{kernel_release}": vmlinuz, f"/boot/initrd.img-{kernel_release}": initrd},
                           compression="none")]
        for version in firmware_versions:
            debs.append(_build_deb(Path(tmp), "firmware-amd-graphics", version, None,
                                   {"/usr/share/doc/halofleet-test-firmware/README": f"test firmware {version}\n"}))
        _write_index(target, suite, debs)
    return target


def rocm_group_data(version: str, repo_path: str = REPO_PATH) -> dict:
    """Host data pinning the legacy ``version`` from the repository at ``repo_path`` on the host (nothing served)."""
    return {
        "halo_serve": "none",  # the ROCm tests serve nothing (serving is tested on its own)
        "halo_rocm_version": version,
        "halo_rocm_repo_url": f"file:{repo_path}",
        "halo_rocm_repo_suite": SUITE,
        "halo_rocm_repo_trusted": True,
    }


def therock_group_data(version: str, repo_dir: str, repo_path: str = REPO_PATH) -> dict:
    """A TheRock release from the repository's copy of AMD's layout (``therock/<repo_dir>``, suite stable)."""
    return {
        "halo_serve": "none",
        "halo_rocm_version": version,
        "halo_rocm_repo_url": f"file:{repo_path}/therock/{repo_dir}",
        "halo_rocm_repo_trusted": True,
    }
