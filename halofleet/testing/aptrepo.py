"""
A local apt repository of fake ROCm packages, built with dpkg-deb, for proving the ROCm stage's pin for real.

Each release gets ``rocm-core`` (installing ``/opt/rocm-<release>/.info/version`` as the real one does) and the
``rocm`` metapackage depending on that exact ``rocm-core``, with AMD's version scheme
(``7.2.1`` -> ``7.2.1.70201-1``).
"""

from __future__ import annotations

import email.utils
import hashlib
import subprocess
import tempfile
from pathlib import Path

DEFAULT_RELEASES = ("6.4.4", "7.0.1", "7.2.1")
SUITE = "stable"


def package_version(release: str) -> str:
    major, minor, patch = (release.split(".") + ["0"])[:3]
    return f"{release}.{int(major)}{int(minor):02d}{int(patch):02d}-1"


def _build_deb(workdir: Path, name: str, version: str, depends: str | None, files: dict[str, str]) -> Path:
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
        target.write_text(content)
    deb = workdir / f"{name}_{version}_amd64.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)], check=True,
                   capture_output=True)
    return deb


def _control_of(deb: Path) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb)], check=True, capture_output=True, text=True).stdout.strip()


def build_repo(target: Path, releases: tuple[str, ...] = DEFAULT_RELEASES, suite: str = SUITE) -> Path:
    """Write a repository (``dists/<suite>/main/binary-amd64`` + ``pool/``) under ``target``; return it."""
    pool = target / "pool" / "main"
    pool.mkdir(parents=True, exist_ok=True)
    binary = target / "dists" / suite / "main" / "binary-amd64"
    binary.mkdir(parents=True, exist_ok=True)
    stanzas = []
    with tempfile.TemporaryDirectory() as tmp:
        for release in releases:
            version = package_version(release)
            debs = [
                _build_deb(Path(tmp), "rocm-core", version, None, {f"/opt/rocm-{release}/.info/version": version + "\n"}),
                _build_deb(Path(tmp), "rocm", version, f"rocm-core (= {version})", {}),
            ]
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
    return target
