"""
The grammars of halofleet.contract.validators where the other unit tests do not reach (mutation-tested): the exact
bounds of paths, tensor splits and their text form, '.' and '..' as names, upper-case hex and letters where the
grammar allows them, reserved engine options written with '=' or as a vLLM prefix, URLs with no host or with a
bare token, and the texts of the refusals a user reads (through the host-data contract where an option uses them).

Equivalent survivors (mutmut 3.7 names, halofleet.contract.validators.*; no input can tell them apart):
- x_check_absolute_path__mutmut_13 (``value == "XX/XX"``): "/" is refused anyway, its one component is empty.
- x_check_args__mutmut_12 (``split("=")``), _15 (``split("=", 2)``): only the first field is read, and the first
  field is the same however many splits follow it.
- x_parse_tensor_split__mutmut_7 (``values = None`` when a part is no number): None and [] are both falsy, so the
  same refusal is raised.
"""

from __future__ import annotations

import pytest

from halofleet.contract import validators as v
from halofleet.contract.config import ConfigError
from halofleet.models.specs import validate

MODEL = {"halo_model": "/srv/models/tiny.gguf"}


def refused(key, value):
    """The refusal a user reads for ``key: value`` in host data (what follows 'is invalid: ')."""
    with pytest.raises(ConfigError) as error:
        validate("h", {**MODEL, key: value})
    return str(error.value).split(" is invalid: ", 1)[1]


# -- paths and file names ---------------------------------------------------------------------------------------

def path_of_length(length):
    """An absolute path of valid components, exactly ``length`` characters long."""
    path = ""
    while length - len(path) > 256:
        path += "/" + "a" * 200
    return path + "/" + "b" * (length - len(path) - 1)


def test_absolute_path_length_bound_is_4096_inclusive():
    """4096 characters is the longest path accepted (PATH_MAX); one more is refused."""
    assert len(path_of_length(4096)) == 4096 and len(path_of_length(4097)) == 4097
    assert v.check_absolute_path(path_of_length(4096)) is None
    assert v.check_absolute_path(path_of_length(4097)).startswith("must be an absolute path")


@pytest.mark.parametrize("path", ["/srv/./models", "/srv/../etc", "/.", "/srv/models/.."])
def test_absolute_path_refuses_dot_components(path):
    """'.' and '..' fit the component characters but are refused: the path must name what it says."""
    assert v.check_absolute_path(path) == f"must be {v.PATH_ALLOWED}"
    assert refused("halo_model_dir", path) == f"must be {v.PATH_ALLOWED}"


@pytest.mark.parametrize("name", [".", "..", "a b", "", "x:y", "a/b", "-rf"])
def test_file_name_refusals(name):
    """A file name is one component: not '.', '..', not empty, nothing outside the grammar, no leading '-'."""
    assert v.check_file_name(name).startswith("must be a file name made of")


@pytest.mark.parametrize("name", ["model.gguf", ".hidden", "..x", "a-b", "Q4_K_M@2+1"])
def test_file_name_accepts_plain_components(name):
    """Dots are fine inside a name; only the names '.' and '..' themselves are refused."""
    assert v.check_file_name(name) is None


# -- addresses --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("address", ["FD00::1", "::FFFF:127.0.0.1", "Fe80::aBcD"])
def test_bind_accepts_upper_case_hex(address):
    """IPv6 hex digits are case-insensitive: upper case is a valid address to listen on."""
    assert v.check_bind(address) is None


@pytest.mark.parametrize("address", ["1.2.3", "1::2::3", "256.1.1.1"])
def test_bind_refusal_of_hex_text_that_is_no_address(address):
    """Text of address characters that is no address gets the plain refusal (not the zone-id one)."""
    text = "must be an IP address to listen on (127.0.0.1 keeps the API on the host; 0.0.0.0 for all)"
    assert v.check_bind(address) == text
    assert refused("halo_bind", address) == text


def test_rpc_address_refusals_say_why():
    """No address at all, and a public one, get their own texts (the second says RPC is unauthenticated)."""
    assert refused("halo_rpc_address", "worker-1") == \
        "must be the IP address of this host on the private link between the RPC group's boxes"
    public = ("must be a private address (10/8, 172.16/12, 192.168/16, fc00::/7 ULA) or loopback: llama.cpp's RPC "
              "server is unauthenticated upstream, so it never listens on an address that routes from elsewhere")
    assert refused("halo_rpc_address", "8.8.8.8") == public
    assert v.check_rpc_address("2001:db8::1") == public
    assert v.check_rpc_address("FD12::1") is None


