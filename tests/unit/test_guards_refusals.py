"""
The refusals no other test reached (found by listing every raise and `exit 1` message of halofleet/ against the
tests): the operations' own second line of defence behind validation (operations/ is outside mutmut's reach), a
systemd word that cannot be written, a value Quadlet would read wrongly, an RPC worker on a host without apt and a
starter site that cannot be written. Each is asked for word for word (the ones needing a deploy: test_guards_deploys).
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from pyinfra.api import OperationError

from halofleet import cli
from halofleet.contract import validators
from halofleet.contract.config import ConfigError, HostRefused
from halofleet.operations import halo_kernel, halo_models, halo_rocm, halo_serve

from .test_mutants_serving import plan_for


def refused(operation, **kwargs) -> str:
    with pytest.raises(OperationError) as error:
        list(operation._inner(**kwargs))
    return str(error.value)


@pytest.mark.parametrize("params", [["amd_iommu=off", "x=$(reboot)"], ["a b"], ["quiet;reboot"]])
def test_the_kernel_operations_refuse_a_param_that_is_not_name_value(params):
    message = f"refusing kernel parameter {params[-1]!r}: only name=value without quoting is allowed"
    assert refused(halo_kernel.grub_cmdline, params=params) == message
    assert refused(halo_kernel.grubby_cmdline, params=params, configured=[]) == message


def test_the_rocm_source_and_pin_refuse_what_apt_would_read_otherwise():
    with pytest.raises(ValueError, match=r"^not usable in an apt source: 'https://x/ main' 'noble': must be an "
                                         r"http://, https:// or file:/ URL"):
        halo_rocm.render_sources("https://x/ main", "noble", None)
    with pytest.raises(ValueError, match=r"^not usable in an apt source: 'https://repo\.radeon\.com/rocm/apt/7\.2\.1' "
                                         r"'noble\\nTrusted: yes': must be one apt suite name"):
        halo_rocm.render_sources("https://repo.radeon.com/rocm/apt/7.2.1", "noble\nTrusted: yes", None)
    with pytest.raises(ValueError, match=r"^not a ROCm pin version: '7\.2\.1 \*'$"):
        halo_rocm.render_pin("7.2.1", pin_version="7.2.1 *")
    with pytest.raises(ValueError, match=r"^refusing ROCm pin packages: 'rocm core' is not a Debian package name"):
        halo_rocm.render_pin("7.2.1", packages=["rocm core"])


def test_the_therock_install_refuses_an_empty_package_list_and_a_bad_pin():
    assert refused(halo_rocm.therock_release, version="7.14.0", packages=[], installed={},
                   pin_version="7.14.0-*") == "no ROCm package to install"
    assert refused(halo_rocm.therock_release, version="7.14.0", packages=["amdrocm7.14-gfx1151"], installed={},
                   pin_version="7.14.0; rm") == "not a ROCm pin version: '7.14.0; rm'"
    assert refused(halo_rocm.legacy_removed, legacy="7.2.1'; reboot; '", version="7.14") == \
        "not a ROCm release: \"7.2.1'; reboot; '\""


@pytest.mark.parametrize("kwargs, message", [
    ({"path": "relative/m.gguf", "url": "https://h/m.gguf", "sha256": "a" * 64},
     "model_download needs an absolute path in the path grammar, got 'relative/m.gguf'"),
    ({"path": "/m/m.gguf", "url": "file:///etc/shadow", "sha256": "a" * 64},
     "model_download fetches http(s) URLs only, got 'file:///etc/shadow'"),
    ({"path": "/m/m.gguf", "url": "https://h/m.gguf"},
     "model_download of /m/m.gguf needs the expected sha256 (or a git blob id)"),
])
def test_a_download_is_refused_without_a_path_an_http_url_and_a_digest(kwargs, message):
    assert refused(halo_models.model_download, owner="halo", **kwargs) == message


def test_unit_file_installs_only_units_and_quadlet_files():
    assert refused(halo_serve.unit_file, path="/etc/sudoers.d/halo", content="x") == \
        "unit_file manages .service and .container files, not /etc/sudoers.d/halo"


@pytest.mark.parametrize("value", ["a\nExecStartPre=/bin/sh", "a\rb", "a\0b"], ids=["newline", "return", "nul"])
def test_a_line_break_or_nul_cannot_be_one_systemd_word(value):
    with pytest.raises(ValueError, match=r"^a systemd argument cannot hold a line break or NUL: "):
        validators.systemd_word(value)


def test_a_value_quadlet_would_misread_is_refused_naming_the_key():
    with pytest.raises(ConfigError) as error:
        plan_for({"halo_llama_source": "toolbox", "halo_llama_backend": "vulkan", "halo_image": "img:1 --privileged"})
    assert str(error.value).startswith("host 'h': halo_image='img:1 --privileged' is invalid")


def test_an_rpc_worker_on_a_host_without_apt_is_refused():
    from halofleet.box.plan import build_plan

    from .test_rpc import W1, fleet, probe

    fedora = probe(os_release=['PRETTY_NAME="Fedora Linux 43"', "ID=fedora", 'VERSION_ID="43"'])
    with pytest.raises(HostRefused) as error:
        build_plan("w1", W1, fedora, fleet=fleet())
    assert str(error.value) == "host 'w1': RPC workers are built from Debian's llama.cpp packages: apt hosts only, " \
                               "not fedora"


def test_a_starter_site_that_cannot_be_written_is_bad_input(tmp_path):
    blocker = tmp_path / "site"
    blocker.write_text("a file where the directory should be")
    result = CliRunner().invoke(cli.main, ["init", str(blocker / "inner")])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"halofleet: cannot write the starter site in '{blocker / 'inner'}': ")
