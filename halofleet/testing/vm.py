"""
Real Debian VMs for halofleet's tests: built natively with mmdebstrap, booted by QEMU, reached over SSH.

The base image is a raw disk with an MBR partition table, one ext4 root partition and GRUB installed in it
(``grub-install`` runs once inside the VM), so kernel cmdline changes made by a deploy really apply after a
reboot. Each test VM gets a qcow2 overlay on the cached base, so the base is never modified.

Images are cached under ``$HALOFLEET_VM_CACHE`` (default ``~/.cache/halofleet/vm``), keyed by suite, package
list, recipe version and the harness's SSH key; a missing image is rebuilt.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

# Bump when the recipe below changes in a way the package list does not show.
RECIPE_VERSION = 3
MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = (
    "linux-image-amd64",
    "grub-pc",
    "systemd-sysv",
    "openssh-server",
    "udev",
    "initramfs-tools",
    "kmod",
    "iproute2",
    "procps",
    "sudo",
    "ca-certificates",
    "dbus",
    # podman is in the base so tests need no network; the runtime stage still manages it.
    "podman",
    "nftables",
    "uidmap",
)
# forky/sid Release files on the mirror are expired (measured 2026-11); trixie is fine.
EXPIRED_SUITES = {"forky", "sid"}
# forky's --variant=apt no longer pulls in `mount` (without it systemd-remount-fs fails and / stays read-only)
# nor `passwd` (useradd, groupadd).
SUITE_PACKAGES = {"forky": ("mount", "passwd"), "sid": ("mount", "passwd")}
# Serving test hosts: forky packages llama-server (llama.cpp-tools); curl for health checks; busybox-static to
# build a tiny local container image without a registry.
INVENTORY_FILE = Path(__file__).with_name("vm_inventory.py")  # pyinfra inventory reading HALOFLEET_VM_INVENTORY
SERVING_SUITE = "forky"
SERVING_PACKAGES = ("llama.cpp-tools", "curl", "busybox-static")
DISK_BYTES = 6 * 1024**3
PARTITION_START_SECTOR = 2048
ROOT_LABEL = "haloroot"
SECTOR = 512


def cache_dir() -> Path:
    path = Path(os.environ.get("HALOFLEET_VM_CACHE", Path.home() / ".cache" / "halofleet" / "vm"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def ssh_key(cache: Path | None = None) -> Path:
    """The harness's own root SSH key (made once, kept beside the images)."""
    cache = cache or cache_dir()
    key = cache / "id_ed25519"
    with open(cache / ".key.lock", "w") as lock:  # VM modules may run in several processes at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not key.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "halofleet-test", "-f", str(key)],
                check=True, stdin=subprocess.DEVNULL,
            )
    return key


