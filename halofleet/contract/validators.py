"""
The grammars host data must fit before it is written into a shell command, a systemd unit, a Quadlet file, an
env file, a GRUB drop-in or an apt source. Each ``check_*`` returns None or the "allowed" text of the refusal
(the contract in :mod:`halofleet.contract.config` names host and key); the ``systemd_*`` helpers quote for unit files.

One rule throughout: a value either fits the file's grammar as it is, or it is refused. Quoting on top of that
(``shlex.quote``, :func:`systemd_word`) is the second line of defence, not the first.
"""

from __future__ import annotations

import ipaddress
import math
import re
from urllib.parse import urlsplit

from . import policy

# Path components: letters, digits and . _ + @ - (no space, quote, '$', '%', ':', '\\', glob or shell syntax).
# ":" and "," are excluded: Quadlet's Volume= splits on ":" (/etc:/models:rw would bind /etc read-write) and
# podman reads "," as an option separator in mount specifications.
PATH_CHARS = "A-Za-z0-9._+@-"
PATH_COMPONENT = re.compile(rf"[{PATH_CHARS}]{{1,255}}")
PATH_ALLOWED = f"an absolute path of components made of {PATH_CHARS.replace('A-Za-z0-9', 'A-Z a-z 0-9 ')} " \
               "(no spaces, quotes, '$', '%', ':', '..' or empty components)"


def check_absolute_path(value: str) -> str | None:
    if not value.startswith("/") or len(value) > 4096:
        return f"must be {PATH_ALLOWED}"
    parts = value[1:].split("/")
    if value == "/" or not all(PATH_COMPONENT.fullmatch(part) and part not in (".", "..") for part in parts):
        return f"must be {PATH_ALLOWED}"
    return None


def check_file_name(value: str) -> str | None:
    """One path component (a pushed model's name on the host)."""
    if not PATH_COMPONENT.fullmatch(value) or value in (".", "..") or value.startswith("-"):
        return f"must be a file name made of {PATH_CHARS.replace('A-Za-z0-9', 'A-Z a-z 0-9 ')} not starting with '-'"
    return None


def check_bind(value: str) -> str | None:
    # ipaddress accepts IPv6 zone ids with any text after '%' (fe80::1%x$(cmd)); '%' is also a systemd specifier.
    if not re.fullmatch(r"[0-9A-Fa-f.:]{2,45}", value):
        return ("must be an IP address to listen on, without a zone id (127.0.0.1 keeps the API on the host; "
                "0.0.0.0 for all)")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "must be an IP address to listen on (127.0.0.1 keeps the API on the host; 0.0.0.0 for all)"
    return None


# RFC 1918 and RFC 4193 (ULA): what an RPC worker may bind and accept.
PRIVATE_NETWORKS = tuple(ipaddress.ip_network(net) for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                                               "fc00::/7"))


def check_rpc_address(value: str) -> str | None:
    """A worker's (or head's) address on the private link: ggml's RPC protocol has no authentication at all, so
    it may only ever listen on (and accept) addresses that do not route from the internet."""
    problem = check_bind(value)
    if problem:
        return "must be the IP address of this host on the private link between the RPC group's boxes"
    address = ipaddress.ip_address(value)
    if address.is_unspecified:
        return ("must be one private address, never 0.0.0.0 or :: (all interfaces): llama.cpp's RPC server is "
                "unauthenticated upstream: whoever reaches the port can use this box's memory and compute")
    # ipaddress' is_private also covers documentation and benchmark ranges; the rule is RFC 1918, ULA, loopback.
    if address.is_loopback or any(address in network for network in PRIVATE_NETWORKS):
        return None
    return ("must be a private address (10/8, 172.16/12, 192.168/16, fc00::/7 ULA) or loopback: llama.cpp's RPC "
            "server is unauthenticated upstream, so it never listens on an address that routes from elsewhere")


# ggml device names as ggml-rpc-server's -d takes them, comma-separated: Vulkan0, ROCm0, CPU ...
RPC_DEVICE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}(?:,[A-Za-z][A-Za-z0-9_]{0,31}){0,15}")


def check_rpc_device(value: str) -> str | None:
    if not RPC_DEVICE.fullmatch(value):
        return "must be a ggml device name like Vulkan0, ROCm0 or CPU (several: comma-separated, no spaces)"
    return None


# pyinfra names hosts freely (user@host, @docker/x); these go into unit and nft comments: no space, quote, '%', '$'.
INVENTORY_NAME = re.compile(r"[A-Za-z0-9_@][A-Za-z0-9_.@:/+-]{0,252}")