def test_rpc_device_refusal_text():
    """A device list with a space is refused with the text naming ggml's device names."""
    assert refused("halo_rpc_device", "Vulkan0, CPU") == \
        "must be a ggml device name like Vulkan0, ROCm0 or CPU (several: comma-separated, no spaces)"


def test_host_names_duplicate_names_the_repeated_one():
    """The refusal of a repeated worker names the one repeated, not the first of the list."""
    assert v.check_host_names(["a", "b", "b"]) == \
        "names 'b' twice: each worker is one device of the group, listed once"


# -- engine arguments -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("item, option", [("--host=0.0.0.0", "--host"), ("--host=a=b", "--host"),
                                          ("-c=4096", "-c"), ("--api-key=k=", "--api-key")])
def test_llama_args_reserved_option_with_equals_value(item, option):
    """``--host=x`` is --host: the option name is what comes before the first '='."""
    name = item.split("=", 1)[0]
    assert v.check_args("halo_llama_args", [item]) == \
        f"{option} is set by {v.RESERVED_ARGS['halo_llama_args'][option]}, not in the extra arguments " \
        f"(found {name!r})"


@pytest.mark.parametrize("item, option", [("--ho", "--host"), ("--h", "--host"), ("--po=9", "--port"),
                                          ("--api", "--api-key")])
def test_vllm_args_refuse_an_argparse_prefix_of_a_reserved_option(item, option):
    """vLLM's argparse reads any unambiguous prefix as the long option: --ho is --host."""
    assert v.check_args("halo_vllm_args", [item]).startswith(f"{option} is set by ")


@pytest.mark.parametrize("item", ["--ho", "--h", "--po=9"])
def test_llama_args_have_no_prefix_matching(item):
    """llama-server matches options exactly: a prefix of --host is not --host there."""
    assert v.check_args("halo_llama_args", [item]) is None


@pytest.mark.parametrize("item", ["--", "-", "--max-num-seqs=4", "--hostile"])
def test_vllm_args_that_are_no_prefix_of_a_reserved_option(item):
    """'--' alone (end of options) and longer names are not prefixes of a reserved option."""
    assert v.check_args("halo_vllm_args", [item]) is None


def test_args_of_a_key_without_reserved_options_check_characters_only():
    """A key with no reserved options still has its characters checked, and nothing else."""
    assert v.check_args("halo_other_args", ["--host=0.0.0.0", "--ho"]) is None
    assert v.check_args("halo_other_args", ["a b"]).startswith("must be a list of arguments")


# -- packages, suites, versions ---------------------------------------------------------------------------------

def test_package_names_refuse_a_version():
    """An apt pin holds names only: ``name=version`` fits DEB_PACKAGE but is refused here."""
    assert v.check_package_names(["rocm=7.2.1"]) == \
        "'rocm=7.2.1' is not a Debian package name ([a-z0-9][a-z0-9+.-]+, no version here)"
    assert v.check_package_names(["rocm", "amdrocm7.14-gfx1151"]) is None


def test_packages_refusal_text():
    """An apt option among the packages is refused with the text that says options are not accepted."""
    assert refused("halo_rocm_packages", ["rocm", "-o"]) == \
        "'-o' is not a Debian package name ([a-z0-9][a-z0-9+.-]+, optionally =version); " \
        "apt options are not accepted here"


def test_rocm_version_refusal_text():
    """A version outside the grammar gets the text with the example and the rule."""
    assert refused("halo_rocm_version", "7.02") == \
        "must be 'none' or a ROCm release like 7.2.1 (X.Y or X.Y.Z); digits only, no leading zeros or spaces"


# -- URLs -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["http:///pool/", "https:///pool/", "http://:8080/", "https://@/"])
def test_url_without_host_is_refused(url):
    """An http(s) URL must name a host."""
    assert v.check_url(url) == v.URL_ALLOWED


