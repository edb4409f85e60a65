"""
The fast test tier: Debian hosts as systemd-nspawn containers, each booting its own systemd and sshd in about a
second, on a private network that exists only inside network namespaces the test creates.

What it covers: units, packages, files, users, llama-server, ggml-rpc-server, haproxy and a per-host nftables
ruleset (each container has its own network namespace). What it does not: the kernel, GRUB, reboots, modprobe,
sysfs and podman belong to the host here, so those stay on the QEMU tier (``vm.py``).

Topology of one :class:`Network`::

    netns hf<id>-sw:  bridge br0 = <prefix>.1/24  (the "controller": pyinfra, test HTTP servers, probes)
    netns hf<id>-<n>: eth0 = <prefix>.<10+n>/24   (one per container; veth peer enslaved to br0)

The controller side is a namespace too, so nothing a test sends can leave the machine: ``net.run``/``net.popen``
run a command in it and ``net.run_pyinfra`` runs pyinfra there.

    with nspawn.Network(tmp_path) as net:
        srv1, srv2 = net.boot(["srv1", "srv2"])
        srv1.ssh("systemctl is-system-running --wait")
        description = net.write_inventory(tmp_path / "hosts.json", host_data={"srv1": {...}})
        run = net.run_pyinfra(description, "deploys/serve.py")

The root filesystem is built once with mmdebstrap (cached beside the VM images, keyed by its package list) and
every container boots an overlayfs on it, so the cache is never modified.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import vm
from .runs import PyinfraRun, run_pyinfra

RECIPE_VERSION = 2
SUITE = "forky"  # the suite that packages llama-server (llama.cpp-tools 0.7.0) and ggml-rpc-server
PACKAGES = (
    "systemd-sysv", "dbus", "openssh-server", "iproute2", "procps", "sudo", "ca-certificates", "mount", "passwd",
    "curl", "python3", "kmod",
    "llama.cpp-tools", "llama.cpp-tools-extra", "libggml0-backend-rpc",  # llama-server, ggml-rpc-server
    "haproxy", "nftables",
    "podman", "uidmap",  # installed so the runtime stage is a no-op offline (containers themselves: QEMU tier)
    "python3-huggingface-hub",  # the `hf` client, for model downloads
    "netcat-openbsd",  # tests probe TCP ports from inside a container
    "prometheus", "prometheus-node-exporter",  # the monitoring stage (halo_monitor), installed offline
)
# Units that make no sense in a container sharing the host's kernel, or that take the dpkg lock mid-test.
MASKED_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer", "man-db.timer", "e2scrub_all.timer", "fstrim.timer",
                "dpkg-db-backup.timer", "systemd-networkd.service", "systemd-resolved.service",
                "systemd-timesyncd.service")
DISABLED_UNITS = ("prometheus.service", "prometheus-node-exporter.service")
_ids = itertools.count()


def _log(message: str) -> None:
    print(f"[halofleet-nspawn {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kwargs)


def rootfs(packages: tuple[str, ...] = PACKAGES) -> Path:
    """The cached container root filesystem (a directory), built first if missing."""
    cache = vm.cache_dir()
    key = vm.ssh_key(cache)
    pubkey = key.with_suffix(".pub").read_text()
    material = "\n".join([SUITE, str(RECIPE_VERSION), pubkey, *sorted(packages)])
    root = cache / f"nspawn-{SUITE}-{hashlib.sha256(material.encode()).hexdigest()[:12]}"
    with open(cache / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not root.exists():
            _build_rootfs(root, packages, pubkey)
    return root


def _build_rootfs(root: Path, packages: tuple[str, ...], pubkey: str) -> None:
    started = time.monotonic()
    log = root.with_suffix(".build.log")
    _log(f"building the {SUITE} container root filesystem {root.name}")
    with tempfile.TemporaryDirectory(dir=root.parent, prefix="build-") as tmp:
        tree = Path(tmp) / "root"
        try:
            with open(log, "w") as output:
                _run(["mmdebstrap", "--variant=apt", "--include=" + ",".join(packages), "--skip=cleanup/apt/lists",
                      "--aptopt=Acquire::Check-Valid-Until false", SUITE, str(tree), vm.MIRROR],
                     stdout=output, stderr=subprocess.STDOUT)
        except subprocess.CalledProcessError as error:
            raise vm.ImageBuildError(f"building the {SUITE} container rootfs failed (mmdebstrap exited "
                                     f"{error.returncode}); log: {log}") from None
        (tree / "etc/apt/apt.conf.d/99halofleet-test-valid-until").write_text('Acquire::Check-Valid-Until "false";\n')
        # An empty fstab: the root is the overlay nspawn was given; any entry would leave the system "degraded".
        (tree / "etc/fstab").write_text("")
        (tree / "etc/resolv.conf").unlink(missing_ok=True)
        (tree / "etc/resolv.conf").write_text("")  # no DNS: the test network has no resolver
        ssh_dir = tree / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(pubkey)
        (ssh_dir / "authorized_keys").chmod(0o600)
        chroot = ["chroot", str(tree)]
        _run(chroot + ["systemctl", "enable", "ssh"], capture_output=True)
        _run(chroot + ["systemctl", "mask", *MASKED_UNITS], capture_output=True)
        # Installed but off, as on a host where nobody uses them yet: the other tests' containers run no monitoring
        # daemons, and the monitor test starts Debian's Prometheus itself where it needs a user's own.
        _run(chroot + ["systemctl", "disable", *DISABLED_UNITS], capture_output=True)
        # Host keys are made by the package's postinst: every container of this rootfs shares them (test only).
        tree.rename(root)
    _log(f"built {root.name} in {time.monotonic() - started:.0f} s")


UNIFIED_CGROUP = Path("/sys/fs/cgroup/unified")  # hybrid hosts; on a pure cgroup2 host: /sys/fs/cgroup itself


def _own_cgroup(name: str) -> Path | None:
    """
    A cgroup of the container's own: with --keep-unit (no systemd on the host to ask for a scope) nspawn runs the
    container in its caller's cgroup, and two containers' systemds sharing one tree remove each other's service
    cgroups (a unit restarted on both at once then fails with "Result: resources").
    """
    base = UNIFIED_CGROUP if (UNIFIED_CGROUP / "cgroup.procs").exists() else Path("/sys/fs/cgroup")
    if not (base / "cgroup.procs").exists():
        return None
    path = base / "halofleet-nspawn" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _join_cgroup(path: Path) -> None:
    (path / "cgroup.procs").write_text(str(os.getpid()))


@dataclass
class Container:
    """One booted container: its name, address on the test network and SSH access (through the namespace)."""

    name: str
    address: str
    netns: str
    network: "Network"
    directory: Path
    process: subprocess.Popen | None = None
    mounted: bool = False
    cgroup: Path | None = None

    def ssh_command(self, command: str, timeout: int = 10) -> list[str]:
        return self.network.prefix + [
            "ssh", "-q", "-i", str(vm.ssh_key()), "-o", "StrictHostKeyChecking=no", "-o",
            "UserKnownHostsFile=/dev/null", "-o", f"ConnectTimeout={timeout}", "-o", "BatchMode=yes",
            f"root@{self.address}", command,
        ]

    def ssh(self, command: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        # errors="replace": a journal may hold what a random-weight model generated (any bytes, not UTF-8).
        return subprocess.run(self.ssh_command(command), capture_output=True, text=True, errors="replace",
                              check=check, timeout=timeout)

    def inventory_entry(self) -> tuple[str, dict]:
        return (self.name, {
            "ssh_hostname": self.address, "ssh_port": 22, "ssh_user": "root", "ssh_key": str(vm.ssh_key()),
            "ssh_strict_host_key_checking": "no", "ssh_known_hosts_file": "/dev/null",
        })

    def wait_ssh(self, timeout: float = 120) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"container {self.name} exited {self.process.returncode}; log: {self.log}")
            if self.ssh("true", check=False, timeout=15).returncode == 0:
                return time.monotonic() - started
            time.sleep(0.5)
        raise TimeoutError(f"container {self.name} not reachable over SSH after {timeout:.0f} s; log: {self.log}")

    @property
    def log(self) -> Path:
        return self.directory / "console.log"

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()  # nspawn asks the container's systemd to power off
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.directory / "merged")], check=False)
            self.mounted = False
        if self.cgroup and self.cgroup.exists():  # empty once the container is gone: deepest first
            for path in sorted((p for p in self.cgroup.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    path.rmdir()
            with contextlib.suppress(OSError):
                self.cgroup.rmdir()


@dataclass
class Network:
    """A private test network (see the module docstring): create it with ``with``, boot containers on it."""

    workdir: Path
    id: str = field(default_factory=lambda: f"{os.getpid() % 10000}{next(_ids)}")
    containers: list[Container] = field(default_factory=list)
    processes: list[subprocess.Popen] = field(default_factory=list)

    def __post_init__(self) -> None:
        # 10.<a>.<b>.0/24, different per network of this machine's tests (nothing else routes there: the
        # namespaces have no uplink).
        number = int(self.id) % 60000
        self.subnet = f"10.{100 + number // 256 % 100}.{number % 256}"
        self.gateway = f"{self.subnet}.1"
        self.switch = f"hf{self.id}-sw"
        self.prefix = ["ip", "netns", "exec", self.switch]

    def __enter__(self) -> "Network":
        self.workdir.mkdir(parents=True, exist_ok=True)
        _run(["ip", "netns", "add", self.switch])
        for cmd in (["link", "set", "lo", "up"], ["link", "add", "br0", "type", "bridge"],
                    ["addr", "add", f"{self.gateway}/24", "dev", "br0"], ["link", "set", "br0", "up"]):
            _run(["ip", "-n", self.switch, *cmd])
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=10)
        for container in self.containers:
            container.stop()
            subprocess.run(["ip", "netns", "del", container.netns], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", self.switch], check=False, capture_output=True)

    def boot(self, names: list[str], root: Path | None = None) -> list[Container]:
        """Start one container per name (addresses .11, .12, ... in the order booted), then wait for SSH."""
        root = root or rootfs()
        booted = []
        for name in names:
            container = self._start(name, root)
            self.containers.append(container)
            booted.append(container)
        for container in booted:
            seconds = container.wait_ssh()
            # sshd answers before the rest of the boot is done; tests want a settled system.
            container.ssh("systemctl is-system-running --wait >/dev/null 2>&1 || true", timeout=120)
            _log(f"{container.name} ({container.address}) reachable after {seconds:.1f} s")
        return booted

    def _start(self, name: str, root: Path) -> Container:
        index = len(self.containers) + 11
        netns = f"hf{self.id}-{index}"
        address = f"{self.subnet}.{index}"
        directory = self.workdir / name
        for sub in ("upper", "work", "merged"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        container = Container(name=name, address=address, netns=netns, network=self, directory=directory)
        _run(["mount", "-t", "overlay", "overlay", "-o",
              f"lowerdir={root},upperdir={directory / 'upper'},workdir={directory / 'work'}",
              str(directory / "merged")])
        container.mounted = True
        merged = directory / "merged"
        (merged / "etc/hostname").write_text(name + "\n")
        (merged / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {name}\n")
        _run(["ip", "netns", "add", netns])
        peer = f"v{self.id}x{index}"[:15]
        _run(["ip", "link", "add", peer, "netns", self.switch, "type", "veth", "peer", "name", "eth0",
              "netns", netns])
        _run(["ip", "-n", self.switch, "link", "set", peer, "master", "br0", "up"])
        for cmd in (["link", "set", "lo", "up"], ["addr", "add", f"{address}/24", "dev", "eth0"],
                    ["link", "set", "eth0", "up"]):
            _run(["ip", "-n", netns, *cmd])
        env = {**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
        cgroup = container.cgroup = _own_cgroup(netns)
        with open(container.log, "w") as log:
            container.process = subprocess.Popen(
                ["systemd-nspawn", "--quiet", "--boot", "--register=no", "--keep-unit", "--console=pipe",
                 "--capability=CAP_NET_ADMIN,CAP_NET_RAW",  # its own namespace: nftables, ping
                 f"--directory={merged}", f"--machine={netns}", f"--hostname={name}",
                 f"--network-namespace-path=/run/netns/{netns}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                preexec_fn=(lambda: _join_cgroup(cgroup)) if cgroup else None,
            )
        return container

    def run(self, cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
        """A controller-side command inside the test network's namespace."""
        return subprocess.run(self.prefix + cmd, **kwargs)

    def popen(self, cmd: list[str], **kwargs) -> subprocess.Popen:
        """A controller-side process inside the namespace (stopped when the network closes)."""
        process = subprocess.Popen(self.prefix + cmd, **kwargs)
        self.processes.append(process)
        return process

    def write_inventory(self, path: Path, host_data: dict[str, dict] | None = None,
                        group_data: dict | None = None, hosts: list[Container] | None = None) -> Path:
        """The JSON description ``inventories/vm.py`` reads (the same format as the VM tier's)."""
        host_data = host_data or {}
        entries = []
        for container in hosts or self.containers:
            name, data = container.inventory_entry()
            data.update(host_data.get(name, {}))
            entries.append([name, data])
        path.write_text(json.dumps({"hosts": entries, "group_data": group_data or {}}, indent=2))
        return path

    def run_pyinfra(self, description: Path, deploy: str, *args: str, **kwargs) -> PyinfraRun:
        return run_pyinfra(description, deploy, *args, prefix=tuple(self.prefix), **kwargs)


def available() -> str | None:
    """Why this machine cannot run the tier (None: it can)."""
    if os.geteuid() != 0:
        return "the nspawn tier needs root (network namespaces, overlay mounts)"
    for tool in ("systemd-nspawn", "mmdebstrap", "ip", "ssh"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (apt install systemd-container mmdebstrap iproute2 openssh-client)"
    return None