def check_host_names(value: list[str]) -> str | None:
    for name in value:
        if not INVENTORY_NAME.fullmatch(name):
            return f"{name!r} is not an inventory host name (letters, digits and . _ - + @ : / only)"
    if len(set(value)) != len(value):
        duplicate = next(name for name in value if value.count(name) > 1)
        return f"names {duplicate!r} twice: each worker is one device of the group, listed once"
    return None


ROCM_RELEASE = policy.ROCM_RELEASE


def check_rocm_version(value: str) -> str | None:
    if value == "none":
        return None
    if not ROCM_RELEASE.fullmatch(value):
        return "must be 'none' or a ROCm release like 7.2.1 (X.Y or X.Y.Z); digits only, no leading zeros or spaces"
    reason = policy.rocm_denied(value)
    if reason:
        return f"ROCm {value} is refused: {reason}"
    return None


# Debian policy 5.6.1: package names are [a-z0-9][a-z0-9+.-]+; 5.6.12: [epoch:]upstream[-revision].
DEB_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]{1,99}(?:=(?:[0-9]{1,9}:)?[0-9][A-Za-z0-9.+~-]{0,99})?")


def check_packages(value: list[str]) -> str | None:
    for item in value:
        if not DEB_PACKAGE.fullmatch(item):
            return (f"{item!r} is not a Debian package name ([a-z0-9][a-z0-9+.-]+, optionally =version); "
                    "apt options are not accepted here")
    return None


def check_package_names(value: list[str]) -> str | None:
    """Package names without a version (what an apt pin holds, and TheRock's per-target packages)."""
    for item in value:
        if not DEB_PACKAGE.fullmatch(item) or "=" in item:
            return f"{item!r} is not a Debian package name ([a-z0-9][a-z0-9+.-]+, no version here)"
    return None


# Suites: a name, or a path below dists/ (no whitespace: deb822 separates suites with it).
APT_SUITE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}(?:/[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}){0,3}")


def check_apt_suite(value: str) -> str | None:
    if not APT_SUITE.fullmatch(value):
        return "must be one apt suite name like noble or debian/13 (letters, digits, . _ + ~ - and '/', no spaces)"
    return None


# RFC 3986 characters minus the ones a shell or a deb822 field would treat specially (' " ` $ \ space).
URL_CHARS = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!&()*+,;=%-]{1,2048}")
URL_ALLOWED = ("must be an http://, https:// or file:/ URL (letters, digits and -._~:/?#[]@!&()*+,;=%; "
               "no spaces, quotes, '$' or backslashes)")


# user:password@ (or a bare token@) between a scheme's // and the host: masked wherever a URL is shown.
_USERINFO = re.compile(r"""(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@\s:'"]*)(?P<password>:[^/@\s'"]*)?@""")


def mask_url_credentials(text: str) -> str:
    """``text`` with the credentials of every URL in it masked: ``https://user:<redacted>@host``; a user part without
    a password may be a token itself (``https://TOKEN@host``), so it is masked whole."""
    def mask(match: re.Match) -> str:
        if match.group("password") is None:
            return f"{match.group('scheme')}<redacted>@"
        return f"{match.group('scheme')}{match.group('user')}:<redacted>@"
    return _USERINFO.sub(mask, text)


def check_url(value: str) -> str | None:
    if not value.startswith(("http://", "https://", "file:/")) or not URL_CHARS.fullmatch(value):
        return URL_ALLOWED
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return URL_ALLOWED
    if parts.scheme in ("http", "https") and not parts.hostname:
        return URL_ALLOWED
    if parts.username or parts.password:
        return "must not carry credentials (user:password@): they would be shown in logs and written to files"
    return None


# An apt repository URL: one word of a one-line source or a deb822 URIs: field, as apt reads it. No query or
# fragment ('#' starts a comment in a one-line source), no brackets, quotes or spaces. The operation that writes
# the source checks the same grammar (halofleet.operations.halo_rocm.repository), so what passes here is written.
APT_URL_CHARS = re.compile(r"[A-Za-z0-9._~:/+%=@-]{1,2048}")


def check_apt_url(value: str) -> str | None:
    problem = check_url(value)
    if problem:
        return problem
    if not APT_URL_CHARS.fullmatch(value):
        return ("must be a plain apt repository URL: letters, digits and -._~:/+%=@ only (no query '?', fragment "
                "'#', brackets, spaces or quotes)")
    return None