def test_file_url_needs_no_host():
    """file:/ URLs (local test repositories) have no host and are accepted."""
    assert v.check_url("file:///srv/repo") is None and v.check_url("file:/srv/repo") is None


@pytest.mark.parametrize("url", ["https://TOKEN@mirror.example/rocm", "https://user:pw@mirror.example/",
                                 "https://:pw@mirror.example/"])
def test_url_credentials_are_refused_even_a_bare_token(url):
    """A user part alone may be a token, a password alone is one: both are refused like user:password@."""
    text = "must not carry credentials (user:password@): they would be shown in logs and written to files"
    assert v.check_url(url) == text
    assert refused("halo_rocm_repo_key_url", url) == text


def test_apt_url_refusal_of_a_query():
    """A URL check_url accepts but apt cannot take as one word gets the plain-apt-URL text."""
    text = ("must be a plain apt repository URL: letters, digits and -._~:/+%=@ only (no query '?', fragment "
            "'#', brackets, spaces or quotes)")
    assert v.check_url("https://mirror.example/rocm?x=1") is None
    assert v.check_apt_url("https://mirror.example/rocm?x=1") == text
    assert refused("halo_rocm_repo_url", "https://mirror.example/rocm#x") == text


@pytest.mark.parametrize("url", ["http://hub.local", "http://10.0.0.2:8080/", "https://huggingface.co"])
def test_http_url_accepts_http_and_https(url):
    """The Hub endpoint may be plain http (a mirror on the LAN) or https."""
    assert v.check_http_url(url) is None


@pytest.mark.parametrize("url", ["file:/srv/hub", "HTTP://hub.local", "ftp://hub.local"])
def test_http_url_refuses_other_schemes(url):
    """file:/ is no Hub, and the scheme is matched as written (lower case)."""
    assert v.check_http_url(url) == "must be an http:// or https:// URL"
    assert refused("halo_hf_endpoint", "file:/srv/hub") == "must be an http:// or https:// URL"


# -- tokens, names, gateway -------------------------------------------------------------------------------------

def test_hf_token_upper_case_and_refusal_text():
    """Tokens are case-sensitive and may hold upper case; a bad one is refused with the rule, value hidden."""
    assert v.check_hf_token("hf_ABCDEFGHijkl") is None
    assert refused("halo_hf_token", "hf bad token") == \
        "must be 8 to 512 characters from A-Z a-z 0-9 . _ ~ + / = - (no spaces, quotes or newlines)"


def test_model_name_upper_case_and_refusal_text():
    """A served model name may start with and hold upper case; a bad one gets the rule's text."""
    assert v.check_model_name("Qwen3-Coder-30B.Q4") is None
    assert refused("halo_model_alias", "-qwen") == \
        "must be 1-64 characters from A-Z a-z 0-9 . _ - starting with a letter or digit"


def test_gateway_groups_named_twice():
    """A group listed twice is refused with its own text."""
    assert refused("halo_gateway_groups", ["llm", "llm"]) == "must name each group once"


# -- tensor split -----------------------------------------------------------------------------------------------

def test_tensor_split_bounds_are_inclusive():
    """64 shares and a share of 1000000 are the largest accepted; 65 shares and 1000001 are refused."""
    assert v.check_tensor_split([1] * 64) is None
    assert v.check_tensor_split([1] * 65) == v.TENSOR_SPLIT_ALLOWED
    assert v.check_tensor_split([1_000_000, 1]) is None
    assert v.check_tensor_split([1_000_001, 1]) == v.TENSOR_SPLIT_ALLOWED


def test_parse_tensor_split_text_length_bound_is_4096_inclusive():
    """Text of 4096 characters is parsed (1.000...0 is 1), one more is refused before parsing."""
    assert v.parse_tensor_split("1." + "0" * 4094) == [1.0]
    with pytest.raises(ValueError, match="must be a non-empty list"):
        v.parse_tensor_split("1." + "0" * 4095)


def test_parse_tensor_split_shows_the_first_80_characters():
    """The refusal quotes at most 80 characters of what was given."""
    text = "x" * 100
    with pytest.raises(ValueError) as error:
        v.parse_tensor_split(text)
    assert str(error.value) == f"{'x' * 80!r} {v.TENSOR_SPLIT_ALLOWED} (e.g. 3,1)"
