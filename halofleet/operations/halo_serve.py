"""
Serving operations: the model on the host, unit files checked by systemd (and podman's quadlet generator) before
they are installed, and the engine (re)started only when something it depends on changed.
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import FileUploadCommand, FunctionCommand, OperationError, QuoteString, StringCommand, operation
from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS

from ..box.gate import GateSpec
from ..contract import paths
from ..fleet.gateway import Slot
from . import halo_files
from .halo_models import record_script
from .halo_rollout import ROLLOUT_ATTR, restart_halted, restart_in_turn  # noqa: F401 (re-exported)

QUADLET_GENERATORS = ("/usr/libexec/podman/quadlet", "/usr/lib/podman/quadlet")
DAEMON_RELOAD = StringCommand("systemctl", "daemon-reload")


def unit_check(unit_name: str) -> str:
    """
    Check a candidate unit (``$HALO_CANDIDATE``) under its real name: ``systemd-analyze verify`` for a service;
    for a Quadlet ``.container``, podman's generator in dry-run mode first, then ``systemd-analyze verify`` of
    the service it generates. Errors go to stderr, where pyinfra shows them.
    """
    service = unit_name.rsplit(".", 1)[0] + ".service"
    lines = [
        'd=$(mktemp -d) && trap \'rm -rf "$d"\' EXIT',
        f'cp "$HALO_CANDIDATE" "$d/{unit_name}"',
    ]
    if unit_name.endswith(".container"):
        generators = " ".join(QUADLET_GENERATORS)
        lines += [
            f"q=; for g in {generators}; do [ -x $g ] && q=$g && break; done",
            '[ -n "$q" ] || { echo "podman quadlet generator not found (podman >= 4.4 needed)" >&2; exit 1; }',
            'QUADLET_UNIT_DIRS="$d" "$q" -dryrun > "$d/out" || exit 1',
            f'sed -n "/^---{service}---$/,/^---/p" "$d/out" | sed "1d;/^---/d" > "$d/{service}"',
            f'[ -s "$d/{service}" ] || {{ echo "quadlet generated no {service}" >&2; exit 1; }}',
        ]
    lines.append(f'systemd-analyze verify "$d/{service}"')
    return "\n".join(lines)


@operation()
def unit_file(path: str, content: str, current_sha256: str | None = halo_files.UNKNOWN):
    """
    Install a systemd unit or Quadlet file after systemd (and quadlet) accept it, then reload systemd.

    + path: ``/etc/systemd/system/NAME.service`` or ``/etc/containers/systemd/NAME.container``
    + content: the rendered unit
    + current_sha256: the installed file's SHA-256 if known (None: absent)

    **Example:**

    .. code:: python

        unit_file(name="llama-server unit", path="/etc/systemd/system/halo-serve.service", content=unit)
    """
    unit_name = path.rsplit("/", 1)[-1]
    if not unit_name.endswith((".service", ".container")):
        raise OperationError(f"unit_file manages .service and .container files, not {path}")
    yield from halo_files.checked_file._inner(
        path=path, content=content, mode="0644", check=unit_check(unit_name), activate=DAEMON_RELOAD,
        current_sha256=current_sha256,
    )


@operation()
def model_file(path: str, source: str, owner: str, source_sha256: str, current_sha256: str | None = None):
    """
    Push a model file from the control machine, owned by the service user, replaced atomically.

    + path: where the model goes on the host
    + source: the file on the control machine
    + owner: user (and group) owning the file on the host
    + source_sha256: SHA-256 of ``source``
    + current_sha256: SHA-256 of the file on the host (None: absent)

    **Example:**

    .. code:: python

        model_file(name="Model", path="/var/lib/halofleet/models/m.gguf", source="m.gguf", owner="halo",
                   source_sha256="...", current_sha256=None)
    """
    if current_sha256 == source_sha256:
        host.noop(f"{path} is up to date")
        return
    directory, name = path.rsplit("/", 1)
    candidate = f"{directory}/.{name}.halofleet-new"
    # Every value is quoted for the inner shell; QuoteString quotes the whole script for the outer one.
    owned, new, final = shlex.quote(f"{owner}:{owner}"), shlex.quote(candidate), shlex.quote(path)
    check_line = shlex.quote(f"{source_sha256}  {candidate}")
    yield StringCommand("mkdir", "-p", QuoteString(directory))
    yield FileUploadCommand(source, candidate)
    yield StringCommand(
        "sh", "-c", QuoteString(
            f"set -e; chown {owned} {new}; chmod 0640 {new}; "
            f"echo {check_line} | sha256sum -c --quiet - ; mv -f {new} {final}; "
            + record_script(path, source_sha256)  # verified: the next run stats it instead of hashing it
        ),
    )


@operation()
def image_pulled(image: str, present: bool):
    """
    The engine's container image in podman's storage before its unit starts: a multi-GB pull then counts
    neither against the unit's start timeout nor as an engine failure, and a wrong name or unreachable
    registry is a clear error here.

    + image: fully qualified image reference (a digest pins it)
    + present: the probe found it in podman's storage already

    **Example:**

    .. code:: python

        image_pulled(name="vLLM image", image="docker.io/kyuz0/vllm-therock-gfx1151:latest", present=False)
    """
    if present:
        host.noop(f"image {image} is present")
        return
    quoted = shlex.quote(image)
    failure = shlex.quote(f"halofleet: could not pull {image} (is the name right and the registry reachable?)")
    yield StringCommand("sh", "-c", QuoteString(
        f"podman image exists {quoted} || podman pull --quiet {quoted} >/dev/null || {{ echo {failure} >&2; exit 1; }}"
    ))


@operation()
def owned_directory(path: str, owner: str, mode: str = "0750", current: str | None = None):
    """
    A directory owned by the service user (models, caches).

    + path: absolute directory path
    + owner: user (and group) to own it
    + mode: octal permissions
    + current: ``"<owner> <mode>"`` as the probe saw it (None: absent)

    **Example:**

    .. code:: python

        owned_directory(name="Model dir", path="/var/lib/halofleet/models", owner="halo")
    """
    if current == f"{owner} {mode.lstrip('0')}":
        host.noop(f"{path} exists, owned by {owner}")
        return
    yield StringCommand("install", "-d", "-o", QuoteString(owner), "-g", QuoteString(owner), "-m",
                        QuoteString(mode), QuoteString(path))


ENGINE_LOG_LINES = 40  # the engine's own last lines shown when it fails to come up (each cut at 300 bytes)


def engine_log_on_failure(service: str) -> str:
    """
    Shell: from here on, a failing script first shows the engine's own log lines of this start (its journal
    since now, bounded), so the reason is llama-server's ("invalid argument ..."), not only ours. Lines that
    carry the API key or an authorization header are left out.
    """
    return "\n".join([
        "t0=$(date +%s)",
        f"k=$(sed -n 's/^[A-Z_]*API_KEY=//p' {paths.SERVE_ENV} 2>/dev/null | head -n 1)",
        "engine_log() { echo 'halofleet: last lines of the engine log:' >&2; "
        f"journalctl -u {service} --since \"@$t0\" --no-pager -q 2>/dev/null --output=cat| tail -n {ENGINE_LOG_LINES} "
        "| cut -c1-300 | grep -viE 'authorization|bearer|api[-_]key' "
        "| grep -vF -- \"${k:-Authorization}\" >&2; }",
        "trap 'rc=$?; [ $rc = 0 ] || engine_log' EXIT",
    ])


def completion_check(url: str, service: str, timeout: int = 300, completion: bool = True) -> str:
    """
    Shell: the restarted engine answers ``/health`` with 200 and a real one-token completion (the model id from
    ``/v1/models``); ``completion=False`` (``halo_restart_check: health``): ``/health`` only. The API key is read on
    the host and handed to curl on stdin, never in an argument.
    """
    fail = "halofleet: {what} after the restart of " + service + "; the rolling restart stops here"
    lines = [
        f"url={shlex.quote(url)}",
        f"key=$(sed -n 's/^[A-Z_]*API_KEY=//p' {paths.SERVE_ENV} 2>/dev/null | head -n 1)",
        "auth() { [ -z \"$key\" ] || printf 'header = \"Authorization: Bearer %s\"\\n' \"$key\"; }",
        "code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 \"$url/health\")",
        f'[ "$code" = 200 ] || {{ echo {shlex.quote(fail.format(what="no /health 200"))} "(HTTP $code)" >&2; '
        "exit 1; }",
    ]
    if not completion:  # halo_restart_check: health
        return "\n".join(lines)
    return "\n".join(lines + [
        "m=$(auth | curl -s -K - --max-time 30 \"$url/v1/models\")",
        "id=$(printf '%s' \"$m\" | grep -o '\"id\" *: *\"[^\"]*\"' | head -n 1 | sed 's/.*: *\"//; s/\"$//')",
        "body=$(printf '{\"model\":\"%s\",\"prompt\":\"Hello\",\"max_tokens\":1,\"temperature\":0}' \"$id\")",
        f"r=$(auth | curl -s -K - --max-time {int(timeout)} -H 'Content-Type: application/json' -d \"$body\" "
        "-w '\\n%{http_code}' \"$url/v1/completions\")",
        "code=$(printf '%s' \"$r\" | tail -n 1)",
        f'if [ "$code" != 200 ] || ! printf \'%s\' "$r" | grep -q \'"choices"\'; then '
        f'echo {shlex.quote(fail.format(what="no completion"))} "(HTTP $code)" >&2; exit 1; fi',
    ])


@operation()
def engine_running(restart: bool, start: bool, enable: bool, stamp: str, service: str = paths.SERVE_SERVICE,
                   rolling_url: str | None = None, gateways: tuple[Slot, ...] = (), gate: GateSpec | None = None,
                   check: str = "completion"):
    """
    (Re)start the engine and wait until it answers; on failure show systemd's status and the journal tail.

    The unit's ``ExecStartPost`` waits for the health endpoint, so ``systemctl restart`` returns only once the
    engine serves (or fails, bounded by ``TimeoutStartSec``).

    Rolling (``rolling_url`` set, run with ``_parallel=N``): after the restart the engine must also answer
    ``/health`` with 200 and a real completion; one that does not stops the rollout: every host of a later batch
    is failed instead of restarted (a run-wide flag, checked first by each host's restart).

    + restart: the unit, its environment or the model changed
    + start: nothing changed but the engine is not running
    + enable: ``systemctl enable`` (plain units; Quadlet units are wanted by their generated [Install])
    + stamp: identifies the model the engine now runs; stored for the next run's comparison
    + service: the systemd service name
    + rolling_url: the engine's base URL, asked for /health and a completion before the next batch restarts
    + check: ``completion`` (/health and a real completion) or ``health`` (/health only), halo_restart_check
    + gateways: where this host is a gateway's backend (rolling only): drained on each gateway host before the
      restart (no new request, those in flight finish) and put back after it, once haproxy's checks see it UP
    + gate: the correctness gate (:mod:`halofleet.box.gate`): after the restart the engine must reproduce its
      golden before it goes back into rotation; a host that does not fails (and stops a rolling restart) like one
      that is not serving, and stays drained

    **Example:**

    .. code:: python

        engine_running(name="Engine serving", restart=True, start=False, enable=True, stamp="sha256:...",
                       rolling_url="http://127.0.0.1:8080", _parallel=1)
    """
    if not (restart or start):
        host.noop(f"{service} is running and up to date")
        return
    verb = "restart" if restart else "start"
    script = [
        engine_log_on_failure(service),
        f"systemctl reset-failed {service} 2>/dev/null || true",  # a crash-looped unit refuses to start otherwise
        f"if ! systemctl {verb} {service}; then "
        f"systemctl status --no-pager --lines=0 {service} >&2 || true; "
        f"echo 'halofleet: {service} did not become healthy' >&2; exit 1; fi",
        f"mkdir -p {paths.SERVE_STAMP.rsplit('/', 1)[0]}",
        # Only now is the new configuration live: the next run compares against this (a lost restart is redone).
        f"printf '%s\\n' {shlex.quote(stamp)} > {paths.SERVE_STAMP}",
    ]
    if enable:
        script.insert(1, f"systemctl enable --quiet {service}")
    if rolling_url is None and gate is None:
        yield StringCommand("sh", "-c", QuoteString("\n".join(script)))
        return
    if rolling_url is not None:
        # before the stamp: a failed engine is retried
        script.insert(-2, completion_check(rolling_url, service, completion=check == "completion"))
    command = StringCommand("sh", "-c", QuoteString("\n".join(script)))
    # The op's connector arguments (_sudo ...), which a FunctionCommand does not receive on its own.
    connector = {key: value for key, value in (host.current_op_global_arguments or {}).items()
                 if key in CONNECTOR_ARGUMENT_KEYS}
    # Draining is for an engine in rotation: one that is not running yet is not in any backend's rotation.
    yield FunctionCommand(restart_in_turn, (command, connector, tuple(gateways) if restart else (), gate), {})


@operation()
def engine_stopped(present: bool, service: str = paths.SERVE_SERVICE):
    """
    Stop and disable the engine before its unit goes (stopping kills its whole cgroup: no engine left behind).

    + present: the unit file exists or the service is active (from the probe)
    + service: the systemd service name

    **Example:**

    .. code:: python

        engine_stopped(name="Stop the engine", present=True)
    """
    if not present:
        host.noop(f"{service} is not installed")
        return
    # reset-failed: a unit that had failed stays listed as failed after its file is gone.
    yield StringCommand("sh", "-c", QuoteString(
        f"systemctl disable --now --quiet {service} 2>/dev/null || systemctl stop {service} 2>/dev/null || true; "
        f"systemctl reset-failed {service} 2>/dev/null || true"
    ))


def user_record(user: str, kind: str) -> str:
    """The record (in the backups' originals) of whether the service account ``user`` was created by halofleet
    (``created``) or existed before its first touch (``existed``)."""
    return f"{paths.BACKUP_ORIGINALS}/user__{user}.{kind}"


@operation()
def user_origin_recorded(user: str, created: bool, recorded: bool):
    """
    Record, once, whether this run created the service account or found it: the rollback removes an account
    halofleet created (with its home) and leaves one that existed before.

    + user: the service user's name
    + created: the plan found no such account (the preceding ``server.user`` created it)
    + recorded: the host holds a record already

    **Example:**

    .. code:: python

        user_origin_recorded(name="Record the service user's origin", user="halo", created=True, recorded=False)
    """
    if recorded and not created:
        host.noop(f"the origin of {user} is recorded")
        return
    record = shlex.quote(user_record(user, "created" if created else "existed"))
    yield StringCommand("sh", "-c", QuoteString(
        f"mkdir -p -m 0700 {paths.BACKUP_ORIGINALS} && rm -f {shlex.quote(user_record(user, 'existed'))} "
        f"&& : > {record}"))


@operation()
def created_user_removed(user: str, created: bool, present: bool):
    """
    Rollback: a service account halofleet created is removed with its home (``userdel --remove``), and its record.

    + user: the service user's name
    + created: the record says halofleet created it
    + present: the account exists (from the probe)

    **Example:**

    .. code:: python

        created_user_removed(name="Remove service user halo", user="halo", created=True, present=True)
    """
    if not created:
        host.noop(f"{user} was not created by halofleet")
        return
    remove = f"userdel --remove {shlex.quote(user)} 2>/dev/null; " if present else ""
    yield StringCommand("sh", "-c", QuoteString(
        f"{remove}if id {shlex.quote(user)} >/dev/null 2>&1; then echo 'halofleet: could not remove {user}' >&2; "
        f"exit 1; fi; rm -f {shlex.quote(user_record(user, 'created'))}"))
