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