# Options that have their own keys (halo_bind, halo_port, halo_api_key) and must not be overridden in the extra
# arguments: llama-server --host --port --api-key --api-key-file; vllm serve --host --port --api-key.
RESERVED_ARGS = {
    "halo_llama_args": {"--host": "halo_bind", "--port": "halo_port", "--api-key": "halo_api_key",
                        "--api-key-file": "halo_api_key", "--rpc": "halo_rpc_workers",
                        "--tensor-split": "halo_tensor_split", "-ts": "halo_tensor_split",
                        # what changes the memory plan has its own key: the plan sizes exactly what the unit passes
                        "-c": "halo_ctx", "--ctx-size": "halo_ctx", "-np": "halo_llama_parallel",
                        "--parallel": "halo_llama_parallel", "-b": "halo_llama_batch",
                        "--batch-size": "halo_llama_batch", "-ub": "halo_llama_ubatch",
                        "--ubatch-size": "halo_llama_ubatch", "-ctk": "halo_llama_kv_type",
                        "--cache-type-k": "halo_llama_kv_type", "-ctv": "halo_llama_kv_type_v",
                        "--cache-type-v": "halo_llama_kv_type_v", "-kvu": "halo_llama_kv_unified",
                        "--kv-unified": "halo_llama_kv_unified", "-no-kvu": "halo_llama_kv_unified",
                        "--no-kv-unified": "halo_llama_kv_unified", "--swa-full": "halo_llama_swa_full",
                        "-fa": "halo_llama_flash_attn", "--flash-attn": "halo_llama_flash_attn"},
    "halo_vllm_args": {"--host": "halo_bind", "--port": "halo_port", "--api-key": "halo_api_key"},
}
# vLLM parses with argparse, which accepts any unambiguous prefix of a long option (--ho for --host).
PREFIX_MATCHING_KEYS = {"halo_vllm_args"}
ARG_FORBIDDEN = "%$\\\"';`"


def check_args(key: str, value: list[str]) -> str | None:
    """Extra engine arguments: one word each for a systemd Exec line, none of the options with their own key."""
    for item in value:
        if any(c.isspace() or c in ARG_FORBIDDEN or not c.isprintable() for c in item):
            return "must be a list of arguments, one word each, without spaces, quotes, '%', '$', ';' or '\\'"
        name = item.split("=", 1)[0]
        for option, own_key in RESERVED_ARGS.get(key, {}).items():
            prefix = key in PREFIX_MATCHING_KEYS and len(name) > 2 and name.startswith("--") \
                and option.startswith(name)
            if name == option or prefix:
                return f"{option} is set by {own_key}, not in the extra arguments (found {name!r})"
    return None


# llama-server --tensor-split: proportions, one per device of an RPC group. Bounded so that their sum stays a
# plain float (1e308,1e308 would overflow to inf) and the list fits a group.
TENSOR_SHARE_MAX = 1_000_000
TENSOR_SHARES_MAX = 64
TENSOR_SPLIT_ALLOWED = (f"must be a non-empty list of numbers >= 0, not all zero (proportions, e.g. [3, 1]), each "
                        f"at most {TENSOR_SHARE_MAX}, at most {TENSOR_SHARES_MAX} of them")


def check_tensor_split(value: list) -> str | None:
    """The shares of ``halo_tensor_split`` and of ``halofleet plan --tensor-split`` (one grammar for both)."""
    if not 1 <= len(value) <= TENSOR_SHARES_MAX or not all(
        isinstance(item, (int, float)) and not isinstance(item, bool) and math.isfinite(item)
        and 0 <= item <= TENSOR_SHARE_MAX for item in value
    ) or not any(value):
        return TENSOR_SPLIT_ALLOWED
    return None


def parse_tensor_split(text: str) -> list[float]:
    """``3,1`` as numbers in the grammar of :func:`check_tensor_split`; ValueError with the rule otherwise."""
    try:
        values = [float(part) for part in text.split(",")] if len(text) <= 4096 else []
    except ValueError:
        values = []
    problem = check_tensor_split(values) if values else TENSOR_SPLIT_ALLOWED
    if problem:
        raise ValueError(f"{text[:80]!r} {problem} (e.g. 3,1)")
    return values


def check_int_text(value: str) -> bool:
    """A whole number as text: ASCII digits with an optional sign, nothing else (no '--5', no '٩')."""
    return re.fullmatch(r"[+-]?[0-9]{1,12}", value) is not None


# -- single-purpose checks of the contract ------------------------------------------------------------------

