"""
Control-machine paths anchored at the inventory's directory (halofleet.contract.localfiles.anchor_local_paths),
unit by unit: until now only the CLI tests in a subprocess reached it, which mutmut's copy never runs.
"""

from __future__ import annotations

import pytest

from halofleet.contract import localfiles
from halofleet.contract.localfiles import anchor_local_paths

BASE = "/srv/site"


@pytest.mark.parametrize(("value", "expected"), [
    ("cert.pem", "/srv/site/cert.pem"),
    ("tls/../tls/cert.pem", "/srv/site/tls/cert.pem"),  # normalised
    ("../certs/x.pem", "/srv/certs/x.pem"),
    ("/etc/ssl/x.pem", "/etc/ssl/x.pem"),  # absolute: as is
    ("~/x.pem", "~/x.pem"),  # the user's home: expanded where it is read, not here
    ("", ""),
    ("a\0b", "a\0b"),  # refused by validation, not turned into another path here
    (None, None),
    (42, 42),
])
def test_the_certificate_is_anchored_at_the_inventory(value, expected):
    data = {"halo_gateway_tls_cert": value, "other": "cert.pem"}
    result = anchor_local_paths(data, BASE)
    assert result == {"halo_gateway_tls_cert": expected, "other": "cert.pem"}
    assert data["halo_gateway_tls_cert"] == value  # the caller's data is not changed


@pytest.mark.parametrize("base", [None, ""])
def test_without_a_base_the_data_is_returned_as_it_is(base):
    data = {"halo_gateway_tls_cert": "cert.pem", "halo_model": "m.gguf", "halo_model_push": True}
    assert anchor_local_paths(data, base) is data


@pytest.mark.parametrize(("push", "anchored"), [
    (True, True), ("true", True), ("TRUE", True), ("yes", True), ("on", True), ("1", True),
    (False, False), ("false", False), ("no", False), ("", False), (None, False), (1, False), ("maybe", False),
])
def test_a_model_path_is_anchored_only_when_it_is_pushed(push, anchored):
    data = {"halo_model": "models/m.gguf", "halo_model_push": push}
    result = anchor_local_paths(data, BASE)
    assert result["halo_model"] == ("/srv/site/models/m.gguf" if anchored else "models/m.gguf")
    assert result["halo_model_push"] is push


def test_a_pushed_model_key_absent_adds_nothing():
    assert anchor_local_paths({"halo_model_push": True}, BASE) == {"halo_model_push": True}
    assert anchor_local_paths({}, BASE) == {}


def test_model_entries_with_a_file_are_anchored_each():
    entries = [
        {"name": "a", "file": "a.gguf", "ctx": 4096},
        {"name": "b", "hf": "org/repo"},  # no file: as is
        "not-a-mapping",
        {"name": "c", "file": "/abs/c.gguf"},
    ]
    result = anchor_local_paths({"halo_models": entries}, BASE)
    assert result["halo_models"] == [
        {"name": "a", "file": "/srv/site/a.gguf", "ctx": 4096},
        {"name": "b", "hf": "org/repo"},
        "not-a-mapping",
        {"name": "c", "file": "/abs/c.gguf"},
    ]
    assert entries[0]["file"] == "a.gguf"  # each entry copied, not changed in place


def test_model_entries_in_a_tuple_are_anchored_too_and_other_shapes_are_left():
    result = anchor_local_paths({"halo_models": ({"file": "x.gguf"},)}, BASE)
    assert result["halo_models"] == [{"file": "/srv/site/x.gguf"}]
    for shape in ("x.gguf", {"file": "x.gguf"}, None):
        assert anchor_local_paths({"halo_models": shape}, BASE)["halo_models"] == shape


def test_the_keys_that_always_name_a_control_machine_file():
    assert localfiles.LOCAL_FILE_KEYS == ("halo_gateway_tls_cert",)


def test_a_user_that_does_not_exist_leaves_the_path_as_written(tmp_path):
    with pytest.raises(localfiles.LocalFileMissing, match="^no such file on the control machine$"):
        localfiles.read_bounded("~no-such-user-halofleet/x.pem", 10)


@pytest.mark.parametrize("limit", [0, 1, 5])
def test_bounds_at_the_edge(tmp_path, limit):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 5)
    if limit >= 5:
        assert localfiles.read_bounded(str(path), limit) == b"xxxxx"
        assert localfiles.sha256_of(str(path), limit=limit)
    else:
        with pytest.raises(localfiles.LocalFileRefused, match=f"^is larger than {limit} bytes \\(the bound\\)$"):
            localfiles.read_bounded(str(path), limit)
        with pytest.raises(localfiles.LocalFileRefused, match=f"^is larger than {limit} bytes \\(the bound\\)$"):
            localfiles.sha256_of(str(path), limit=limit)


