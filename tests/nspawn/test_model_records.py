"""
Cheap no-ops for a model given by path (issue 21), on a real host: a 2 GiB sparse GGUF named by ``halo_model`` with
its ``halo_model_sha256`` is read in full once; the run keeps halofleet's verified record of it, and the next run
reads none of it. The bytes are counted, not timed: every sha256sum on the host runs under a wrapper that logs the
bytes it read (``rchar`` of /proc/<pid>/io, which includes the reaped child's). That a changed stat voids the
record is shown by the unit test of the record lookup, on a real file.
"""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest

from halofleet.testing.tinymodel import write_tiny_llama

from .conftest import TIER_DATA

pytestmark = pytest.mark.nspawn

SIZE = 2 << 30
LOG = "/run/sha256sum-rchar.log"
WRAPPER = f"""#!/bin/bash
/usr/bin/sha256sum.real "$@"
rc=$?
sed -n 's/^rchar: //p' /proc/$$/io >> {LOG}
exit $rc
"""


def bytes_hashed(box) -> int:
    """Bytes read by every sha256sum run on the host since the last call (the log is emptied)."""
    out = box.ssh(f"cat {LOG} 2>/dev/null; : > {LOG}").stdout.split()
    return sum(int(value) for value in out)


def test_a_verified_path_model_is_not_read_again(network, tmp_path):
    (srv1,) = network.boot(["srv1"])
    srv1.ssh("mv /usr/bin/sha256sum /usr/bin/sha256sum.real && "
             f"cat > /usr/bin/sha256sum <<'EOF'\n{WRAPPER}EOF\nchmod 0755 /usr/bin/sha256sum")
    # The tiny model with a sparse tail: 2 GiB that llama-server still loads as the tiny model.
    tiny = write_tiny_llama(tmp_path / "tiny.gguf")
    model = srv1.directory / "merged" / "srv" / "models" / "big.gguf"
    model.parent.mkdir(parents=True)
    shutil.copyfile(tiny, model)
    os.truncate(model, SIZE)
    digest = hashlib.sha256()
    with open(model, "rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    data = {"srv1": {**TIER_DATA, "halo_model": "/srv/models/big.gguf", "halo_model_sha256": digest.hexdigest(),
                     "halo_ctx": 512, "halo_api_key": "records-test-key-01"}}
    description = network.write_inventory(tmp_path / "hosts.json", host_data=data)

    first = network.run_pyinfra(description, "deploys/full.py")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Verified record of /srv/models/big.gguf" in first.changed_names
    read_first = bytes_hashed(srv1)
    assert read_first >= SIZE, read_first  # the control: the wrapper does see a full read

    second = network.run_pyinfra(description, "deploys/full.py")
    assert second.returncode == 0 and second.changed_ops == [], (second.changed_ops, second.stderr[-3000:])
    read_second = bytes_hashed(srv1)
    assert read_second < 16 << 20, read_second  # config files and path names only, no model byte
    print(f"sha256sum read {read_first:,} bytes in the first run, {read_second:,} in the no-op run")


def test_a_download_larger_than_the_free_space_is_refused_before_it_starts(network, tmp_path):
    """The model directory on a 256 KiB tmpfs, a ~0.5 MB model from the (mirrored) Hub, whose size the plan knows:
    the run refuses the download with the reason before fetching a byte (the mirror's log), nothing partial left."""
    import sys
    from pathlib import Path

    from .test_models import TOKEN, downloads, make_mirror

    made = make_mirror(tmp_path / "mirror")
    log = tmp_path / "mirror.log"
    network.popen([sys.executable, "-m", "halofleet.testing.hubmirror", str(tmp_path / "mirror"), network.gateway,
                   "8002", str(log), TOKEN], cwd=Path(__file__).resolve().parents[2])
    (srv,) = network.boot(["srv"])
    srv.ssh("mkdir -p /var/lib/halofleet/models && mount -t tmpfs -o size=256k tmpfs /var/lib/halofleet/models")
    base = f"http://{network.gateway}:8002"
    data = {**TIER_DATA, "halo_models": [{"name": "beta", "hf": "acme/tiny", "include": "*.gguf", "ctx": 512}],
            "halo_hf_endpoint": base, "halo_hf_token": TOKEN, "halo_api_key": "space-test-key-0123"}
    run = network.run_pyinfra(network.write_inventory(tmp_path / "hosts.json", host_data={"srv": data}),
                              "deploys/full.py")
    assert run.returncode != 0
    size = made["beta"].stat().st_size
    assert f"halofleet: not enough disk space for beta.gguf: {size} bytes still to fetch" in run.stderr, \
        run.stderr[-3000:]
    assert downloads(log) == []  # not one byte of the model was requested
    assert srv.ssh("find /var/lib/halofleet/models -type f").stdout == ""  # no partial file either
    assert "curl exit" not in run.stderr