def check_user_name(value: str) -> str | None:
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,30}", value) or value == "root":
        return "must be a non-root system user name ([a-z_][a-z0-9_-]*, at most 31 characters)"
    return None


# registry[:port]/path[:tag][@sha256:digest]
IMAGE_PATTERN = re.compile(
    r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)+"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)


def check_image(value: str) -> str | None:
    if not IMAGE_PATTERN.fullmatch(value):
        return "must be a fully qualified image reference like docker.io/owner/name:tag or name@sha256:<64 hex>"
    return None


def check_http_url(value: str) -> str | None:
    """An http(s) URL (the Hub endpoint: urllib and curl reach it; file:/ is not a Hub)."""
    if not value.startswith(("http://", "https://")):
        return "must be an http:// or https:// URL"
    return check_url(value)


def check_hf_token(value: str) -> str | None:
    # Goes into an HTTP header line: printable token characters only (no CR/LF, no spaces, no ':').
    if not re.fullmatch(r"[A-Za-z0-9._~+/=-]{8,512}", value):
        return "must be 8 to 512 characters from A-Z a-z 0-9 . _ ~ + / = - (no spaces, quotes or newlines)"
    return None


def check_model_name(value: str) -> str | None:
    """A served model name: one word in an Exec line, an INI section and a URL (as halo_models' name)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", value):
        return "must be 1-64 characters from A-Z a-z 0-9 . _ - starting with a letter or digit"
    return None


def check_sha256(value: str) -> str | None:
    return None if re.fullmatch(r"[0-9a-f]{64}", value) else "must be 64 lower-case hex digits"


def check_api_key(value: str) -> str | None:
    if not re.fullmatch(r"[A-Za-z0-9._~+/=-]{16,512}", value):
        return "must be 16 to 512 characters from A-Z a-z 0-9 . _ ~ + / = - (no spaces, quotes or newlines)"
    return None


# -- haproxy.cfg (the gateway) ----------------------------------------------------------------------------------
# haproxy splits a line into words on spaces, reads '#' as a comment, quotes and '\\' as quoting, "${...}" as an
# environment variable and braces as anonymous ACLs: names written into it hold none of these.
HAPROXY_GROUP = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
HAPROXY_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}")
GROUP_ALLOWED = "inventory group names of A-Z a-z 0-9 _ . - (at most 64 characters, not starting with '.' or '-')"
MODEL_ALLOWED = ("model names of A-Z a-z 0-9 . _ : / @ + - (at most 128 characters, starting with a letter or "
                 "digit; no spaces, quotes, '#', '$' or braces: they would change haproxy's configuration)")


def check_gateway_groups(value: list[str]) -> str | None:
    for item in value:
        if not HAPROXY_GROUP.fullmatch(item):
            return f"must be a list of {GROUP_ALLOWED}; {item!r} is not one"
    if len(set(value)) != len(value):
        return "must name each group once"
    return None


def check_gateway_models(value: dict[str, str]) -> str | None:
    for model, group in value.items():
        if not HAPROXY_MODEL.fullmatch(model):
            return f"must map {MODEL_ALLOWED} to groups; {model!r} is not one"
        if not HAPROXY_GROUP.fullmatch(group):
            return f"must map model names to {GROUP_ALLOWED}; {group!r} is not one"
    return None


# -- types of the contract ------------------------------------------------------------------------------------

TRUE_WORDS = {"true", "yes", "1", "on"}
FALSE_WORDS = {"false", "no", "0", "off"}
# -- systemd unit files ---------------------------------------------------------------------------------------

SYSTEMD_PLAIN = re.compile(r"[A-Za-z0-9_./:@+,=-]+")


def systemd_word(value: str) -> str:
    """
    One argument of an ``ExecStart=``/Quadlet ``Exec=`` line, exactly as given: ``%`` and ``$`` doubled (no
    specifier or variable expansion), and double-quoted with C escapes when it holds anything but plain chars.
    """
    if any(c in value for c in "\n\r\0"):  # a line break ends the setting: no quoting can carry it
        raise ValueError(f"a systemd argument cannot hold a line break or NUL: {value!r}")
    escaped = value.replace("%", "%%").replace("$", "$$")
    if SYSTEMD_PLAIN.fullmatch(value):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_unit_value(value: str) -> str | None:
    """A value for a unit setting that takes no quoting (Image=, Volume=, Environment= parts)."""
    if not SYSTEMD_PLAIN.fullmatch(value):
        return f"{value!r} holds characters a unit file would interpret"
    return None