def test_the_default_bounds():
    assert localfiles.CERT_BYTES == 1 << 20 and localfiles.MODEL_BYTES == 1 << 42 and localfiles.BLOCK == 1 << 20


def test_read_at_reads_exactly_the_slice(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(bytes(range(10)))
    assert localfiles.read_at(str(path), 3, 4) == bytes([3, 4, 5, 6])
    assert localfiles.read_at(str(path), 8, 4) == bytes([8, 9])
    assert localfiles.read_at(str(path), 0, 0) == b""


# -- how files are read: errors, huge files, devices and terminals ----------------------------------------------
#
# Mutants judged equivalent (halofleet.contract.localfiles.*; no behaviour can tell them apart):
# - x_open_regular__mutmut_15, x_read_at__mutmut_6, x_read_bounded__mutmut_8, x_sha256_of__mutmut_18
#   (``type(None).__name__`` for an OSError without strerror): open(2) and read(2) errors always carry one.
# - x_open_regular__mutmut_33, _34, _35, _36, _37 ("a socket", "not a regular file"): open(2) of a socket fails
#   with ENXIO before fstat, and Linux has no other file type, so neither text can be reached.
# - x_open_regular__mutmut_43 (``set_blocking(fd, False)``): O_NONBLOCK has no effect on a regular file.
# - x_read_bounded__mutmut_5 (``read(limit + 2)``): one byte more is read, the refusal is the same.


def test_a_read_error_is_named_by_every_reader():
    # /proc/self/mem is a regular file whose first page is not mapped: read(2) fails with EIO.
    for read in (lambda: localfiles.read_bounded("/proc/self/mem", 10), lambda: localfiles.sha256_of("/proc/self/mem"),
                 lambda: localfiles.read_at("/proc/self/mem", 0, 4)):
        with pytest.raises(localfiles.LocalFileRefused,
                           match="^cannot be read on the control machine \\(Input/output error\\)$"):
            read()


def test_a_huge_sparse_file_is_refused_after_reading_its_bound(tmp_path):
    path = tmp_path / "huge.gguf"
    with path.open("wb") as handle:
        handle.truncate(1 << 40)  # 1 TiB of holes: reading it whole cannot even be allocated
    with pytest.raises(localfiles.LocalFileRefused, match="^is larger than 10 bytes \\(the bound\\)$"):
        localfiles.read_bounded(str(path), 10)
    with pytest.raises(localfiles.LocalFileRefused, match="^is larger than 10 bytes \\(the bound\\)$"):
        localfiles.sha256_of(str(path), limit=10)
    assert localfiles.read_at(str(path), (1 << 40) - 2, 10) == bytes(2)


def test_the_hash_bound_counts_every_block(tmp_path):
    import hashlib

    path = tmp_path / "m.gguf"
    data = bytes(range(256)) * (2 * localfiles.BLOCK // 256)  # two whole blocks
    path.write_bytes(data)
    assert localfiles.sha256_of(str(path), limit=len(data)) == hashlib.sha256(data).hexdigest()
    path.write_bytes(data + b"!")  # one byte into a third block
    with pytest.raises(localfiles.LocalFileRefused, match=f"^is larger than {len(data)} bytes \\(the bound\\)$"):
        localfiles.sha256_of(str(path), limit=len(data))


def test_a_block_device_is_refused_as_a_device():
    import os
    import stat
    from pathlib import Path

    devices = [path for path in sorted(Path("/dev").iterdir()) if stat.S_ISBLK(path.lstat().st_mode)]
    openable = [path for path in devices if os.access(path, os.R_OK)]
    if not openable:
        pytest.skip("no block device this user may open")
    with pytest.raises(localfiles.LocalFileRefused, match="^is a device on the control machine, not a regular file$"):
        localfiles.read_bounded(str(openable[0]), 10)


def test_checking_a_terminal_does_not_make_it_the_controlling_terminal():
    """A session leader without a terminal that open(2)s one without O_NOCTTY acquires it (and its signals)."""
    import os

    leader, follower = os.openpty()
    name = os.ttyname(follower)
    os.close(follower)
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through its exit status
        code = 3
        try:
            os.setsid()  # a new session, without a controlling terminal
            code = 2 if localfiles.is_regular(name) else 1
            os.open("/dev/tty", os.O_RDONLY)  # fails (ENXIO) unless the terminal became ours
        except OSError:
            code = 0 if code == 1 else code
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    os.close(leader)
    assert os.waitstatus_to_exitcode(status) == 0  # 1: the terminal was acquired; 2: it was taken for a file
