"""
Serving on real forky VMs.

srv1: llama-server from forky's llama.cpp-tools (CPU backend) as halo-serve.service, serving a tiny GGUF the test
generates and pushes, behind an API key: a real completion, the service user and groups, only loopback, a reboot
and it is back, a second run changes nothing, a flag change restarts it, stopping leaves no engine, a corrupt
model is a clear error and no crash loop.

srv2: the Quadlet flavours (llama.cpp toolbox, then vLLM) with a small image the test builds inside the VM
(`podman import`, no registry): the generated service starts the container as the service user with the GPU
groups, the devices and the vLLM settings applied.

srv3: a host that is only prepared, in one fleet run with srv1 serving and srv2 pinning ROCm; then a fake gfx1151
GPU (overlayfs on /sys/class, a tmpfs debugfs) for the checks that need one: CWSR for every ROCm engine, the distro
HIP backend, the BIOS carve-out, a denied MES firmware.

The tests share the booted VMs and run in file order.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from halofleet.testing import fakesysfs, servecases
from halofleet.testing import vm as vm_mod
from halofleet.testing.tinymodel import write_tiny_llama

from .conftest import REPO_IN_VM, ROOT, WHOLE_TIER_ONLY, rocm_group_data, run_pyinfra

pytestmark = [pytest.mark.vm, WHOLE_TIER_ONLY]

API_KEY = "sk-halofleet-vm-test-4f1c9a77e2"
TEST_IMAGE = "localhost/halo-test-engine:1"
COMMON = {"halo_reboot": "never", "halo_ctx": 512, "halo_start_timeout": 300}
STAND_IN = {"halo_restart_check": "health"}  # the stand-in image answers /health, not completions

# A stand-in engine for the container flavours: says who it runs as and what it may open, then answers
# /health and /v1/models like the real servers (busybox httpd). Installed as both llama-server and vllm. It cannot
# complete, so the hosts that run it restart with `halo_restart_check: health` (STAND_IN).
FAKE_ENGINE = r"""#!/bin/sh
echo "fake-engine argv: $0 $*"
echo "fake-engine env: LLAMA_ARG_LOAD_MODE=$LLAMA_ARG_LOAD_MODE PYTORCH_ROCM_ARCH=$PYTORCH_ROCM_ARCH"
host=127.0.0.1; port=8080
while [ $# -gt 0 ]; do case "$1" in --host) host=$2; shift;; --port) port=$2; shift;; esac; shift; done
echo "fake-engine id: $(id)"
if [ -e /dev/kfd ]; then
  if echo x > /dev/kfd; then echo "fake-engine kfd: writable"; else echo "fake-engine kfd: denied"; fi
fi
mkdir -p /tmp/www/v1
echo '{"status":"ok"}' > /tmp/www/health
echo '{"object":"list","data":[{"id":"fake"}]}' > /tmp/www/v1/models
exec httpd -f -p "$host:$port" -h /tmp/www
"""

BUILD_TEST_IMAGE = f"""set -e
rm -rf /root/img && mkdir -p /root/img/bin /root/img/usr/bin /root/img/tmp /root/img/dev /root/img/proc
chmod 1777 /root/img/tmp
cp "$(command -v busybox)" /root/img/bin/busybox
for applet in sh id echo mkdir cat ls httpd sleep; do ln -sf busybox /root/img/bin/$applet; done
cat > /root/img/usr/bin/llama-server <<'ENGINE'
{FAKE_ENGINE}ENGINE
chmod 755 /root/img/usr/bin/llama-server && cp /root/img/usr/bin/llama-server /root/img/usr/bin/vllm
tar -C /root/img -c . | podman import --change 'ENV PATH=/usr/bin:/bin' - {TEST_IMAGE} >/dev/null
"""
# A GPU node stand-in: the null device under /dev/kfd, owned by render like the real one.
FAKE_KFD = "[ -e /dev/kfd ] || mknod -m 0660 /dev/kfd c 1 3; chgrp render /dev/kfd"


class Servers:
    def __init__(self, vms, workdir, model):
        self.vms = {vm.name: vm for vm in vms}
        self.workdir = workdir
        self.model = model

    def description(self, name: str, **data) -> object:
        return vm_mod.write_inventory([self.vms[name]], self.workdir / f"{name}.json", {name: {**COMMON, **data}})

    def fleet(self, path_name: str, **host_data: dict) -> object:
        """Several of the VMs in one inventory, each with its own data."""
        return vm_mod.write_inventory([self.vms[name] for name in host_data], self.workdir / f"{path_name}.json",
                                      {name: {**COMMON, **data} for name, data in host_data.items()})

    def sh(self, name: str, command: str, check: bool = True) -> str:
        return self.vms[name].ssh(command, check=check).stdout.strip()

    def host(self, name: str) -> servecases.ServeHost:
        """One VM as halofleet/testing/servecases.py's scenarios drive it."""
        def deploy(host_data: dict, deploy_file: str, review: bool = False):
            return run_pyinfra(self.fleet(f"{name}-case", **host_data), deploy_file, review=review)

        return servecases.ServeHost(
            name=name, sh=lambda command, check=True: self.sh(name, command, check=check), deploy=deploy,
            diff=lambda host_data, out: halofleet_diff(self.fleet(f"{name}-review", **host_data), out),
            manages_boot=True)

    def srv1_data(self, **extra):
        return {"halo_llama_backend": "cpu", "halo_model": str(self.model), "halo_model_push": True,
                "halo_api_key": API_KEY, **extra}


@pytest.fixture(scope="module")
def servers(serving_image, vm_workdir, tmp_path_factory):
    model = write_tiny_llama(tmp_path_factory.mktemp("model") / "tiny-llama.gguf")
    vms = vm_mod.boot_vms(["srv1", "srv2", "srv3"], serving_image, vm_workdir)
    try:
        yield Servers(vms, vm_workdir, model)
    finally:
        for machine in vms:
            machine.stop()


def verify(description) -> tuple[int, list[dict]]:
    proc = subprocess.run([sys.executable, "-m", "halofleet.cli", "verify", "inventories/vm.py", "--json"],
                          cwd=ROOT, env={**os.environ, "HALOFLEET_VM_INVENTORY": str(description)},
                          capture_output=True, text=True, timeout=600)
    return proc.returncode, json.loads(proc.stdout)


def engine_pid(servers, name: str, binary: str) -> str:
    return servers.sh(name, f"pgrep -x {binary} | head -n 1")


def halofleet_diff(description, out) -> str:
    proc = subprocess.run([sys.executable, "-m", "halofleet.cli", "diff", "inventories/vm.py", "--out", str(out)],
                          cwd=ROOT, env={**os.environ, "HALOFLEET_VM_INVENTORY": str(description)},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out.read_text()


def test_review_of_a_fresh_host_shows_every_change_and_no_secret(servers, tmp_path):
    servecases.review_of_a_fresh_host(servers.host("srv1"), servers.srv1_data(), tmp_path / "review.md")


def test_llama_server_from_distro_serves_a_real_completion(servers):
    description = servers.description("srv1", **servers.srv1_data())
    run = run_pyinfra(description, "deploys/full.py")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "llama-server serving on http://127.0.0.1:8080" in run.changed_names

    # The key: only in the 0600 root-owned environment file, never in pyinfra's output.
    assert servers.sh("srv1", "stat -c '%U %a' /etc/halofleet/serve.env") == "root 600"
    assert servers.sh("srv1", "cat /etc/halofleet/serve.env").endswith(f"LLAMA_API_KEY={API_KEY}")
    assert API_KEY not in run.stderr and API_KEY not in json.dumps(run.result)
    assert API_KEY not in servers.sh("srv1", "cat /etc/systemd/system/halo-serve.service /etc/halofleet/serve.conf")

    # Run as the service user, with video and render, not root; listening on loopback only.
    pid = engine_pid(servers, "srv1", "llama-server")
    assert servers.sh("srv1", f"ps -o user= -p {pid}") == "halo"
    groups = set(servers.sh("srv1", f"awk '/^Groups:/ {{$1=\"\"; print}}' /proc/{pid}/status").split())
    gpu_gids = set(servers.sh("srv1", "getent group video render | cut -d: -f3").split())
    assert gpu_gids <= groups
    assert servers.sh("srv1", "awk '$4 == \"0A\" && $2 ~ /:1F90$/ {print $2}' /proc/net/tcp") == "0100007F:1F90"
    # The model was pushed, owned by the service user; the unit holds the tuned flags.
    assert servers.sh("srv1", "stat -c '%U %a' /var/lib/halofleet/models/tiny-llama.gguf") == "halo 640"
    unit = servers.sh("srv1", "systemctl cat halo-serve.service")
    for expected in ("-ngl 999", "-fa on", "-c 512", "LimitMEMLOCK=infinity", "MemorySwapMax=0", "MemoryMax=11G",
                     "LLAMA_ARG_LOAD_MODE=none"):
        assert expected in unit

    # A request without the key is refused; with it, a real completion returns tokens.
    assert servers.sh("srv1", "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/v1/models") == "401"
    code, rows = verify(description)
    row = rows[0]
    assert row["serving"].startswith("llama-server active, /health 200"), row
    assert re.match(r"2 tokens in \d+\.\d\d s", row["completion"]), row
    assert row["status"] == "not converged" and row["reboot pending"] == "yes"  # halo_reboot: never
    assert code == 1


def test_service_is_back_after_a_reboot_and_the_host_is_converged(servers):
    servers.vms["srv1"].reboot()
    description = servers.description("srv1", **servers.srv1_data())
    code, rows = verify(description)
    assert rows[0]["status"] == "ok", rows
    assert rows[0]["completion"].startswith("2 tokens")
    assert code == 0


def test_second_run_changes_nothing(servers, tmp_path):
    description = servers.description("srv1", **servers.srv1_data())
    run = run_pyinfra(description, "deploys/full.py")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.changed_ops == []
    assert "## srv1: no changes (converged)" in halofleet_diff(description, tmp_path / "review.md")


def test_bench_runs_llama_bench_and_reports_it_against_the_roofline(servers):
    description = servers.description("srv1", **servers.srv1_data(halo_bench_repetitions=1))
    proc = subprocess.run([sys.executable, "-m", "halofleet.cli", "bench", "inventories/vm.py"], cwd=ROOT,
                          env={**os.environ, "HALOFLEET_VM_INVENTORY": str(description)}, capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [text for text in proc.stdout.splitlines() if text.startswith("srv1")][-1]
    assert re.search(r"pp512 \d+\.\d t/s, tg128 \d+\.\d t/s, tg \d+% of 256 GB/s roofline \(\d+% of 215\)", line), line
    stored = json.loads(servers.sh("srv1", "cat /var/lib/halofleet/bench.json"))
    assert stored["model_file_bytes"] == servers.model.stat().st_size
    # read from the model's header on the VM: 488704 tensor bytes less the 79872-byte embedding table, plus one row
    assert stored["bytes_per_token"] == 409_088 and "experts" not in stored
    assert {(r["n_prompt"], r["n_gen"]) for r in stored["llama_bench"]} == {(512, 0), (0, 128)}
    # the engine was stopped for the run and is serving again
    assert servers.sh("srv1", "systemctl is-active halo-serve.service") == "active"
    code, rows = verify(description)
    assert rows[0]["bench"] == line.split(None, 1)[1].strip() and code == 0


def test_changed_flag_restarts_the_engine(servers):
    before = engine_pid(servers, "srv1", "llama-server")
    run = run_pyinfra(servers.description("srv1", **servers.srv1_data(halo_llama_parallel=2)), "deploys/full.py")
    assert run.returncode == 0, run.stderr[-3000:]
    assert set(run.changed_names) == {"llama-server unit (distro)", "llama-server serving on http://127.0.0.1:8080"}
    after = engine_pid(servers, "srv1", "llama-server")
    assert after and after != before
    assert "-np 2" in servers.sh("srv1", f"tr '\\0' ' ' < /proc/{after}/cmdline")


def test_stopping_leaves_no_engine_behind(servers):
    servecases.stopping_leaves_no_engine_behind(servers.host("srv1"), servers.srv1_data(halo_llama_parallel=2))


def test_corrupt_model_is_a_clear_error_not_a_crash_loop(servers, tmp_path):
    servecases.corrupt_model_fails_without_a_crash_loop(servers.host("srv1"), servers.srv1_data(), servers.model,
                                                        tmp_path)


def test_toolbox_quadlet_runs_the_container_as_the_service_user_with_gpu_access(servers):
    servers.sh("srv2", BUILD_TEST_IMAGE)
    servers.sh("srv2", FAKE_KFD)
    data = {**STAND_IN, "halo_llama_source": "toolbox", "halo_llama_backend": "hip", "halo_image": TEST_IMAGE,
            "halo_model": "/srv/models/tiny.gguf", "halo_devices_optional": True}
    servers.sh("srv2", "mkdir -p /srv/models && printf 'GGUF-test' > /srv/models/tiny.gguf")
    run = run_pyinfra(servers.description("srv2", **data), "deploys/full.py")
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"Image {TEST_IMAGE}" not in run.changed_names  # in podman's storage already: no pull

    quadlet = servers.sh("srv2", "cat /etc/containers/systemd/halo-serve.container")
    assert "AddDevice=-/dev/kfd" in quadlet and "SeccompProfile=unconfined" in quadlet
    assert servers.sh("srv2", "systemctl is-active halo-serve.service") == "active"
    assert servers.sh("srv2", "podman ps --format '{{.Names}} {{.Image}}'") == f"halo-serve {TEST_IMAGE}"
    log = servers.sh("srv2", "journalctl -u halo-serve.service -o cat | grep fake-engine")
    uid, gid = servers.sh("srv2", "id -u halo"), servers.sh("srv2", "id -g halo")
    video, render = servers.sh("srv2", "getent group video render | cut -d: -f3").split()
    ids = re.search(r"fake-engine id: (.*)", log).group(1)
    assert ids.startswith(f"uid={uid} gid={gid}") and video in ids and render in ids
    assert "fake-engine kfd: writable" in log  # /dev/kfd is passed in and the render group opens it
    assert "--model /models/tiny.gguf" in log and "-ngl 999" in log and "LLAMA_ARG_LOAD_MODE=none" in log
    assert servers.sh("srv2", "curl -s http://127.0.0.1:8080/health") == '{"status":"ok"}'

    second = run_pyinfra(servers.description("srv2", **data), "deploys/full.py")
    assert second.returncode == 0 and second.changed_ops == []


def test_vllm_quadlet_with_its_environment_and_ipc(servers):
    data = {**STAND_IN, "halo_serve": "vllm", "halo_image": TEST_IMAGE, "halo_model": "org/tiny-model",
            "halo_devices_optional": True, "halo_vllm_gpu_memory_utilization": 0.85}
    run = run_pyinfra(servers.description("srv2", **data), "deploys/full.py")
    assert run.returncode == 0, run.stderr[-3000:]
    log = servers.sh("srv2", "journalctl -u halo-serve.service -o cat | grep 'fake-engine' | tail -n 4")
    assert "vllm serve org/tiny-model --host 127.0.0.1 --port 8080" in log
    assert "--gpu-memory-utilization 0.85 --max-model-len 512" in log
    assert "PYTORCH_ROCM_ARCH=gfx1151" in log
    pid = servers.sh("srv2", "pgrep -x httpd | head -n 1")
    # --ipc=host: the engine shares the host's IPC namespace.
    assert servers.sh("srv2", f"readlink /proc/{pid}/ns/ipc") == servers.sh("srv2", "readlink /proc/1/ns/ipc")
    assert servers.sh("srv2", "stat -c '%U' /var/lib/halofleet/cache") == "halo"

    # The stand-in answers /health and /v1/models but cannot complete: verify says unhealthy, exit 1.
    code, rows = verify(servers.description("srv2", **data))
    assert code == 1
    assert rows[0]["serving"].startswith("vllm active, /health 200")
    assert rows[0]["completion"].startswith("failed") and rows[0]["status"] != "ok"


def test_image_that_cannot_be_pulled_is_a_clear_error_and_the_running_engine_stays(servers):
    data = {**STAND_IN, "halo_serve": "vllm", "halo_image": "localhost/halo-absent-engine:1",
            "halo_model": "org/tiny-model", "halo_devices_optional": True, "halo_vllm_gpu_memory_utilization": 0.85}
    before = servers.sh("srv2", "cat /etc/containers/systemd/halo-serve.container")
    run = run_pyinfra(servers.description("srv2", **data), "deploys/full.py")
    assert run.returncode != 0
    assert "halofleet: could not pull localhost/halo-absent-engine:1" in run.stderr
    assert servers.sh("srv2", "cat /etc/containers/systemd/halo-serve.container") == before
    assert servers.sh("srv2", "systemctl is-active halo-serve.service") == "active"


def test_fleet_whose_hosts_take_different_stages_deploys_in_one_run(servers, rocm_repo):
    """srv1 serves, srv2 pins ROCm (and serves nothing new), srv3 is only prepared: one run, one inventory."""
    servers.vms["srv2"].copy_dir(rocm_repo, REPO_IN_VM)
    description = servers.fleet("mixed", srv1=servers.srv1_data(), srv2=rocm_group_data("7.2.1"),
                                srv3={"halo_serve": "none"})
    run = run_pyinfra(description, "deploys/full.py")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.failed_hosts == []
    assert servers.sh("srv2", "dpkg-query -W -f='${Version}' rocm-core").startswith("7.2.1")
    prepared = "test -e /etc/default/grub.d/zz-halofleet.cfg && id -u halo >/dev/null && echo ok"
    assert servers.sh("srv3", prepared) == "ok"
    assert servers.sh("srv3", "ls /etc/systemd/system/halo-serve.service 2>&1 | grep -c 'No such'") == "1"
    assert servers.sh("srv1", "systemctl is-active halo-serve.service") == "active"
    again = run_pyinfra(description, "deploys/full.py")
    assert again.returncode == 0 and again.changed_ops == [], again.changed_ops


def test_hostile_model_file_name_is_refused_and_nothing_runs_anywhere(servers, tmp_path):
    servecases.hostile_model_name_refused(servers.host("srv1"), servers.srv1_data(), servers.model, tmp_path,
                                          servers.host("srv3"), {"halo_serve": "none"})


TOOLBOX_HIP = {**STAND_IN, "halo_llama_source": "toolbox", "halo_llama_backend": "hip", "halo_image": TEST_IMAGE,
               "halo_model": "/srv/models/tiny.gguf", "halo_devices_optional": True}


def fake_gpu(servers, **kwargs) -> None:
    servers.sh("srv3", fakesysfs.install_script(**kwargs))
    assert servers.sh("srv3", "cat /sys/class/kfd/kfd/topology/nodes/*/properties | grep -c 110501") == "1"


def dry_run(servers, **data):
    return run_pyinfra(servers.description("srv3", **data), "deploys/full.py", review=True)


def test_on_a_fake_gfx1151_every_rocm_engine_needs_cwsr_and_vulkan_does_not(servers):
    servers.sh("srv3", "mkdir -p /srv/models && printf 'GGUF-test' > /srv/models/tiny.gguf")
    try:
        fake_gpu(servers, cwsr=False)
        hip = dry_run(servers, **TOOLBOX_HIP)
        assert hip.returncode == 1
        assert "llama-server on HIP/ROCm (toolbox) needs a kernel exporting the CWSR properties" in hip.stderr
        vulkan = dry_run(servers, **{**TOOLBOX_HIP, "halo_llama_backend": "vulkan"})
        assert vulkan.returncode == 0, vulkan.stderr[-3000:]
        assert "[srv3] halofleet | serve | llama-server unit (toolbox)" in vulkan.stderr
        distro_hip = dry_run(servers, halo_llama_backend="hip", halo_model="/srv/models/tiny.gguf")
        assert distro_hip.returncode == 1 and "has no gfx1151 code objects" in distro_hip.stderr

        fake_gpu(servers, cwsr=True)
        accepted = dry_run(servers, **TOOLBOX_HIP)
        assert accepted.returncode == 0, accepted.stderr[-3000:]
        assert "CWSR kernel support: ok" in accepted.stderr
    finally:
        servers.sh("srv3", fakesysfs.REMOVE_SCRIPT)


def test_on_a_fake_gfx1151_a_large_carve_out_is_warned_and_a_denied_mes_firmware_refused(servers):
    vulkan = {**TOOLBOX_HIP, "halo_llama_backend": "vulkan"}
    try:
        fake_gpu(servers, cwsr=True, vram_bytes=8 * 2**30, mes_version=0x86)
        warned = dry_run(servers, **vulkan)
        assert warned.returncode == 0, warned.stderr[-3000:]
        assert f"{fakesysfs.CARD}: the BIOS carve-out (mem_info_vram_total) is 8 GiB" in warned.stderr
        assert "MES firmware version unknown" not in warned.stderr
        fake_gpu(servers, cwsr=True, mes_version=0x83)
        refused = dry_run(servers, **vulkan)
        assert refused.returncode == 1 and "MES firmware 0x83 is refused" in refused.stderr
    finally:
        servers.sh("srv3", fakesysfs.REMOVE_SCRIPT)
    assert servers.sh("srv3", "ls /sys/class/kfd 2>&1 | grep -c 'No such'") == "1"  # the VM's own sysfs again


def test_rollback_of_a_serving_host_removes_the_engine_and_keeps_the_key_private(servers):
    description = servers.description("srv1", **servers.srv1_data())
    run = run_pyinfra(description, "deploys/rollback.py")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Engine unit: /etc/systemd/system/halo-serve.service" in run.changed_names
    assert servers.sh("srv1", "systemctl is-active halo-serve.service", check=False) in ("inactive", "unknown")
    assert servers.sh("srv1", "pgrep -x llama-server", check=False) == ""
    assert servers.sh("srv1", "cat /proc/net/tcp /proc/net/tcp6 | awk '$4 == \"0A\"' | grep -ci ':1F90 '",
                      check=False) == "0"  # nothing listens on 8080 any more
    gone = ("/etc/systemd/system/halo-serve.service /etc/halofleet/serve.env /etc/halofleet/serve.conf "
            "/var/lib/halofleet/serve.stamp /etc/default/grub.d/zz-halofleet.cfg /etc/modprobe.d/zz-halofleet.conf")
    assert servers.sh("srv1", f"for f in {gone}; do [ -e $f ] && echo $f; done; true") == ""
    assert servers.sh("srv1", "id halo", check=False) == ""
    # The key file is kept as a generation of its backups (halofleet created it: no original to restore), still
    # readable by root only in a root-only directory, and the key is in no output.
    generations = "/var/backups/halofleet/generations"
    backup = servers.sh("srv1", f"ls -1 {generations}/etc__halofleet__serve.env.* | tail -n 1")
    assert backup.startswith(f"{generations}/etc__halofleet__serve.env."), backup
    assert servers.sh("srv1", f"stat -c '%U %a' {backup}") == "root 600"
    assert servers.sh("srv1", f"stat -c '%U %a' {generations}") == "root 700"
    assert API_KEY not in run.stderr + json.dumps(run.result)
    # halo_reboot is never here: the user's own cmdline comes back with the next reboot.
    servers.vms["srv1"].reboot()
    live = servers.sh("srv1", "cat /proc/cmdline")
    assert "amdgpu.gttsize" not in live and "ttm.pages_limit" not in live
    again = run_pyinfra(description, "deploys/rollback.py")
    assert again.returncode == 0 and again.changed_ops == [], again.changed_ops
