"""
The ``halofleet`` command as a new user meets it: every command block of README.md that needs no VM, run in an
empty directory, and the error paths, each ending in a result or one line with a meaningful exit code.

Commands that contact the example hosts run in a network namespace of their own with only loopback (the names
cannot resolve, no packet leaves the machine): they must say the hosts are unreachable and exit 1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from halofleet import __version__
from halofleet.testing import prereqs

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# README lines that need what this test cannot give: a VM, the whole suite, or installing halofleet itself (the
# wheel test in tests/vm/test_fleet.py installs it in a venv and with --user, outside the checkout).
NEEDS_MORE = ("bash .ci/setup", ".venv/bin/python -m pytest", "python3 -m venv", "pipx ", "uv tool ", "pip install")
EXAMPLE_HOSTS = ("mysite/inventory.py", "inventories/halo.py")


def readme_commands() -> list[str]:
    """Every command of every ``sh`` block of README.md, then of docs/*.md, in order."""
    text = "\n".join(path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            command = line.split("  #", 1)[0].strip()
            if command and not command.startswith(NEEDS_MORE):
                commands.append(command)
    return commands


def isolated_network() -> list[str]:
    """A private network namespace with only loopback up (root, as CI runs), else the plain command."""
    if os.geteuid() == 0 and shutil.which("unshare") and shutil.which("ip"):
        return ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
    return []


def run(command: str | list[str], cwd: Path, env: dict | None = None, isolate: bool = True
        ) -> subprocess.CompletedProcess:
    args = command.split() if isinstance(command, str) else command
    if args[0] in ("halofleet", "pyinfra"):
        args = [str(BIN / args[0])] + args[1:]
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **(env or {})}
    env.pop("HALO_API_KEY", None)
    return subprocess.run((isolated_network() if isolate else []) + args, cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=120)


def test_readme_has_the_commands_this_test_runs():
    commands = readme_commands()
    assert any(c.startswith("halofleet init") for c in commands)
    assert any(c.startswith("halofleet plan --ram-gib 128 --reserve-gib 8") for c in commands)
    assert any(c.startswith("pyinfra -y") for c in commands)
    assert len(commands) >= 10


def test_every_readme_command_block_runs_as_documented(tmp_path):
    # In an empty directory outside the checkout, in README order: `halofleet init mysite` comes first.
    (tmp_path / "inventories").symlink_to(ROOT / "inventories")
    (tmp_path / "deploys").symlink_to(ROOT / "deploys")
    ran = []
    for command in readme_commands():
        proc = run(command, tmp_path)
        output = proc.stdout + proc.stderr
        assert "Traceback" not in output, f"{command}:\n{output}"
        if any(inventory in command for inventory in EXAMPLE_HOSTS):
            assert proc.returncode == 1, f"{command}: exit {proc.returncode}\n{output}"
            assert "example.lan" in output, f"{command}: no word of the unreachable hosts\n{output}"
        else:
            assert proc.returncode == 0, f"{command}: exit {proc.returncode}\n{output}"
        ran.append(command)
    print(f"README commands run: {len(ran)}")
    assert (tmp_path / "mysite" / "group_data" / "llama.py").is_file()


def test_plan_prints_the_memory_math_and_json(tmp_path):
    proc = run("halofleet plan --ram-gib 128 --reserve-gib 8", tmp_path)
    assert proc.returncode == 0
    # 120 GiB of GTT: 120 x 262144 pages, 120 x 1024 MiB (DOMAIN.md "Memory limits").
    assert "amd_iommu=off ttm.pages_limit=31457280 amdgpu.gttsize=122880" in proc.stdout
    assert "options ttm pages_limit=31457280" in proc.stdout
    proc = run("halofleet plan --ram-gib 64 --reserve-gib 5 --iommu pt --json", tmp_path)
    plan = json.loads(proc.stdout)
    assert plan["gtt_gib"] == 59 and plan["kernel_params"] == ["iommu=pt", "ttm.pages_limit=15466496",
                                                               "amdgpu.gttsize=60416"]
    assert plan["serve"] is None


def test_plan_with_serving_shows_the_unit(tmp_path):
    proc = run(["halofleet", "plan", "--ram-gib", "128", "--serve", "llama-server", "--model", "/srv/m.gguf",
                "--data", "halo_ctx=4096", "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    serve = json.loads(proc.stdout)["serve"]
    assert serve["unit_path"] == "/etc/systemd/system/halo-serve.service"
    assert "--model /srv/m.gguf" in serve["unit"] and "-c 4096" in serve["unit"]
    proc = run("halofleet plan --ram-gib 128 --serve vllm --model Qwen/Qwen3-8B", tmp_path)
    assert proc.returncode == 0 and "halo-serve.container" in proc.stdout


@pytest.mark.parametrize("command, message", [
    ("halofleet plan --ram-gib 128 --serve llama-server", "halo_model=None is invalid: a model is needed"),
    ("halofleet plan --ram-gib 128 --data halo_iommu=on", "halo_iommu='on' is invalid"),
    ("halofleet plan --ram-gib 128 --data iommu=on", "--data 'iommu=on': give halo_KEY=VALUE"),
    ("halofleet plan --ram-gib 0", "Invalid value for '--ram-gib'"),
    ("halofleet verify missing.py", "no inventory file 'missing.py'"),
    ("halofleet verify missing.py --json", "no inventory file 'missing.py'"),
    ("halofleet diff missing.py", "no inventory file 'missing.py'"),
    ("halofleet report missing.py", "no inventory file 'missing.py'"),
    ("halofleet bench missing.py", "no inventory file 'missing.py'"),
    ("halofleet verify no-such-host.invalid", "no hosts in inventory 'no-such-host.invalid'"),
    ("halofleet bench no-such-host.invalid", "no hosts in inventory 'no-such-host.invalid'"),
    ("halofleet report inventory.py --html /nonexistent/x.html", "cannot write '/nonexistent/x.html'"),
    ("halofleet diff inventory.py --out /nonexistent/x.md", "cannot write '/nonexistent/x.md'"),
    ("halofleet diff inventory.py --deploy nothing.here", "no deploy 'nothing.here'"),
    ("halofleet diff inventory.py --deploy missing.py", "no deploy file 'missing.py'"),
    ("halofleet verify broken.py", "inventory 'broken.py' failed to load: ZeroDivisionError"),
    ("halofleet verify", "Missing argument 'INVENTORY'"),
    ("halofleet frobnicate", "No such command 'frobnicate'"),
])
def test_bad_usage_is_one_line_and_exit_2(tmp_path, command, message):
    (tmp_path / "inventory.py").write_text('hosts = ["@local"]\n')
    (tmp_path / "broken.py").write_text("hosts = [1 / 0]\n")
    proc = run(command, tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stdout + proc.stderr


def test_init_writes_a_site_and_never_overwrites(tmp_path):
    assert run("halofleet init site", tmp_path).returncode == 0
    (tmp_path / "site" / "inventory.py").write_text("# mine\n")
    (tmp_path / "site" / "deploy.py").unlink()
    proc = run("halofleet init site", tmp_path)
    assert proc.returncode == 2 and "would overwrite" in proc.stderr and "inventory.py" in proc.stderr
    assert (tmp_path / "site" / "inventory.py").read_text() == "# mine\n"  # untouched
    assert not (tmp_path / "site" / "deploy.py").exists()  # nothing written at all
    site = run("halofleet init other", tmp_path)
    assert "from halofleet.stages import full" in (tmp_path / "other" / "deploy.py").read_text()
    assert site.stdout.count("wrote ") == 6


def test_version_and_python_dash_m(tmp_path):
    assert run("halofleet --version", tmp_path).stdout.strip() == f"halofleet, version {__version__}"
    proc = run([sys.executable, "-m", "halofleet", "--version"], tmp_path)
    assert proc.returncode == 0 and __version__ in proc.stdout
    assert run("halofleet pyinfra --version", tmp_path).stdout.startswith("pyinfra: v3.")


def test_options_json_is_the_contract(tmp_path):
    options = json.loads(run("halofleet options --json", tmp_path).stdout)
    by_key = {option["key"]: option for option in options}
    assert by_key["halo_port"]["minimum"] == 1024 and by_key["halo_port"]["maximum"] == 65535
    assert by_key["halo_iommu"]["choices"] == ["off", "pt"]


def test_demo_names_what_is_missing_and_writes_nothing(tmp_path):
    cache = tmp_path / "cache"
    proc = run([sys.executable, "-m", "halofleet", "demo"], tmp_path,
               env={"PATH": str(tmp_path / "empty-bin"), "HALOFLEET_VM_CACHE": str(cache)}, isolate=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "qemu-system-x86_64" in line and "mmdebstrap" in line and "ssh-keygen" in line
    assert "apt-get install -y" in line and "qemu-system-x86" in line and "openssh-client" in line
    assert not cache.exists()


@pytest.mark.parametrize("distro_id, like, family", [
    ("debian", "", "debian"), ("ubuntu", "debian", "debian"), ("linuxmint", "ubuntu debian", "debian"),
    ("fedora", "", "fedora"), ("rocky", "rhel centos fedora", "fedora"), ("arch", "", "arch"),
    ("gentoo", "", "debian"),
])
def test_prerequisite_hints_follow_the_distribution(distro_id, like, family):
    assert prereqs.family(distro_id, like) == family


def test_install_hint_names_each_package_once():
    assert prereqs.install_hint(["qemu-system-x86_64", "qemu-img"], "debian") == \
        "apt-get install -y qemu-system-x86 qemu-utils"
    assert prereqs.install_hint(["ssh-keygen"], "fedora") == "dnf install -y openssh"
