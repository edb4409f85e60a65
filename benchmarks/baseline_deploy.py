"""
The baseline for benchmarks/provision.py: the same end state as halofleet's stages on a serving host (GRUB drop-in,
modprobe file, runtime packages, service user and groups, serving packages, env file, serve.conf, unit, model,
running and enabled service), written with stock pyinfra operations only, so halofleet's figures are read against
pyinfra itself doing the same job on the same VMs in the same run.

Every file's bytes, mode and owner, the package lists and the user's ids come from a JSON spec that provision.py
reads off a halofleet-deployed host (``HALOFLEET_BASELINE_SPEC``): the baseline puts byte-identical files, and the
benchmark checks that by diffing a baseline-only VM against a halofleet one.
"""

import base64
import json
import os
from io import BytesIO
from pathlib import Path

from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util import any_changed

SPEC = json.loads(Path(os.environ["HALOFLEET_BASELINE_SPEC"]).read_text())
USER = SPEC["user"]

# Initramfs rebuilt only when a configured module is inside it, as halofleet does (the VMs have none).
INITRAMFS = ("k=$(uname -r); if lsinitramfs /boot/initrd.img-$k 2>/dev/null | grep -qE '/(ttm|amdttm|amdgpu)\\.ko'; "
             "then update-initramfs -u -k $k; fi")


def put(name: str, role: str):
    item = SPEC["files"][role]
    return files.put(name=name, src=BytesIO(base64.b64decode(item["content"])), dest=item["path"],
                     user=item["user"], group=item["group"], mode=item["mode"])


modprobe = put("modprobe options", "modprobe")
server.shell(name="Rebuild initramfs if it holds the modules", commands=[INITRAMFS], _if=modprobe.did_change)
grub = put("GRUB drop-in", "grub")
server.shell(name="update-grub", commands=["update-grub"], _if=grub.did_change)
server.reboot(name="Reboot into the new cmdline", reboot_timeout=900, _if=grub.did_change)

apt.packages(name="Runtime packages", packages=SPEC["runtime_packages"], no_recommends=True)
for group, gid in SPEC["groups"].items():
    server.group(name=f"Group {group}", group=group, gid=gid, system=True)
server.user(name="Service user", user=USER["name"], uid=USER["uid"], group=USER["group"], groups=USER["groups"],
            system=True, home=USER["home"], create_home=True, shell=USER["shell"])

apt.packages(name="Serving packages", packages=SPEC["serving_packages"], no_recommends=True)
model_dir = SPEC["model_dir"]
files.directory(name="Model directory", path=model_dir["path"], user=model_dir["user"], group=model_dir["group"],
                mode=model_dir["mode"])
model = put("Model file", "model")
env = put("Engine environment", "env")
put("serve.conf", "conf")
unit = put("Unit file", "unit")
# Reload only when the unit changed: a no-op run must not do forced work (daemon_reload=True always runs).
systemd.daemon_reload(name="daemon-reload", _if=unit.did_change)
systemd.service(name="Restart on change", service=SPEC["service"], restarted=True,
                _if=any_changed(model, env, unit))
systemd.service(name="Service running and enabled", service=SPEC["service"], running=True, enabled=True)
put("Model stamp", "stamp")