def _log(message: str) -> None:
    print(f"[halofleet-vm {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_mbr(disk: Path, start_sector: int, sectors: int) -> None:
    """One bootable Linux partition (type 0x83); the gap before it holds GRUB's core image."""
    entry = struct.pack(
        "<B3sB3sII",
        0x80,  # bootable
        b"\xfe\xff\xff",  # CHS start: use LBA
        0x83,
        b"\xfe\xff\xff",
        start_sector,
        sectors,
    )
    with open(disk, "r+b") as handle:
        handle.seek(440)
        handle.write(struct.pack("<I", int(uuid.uuid4()) & 0xFFFFFFFF) + b"\x00\x00")
        handle.write(entry + b"\x00" * 48 + b"\x55\xaa")


def _configure_rootfs(root: Path, pubkey: str) -> None:
    (root / "etc/hostname").write_text("halovm\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n127.0.1.1 halovm\n")
    (root / "etc/fstab").write_text(f"LABEL={ROOT_LABEL} / ext4 defaults,errors=remount-ro 0 1\n")
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text("nameserver 10.0.2.3\n")
    net = root / "etc/systemd/network/20-wired.network"
    net.parent.mkdir(parents=True, exist_ok=True)
    net.write_text("[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n")
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(pubkey)
    (ssh_dir / "authorized_keys").chmod(0o600)
    # Boot straight through GRUB, with the console on the serial port for the harness's log.
    grub = root / "etc/default/grub"
    text = grub.read_text()
    text = text.replace("GRUB_TIMEOUT=5", "GRUB_TIMEOUT=0")
    text = text.replace('GRUB_CMDLINE_LINUX=""', 'GRUB_CMDLINE_LINUX="console=ttyS0,115200"')
    grub.write_text(text)
    chroot = ["chroot", str(root)]
    _run(chroot + ["systemctl", "enable", "systemd-networkd", "ssh"], capture_output=True)
    # Timers that take the dpkg lock or burn the one emulated CPU have no place in a test VM.
    _run(
        chroot
        + ["systemctl", "mask", "apt-daily.timer", "apt-daily-upgrade.timer", "man-db.timer", "e2scrub_all.timer",
           "fstrim.timer", "dpkg-db-backup.timer"],
        capture_output=True,
    )


KVM_PROBE_SECONDS = 120


def accelerator() -> str:
    """
    TCG unless KVM has been shown to work here. KVM is present on these machines but fails with "emulation
    failure" on real kernels, so it is used only after a probe boot of the base image reached SSH; the verdict is
    cached beside the images. ``HALOFLEET_VM_ACCEL`` (tcg | kvm | probe) overrides.
    """
    choice = os.environ.get("HALOFLEET_VM_ACCEL", "probe")
    if choice != "probe":
        return choice
    verdict = cache_dir() / "kvm-probe"
    if not verdict.exists():
        verdict.write_text(_probe_kvm())
    return verdict.read_text().strip()


def _probe_kvm() -> str:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    base = base_image("trixie")
    with tempfile.TemporaryDirectory() as tmp:
        probe = VM.from_base("kvm-probe", base, Path(tmp), accel="kvm")
        probe.start()
        try:
            probe.wait_ssh(timeout=KVM_PROBE_SECONDS)
            result = "kvm"
        except (RuntimeError, TimeoutError):
            result = "tcg"
        finally:
            probe.stop()
    _log(f"KVM probe boot: using {result}")
    return result


def _image_key(suite: str, packages: tuple[str, ...], pubkey: str) -> str:
    material = "\n".join([suite, str(RECIPE_VERSION), pubkey, *sorted(packages)])
    return hashlib.sha256(material.encode()).hexdigest()[:12]


def base_image(suite: str = "trixie", extra_packages: tuple[str, ...] = ()) -> Path:
    """Path of the cached GRUB-booting base image for ``suite``, built first if missing."""
    cache = cache_dir()
    key = ssh_key(cache)
    pubkey = key.with_suffix(".pub").read_text()
    packages = tuple(sorted(set(BASE_PACKAGES) | set(SUITE_PACKAGES.get(suite, ())) | set(extra_packages)))
    image = cache / f"{suite}-{_image_key(suite, packages, pubkey)}.raw"
    with open(cache / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not image.exists():
            _build_image(suite, packages, pubkey, image)
    return image


class ImageBuildError(RuntimeError):
    """A base image could not be built: one line, with the log that says why."""


def _build_image(suite: str, packages: tuple[str, ...], pubkey: str, image: Path) -> None:
    log = image.with_suffix(".build.log")
    try:
        with open(log, "w") as output:
            _build_image_logged(suite, packages, pubkey, image, output)
    except subprocess.CalledProcessError as error:
        raise ImageBuildError(f"building the {suite} VM image failed ({Path(error.cmd[0]).name} exited "
                              f"{error.returncode}); log: {log}") from None


def _build_image_logged(suite: str, packages: tuple[str, ...], pubkey: str, image: Path, output) -> None:
    started = time.monotonic()
    _log(f"building {suite} base image {image.name}")
    with tempfile.TemporaryDirectory(dir=image.parent, prefix="build-") as tmp:
        tmpdir = Path(tmp)
        root = tmpdir / "root"
        cmd = ["mmdebstrap", "--variant=apt", "--include=" + ",".join(packages), "--skip=cleanup/apt/lists"]
        if suite in EXPIRED_SUITES:
            cmd.append("--aptopt=Acquire::Check-Valid-Until false")
        _run(cmd + [suite, str(root), MIRROR], stdout=output, stderr=subprocess.STDOUT)
        if suite in EXPIRED_SUITES:
            (root / "etc/apt/apt.conf.d/99halofleet-test-valid-until").write_text(
                'Acquire::Check-Valid-Until "false";\n'
            )
        _configure_rootfs(root, pubkey)
        kernel = sorted((root / "boot").glob("vmlinuz-*"))[-1]
        initrd = sorted((root / "boot").glob("initrd.img-*"))[-1]
        shutil.copy(kernel, tmpdir / "vmlinuz")
        shutil.copy(initrd, tmpdir / "initrd")

        part_sectors = DISK_BYTES // SECTOR - PARTITION_START_SECTOR
        rootfs = tmpdir / "rootfs.ext4"
        _run(
            ["mke2fs", "-q", "-t", "ext4", "-L", ROOT_LABEL, "-d", str(root), str(rootfs),
             str(part_sectors * SECTOR // 1024) + "k"], stdout=output, stderr=subprocess.STDOUT,
        )
        shutil.rmtree(root)
        disk = tmpdir / "disk.raw"
        with open(disk, "wb") as handle:
            handle.truncate(DISK_BYTES)
        _write_mbr(disk, PARTITION_START_SECTOR, part_sectors)
        _run(
            ["dd", f"if={rootfs}", f"of={disk}", "bs=1M", f"seek={PARTITION_START_SECTOR * SECTOR}",
             "oflag=seek_bytes", "conv=notrunc,sparse", "status=none"], stdout=output, stderr=subprocess.STDOUT,
        )
        rootfs.unlink()

        # First boot straight into the kernel, to install GRUB from inside the VM onto its own disk.
        vm = VM(name="image-build", disk=disk, disk_format="raw", workdir=tmpdir, accel="tcg",
                kernel=(tmpdir / "vmlinuz", tmpdir / "initrd", f"root=LABEL={ROOT_LABEL} rw console=ttyS0"))
        vm.start()
        try:
            vm.wait_ssh()
            vm.ssh("grub-install /dev/vda && update-grub && sync")
            vm.ssh("systemctl poweroff", check=False)
            vm.wait_exit(120)
        finally:
            vm.stop()
        disk.rename(image)
    _log(f"built {image.name} in {time.monotonic() - started:.0f} s")


# A TCG guest under load can take more than ssh's 10 s to send its banner (seen in CI: "Connection timed out during
# banner exchange" on a guest that had answered a moment before). These failures come before authentication, so the
# command never ran and asking again is safe; nothing after authentication is retried.
SSH_CONNECT_TIMEOUT_S = 30
SSH_ATTEMPTS = 3
PRE_AUTH_FAILURES = ("during banner exchange", "kex_exchange_identification", "Connection refused",
                     "Connection timed out")


@dataclass
class VM:
    """One QEMU guest with its SSH port forwarded to 127.0.0.1 only."""

    name: str
    disk: Path
    workdir: Path
    disk_format: str = "qcow2"
    memory_mib: int = 16384  # sparse: lets the default 8 GiB OS reserve leave a real GTT size
    port: int = field(default_factory=free_port)
    kernel: tuple[Path, Path, str] | None = None
    process: subprocess.Popen | None = None
    accel: str | None = None

    @classmethod
    def from_base(cls, name: str, base: Path, workdir: Path, **kwargs) -> "VM":
        workdir.mkdir(parents=True, exist_ok=True)
        overlay = workdir / f"{name}.qcow2"
        overlay.unlink(missing_ok=True)
        _run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(overlay)])
        return cls(name=name, disk=overlay, workdir=workdir, **kwargs)

    @property
    def console_log(self) -> Path:
        return self.workdir / f"{self.name}.console.log"

    def qemu_command(self) -> list[str]:
        cmd = [
            "qemu-system-x86_64", "-accel", self.accel or accelerator(), "-cpu", "max",
            "-m", str(self.memory_mib), "-smp", "1", "-display", "none",
            "-serial", f"file:{self.console_log}",
            "-drive", f"file={self.disk},if=virtio,format={self.disk_format},cache=unsafe",
            # restrict=on: the guest reaches no network; the SSH forward still works.
            "-nic", f"user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:{self.port}-:22",
        ]
        if self.kernel:
            kernel, initrd, append = self.kernel
            cmd += ["-kernel", str(kernel), "-initrd", str(initrd), "-append", append]
        return cmd

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.qemu_command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / f"{self.name}.qemu.log", "w"),
        )

    def ssh_command(self, command: str, timeout: int = 10) -> list[str]:
        return [
            "ssh", "-i", str(ssh_key()), "-p", str(self.port), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", f"ConnectTimeout={timeout}",
            "-o", "BatchMode=yes", "root@127.0.0.1", command,
        ]

    def ssh(self, command: str, check: bool = True, timeout: float = 600, attempts: int = SSH_ATTEMPTS,
            connect_timeout: int = SSH_CONNECT_TIMEOUT_S) -> subprocess.CompletedProcess:
        """Run ``command`` in the guest; a connection that failed before the command could start is tried again."""
        for _ in range(attempts):
            result = subprocess.run(self.ssh_command(command, timeout=connect_timeout), capture_output=True,
                                    text=True, timeout=timeout)
            if result.returncode != 255 or not any(failure in result.stderr for failure in PRE_AUTH_FAILURES):
                break
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{self.name}: `{command}` exited {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    def copy_dir(self, local: Path, remote: str) -> None:
        """Copy a local directory's contents to ``remote`` in the guest (tar over SSH)."""
        tar = subprocess.Popen(["tar", "-C", str(local), "-cf", "-", "."], stdout=subprocess.PIPE)
        subprocess.run(self.ssh_command(f"mkdir -p {remote} && tar -C {remote} -xf -"), stdin=tar.stdout,
                       check=True, capture_output=True)
        tar.wait()

    def reachable(self) -> bool:
        try:
            return subprocess.run(self.ssh_command("true", timeout=5), capture_output=True, timeout=15).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def wait_ssh(self, timeout: float = 600) -> float:  # TCG boots of several VMs on 2 shared cores can take minutes
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"{self.name}: qemu exited early; see {self.console_log}")
            if self.reachable():
                return time.monotonic() - started
            time.sleep(2)
        raise TimeoutError(f"{self.name}: no SSH after {timeout} s; see {self.console_log}")

    def boot_id(self) -> str:
        return self.ssh("cat /proc/sys/kernel/random/boot_id").stdout.strip()

    def reboot(self, timeout: float = 300) -> float:
        """Reboot the guest and wait for a new boot (its boot id changes); returns the seconds it took."""
        before = self.boot_id()
        started = time.monotonic()
        self.ssh("systemd-run --quiet --on-active=2 systemctl reboot", check=False)
        while time.monotonic() - started < timeout:
            time.sleep(5)
            if self.reachable():
                result = self.ssh("cat /proc/sys/kernel/random/boot_id", check=False, timeout=30)
                if result.returncode == 0 and result.stdout.strip() != before:
                    return time.monotonic() - started
        raise TimeoutError(f"{self.name}: no new boot after {timeout} s; see {self.console_log}")

    def settle(self, boot_before: str, grace: float = 45, timeout: float = 600) -> bool:
        """Wait until the guest is up and not shutting down; returns whether it rebooted since ``boot_before``.

        For a run killed around its reboot, where the reboot may or may not have been sent: SSH answering right after
        the kill proves nothing (sshd is among the last services stopped, and a connection in the middle of the
        shutdown is reset). The guest has settled when it is reachable and either has a new boot id and finished
        booting, or kept the old boot id for ``grace`` s without starting a shutdown.
        """
        started = time.monotonic()
        same_since = None
        while time.monotonic() - started < timeout:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"{self.name}: qemu exited; see {self.console_log}")
            state = self.ssh("cat /proc/sys/kernel/random/boot_id; systemctl is-system-running", check=False,
                             timeout=30) if self.reachable() else None
            lines = state.stdout.split() if state is not None and state.returncode in (0, 1) else []
            if len(lines) == 2 and lines[1] != "stopping":
                if lines[0] != boot_before:
                    self.ssh("systemctl is-system-running --wait >/dev/null", check=False, timeout=300)
                    return True
                same_since = same_since or time.monotonic()
                if time.monotonic() - same_since >= grace:
                    return False
            else:
                same_since = None
            time.sleep(2)
        raise TimeoutError(f"{self.name}: not settled after {timeout} s; see {self.console_log}")

    def wait_exit(self, timeout: float) -> None:
        if self.process:
            self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=15)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()

    def inventory_entry(self) -> tuple[str, dict]:
        return (
            self.name,
            {
                "ssh_hostname": "127.0.0.1",
                "ssh_port": self.port,
                "ssh_user": "root",
                "ssh_key": str(ssh_key()),
                "ssh_strict_host_key_checking": "no",
                "ssh_known_hosts_file": "/dev/null",
                "ssh_connect_retries": SSH_ATTEMPTS - 1,  # pyinfra's own connects to a busy TCG guest, as above
            },
        )


def write_inventory(vms: list[VM], path: Path, host_data: dict[str, dict] | None = None,
                    group_data: dict | None = None) -> Path:
    """
    A JSON description of the VMs (name, SSH settings, extra host data) that the inventory file ``INVENTORY_FILE``
    (``inventories/vm.py``) reads when
    ``HALOFLEET_VM_INVENTORY`` points at it.
    """
    host_data = host_data or {}
    hosts = []
    for vm in vms:
        name, data = vm.inventory_entry()
        data.update(host_data.get(name, {}))
        hosts.append([name, data])
    path.write_text(json.dumps({"hosts": hosts, "group_data": group_data or {}}, indent=2))
    return path


def boot_vms(names: list[str], base: Path, workdir: Path, **kwargs) -> list[VM]:
    """Start every VM, then wait for all of them (they boot together)."""
    vms = [VM.from_base(name, base, workdir, **kwargs) for name in names]
    for vm in vms:
        vm.start()
    try:
        for vm in vms:
            seconds = vm.wait_ssh()
            _log(f"{vm.name} reachable on 127.0.0.1:{vm.port} after {seconds:.0f} s")
    except Exception:
        for vm in vms:
            vm.stop()
        raise
    return vms
