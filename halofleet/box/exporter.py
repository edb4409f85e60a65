"""
One host's part of seeing the fleet, pure: node exporter's drop-in (address, collectors, basic auth), and
halofleet's textfile collector (its script, service and timer) with the values of this host's plan baked in.

The textfile script is one shell function per gauge (``gauge_NAME`` in ``templates/halo-textfile.sh.j2``) named in
:data:`GAUGES`: a new gauge is one function there and one word here.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass

from ..contract import paths, stacks
from ..contract.templating import render
from ..fleet.monitor import exporter_bind, exporter_web_config
from .plan import HostPlan
from .stack import FIRMWARE_PACKAGE_ITEM, KERNEL_ITEM, KERNEL_PACKAGE_ITEM

GAUGES = ("faults", "gtt", "engine", "bench", "stack")
# Bounds of one run: the newest kernel log lines read, and their bytes (a kernel line is at most ~1 KiB).
JOURNAL_LINES = 20000
JOURNAL_BYTES = 8 * 1024 * 1024
TEXTFILE_TIMEOUT_S = 30


@dataclass(frozen=True)
class ExporterPlan:
    listen: str  # address:port node exporter listens on
    dropin: str
    web_config: str | None  # None: no password (loopback, or halo_allow_unauthenticated)
    script: str
    service: str
    timer: str

    @property
    def files(self) -> tuple[tuple[str, str | None, str], ...]:
        """(path, content or None: absent, mode) in the order they are written."""
        return (
            (paths.EXPORTER_WEB, self.web_config, "0600"),
            (paths.TEXTFILE_SCRIPT, self.script, "0755"),
            (paths.TEXTFILE_UNIT, self.service, "0644"),
            (paths.TEXTFILE_TIMER, self.timer, "0644"),
            (paths.EXPORTER_DROPIN, self.dropin, "0644"),
        )


def _engine_values(plan: HostPlan) -> dict[str, str] | None:
    serve = plan.serve
    if serve is None or not serve.watched_paths:
        return None
    argv_sha256 = ""
    if serve.exec_argv is not None:
        argv_sha256 = hashlib.sha256("".join(arg + "\0" for arg in serve.exec_argv).encode()).hexdigest()
    return {
        "unit_path": shlex.quote(serve.unit_path),
        "service": shlex.quote(paths.SERVE_SERVICE),
        "stamp_path": shlex.quote(paths.SERVE_STAMP),
        "watched": " ".join(shlex.quote(path) for path in serve.watched_paths),
        "config_stamp": shlex.quote(serve.config_stamp),
        "model_stamp": shlex.quote(serve.model_stamp),
        "argv_sha256": argv_sha256,
    }


def stack_values(profile: stacks.StackProfile | None) -> dict[str, object] | None:
    """
    What the collector checks of the host's stack profile (``halo_stack``) on the host itself: the items that drift
    without halofleet (the kernel booted, the profile's packages installed and held), named as verify names them.
    The rest of the profile (firmware date, MES, CWSR, ROCm, image) is read by ``halofleet verify`` only.
    """
    if profile is None:
        return None
    packages = [(KERNEL_PACKAGE_ITEM, str(profile.kernel_package.value))]
    if profile.firmware_package.value:
        packages.append((FIRMWARE_PACKAGE_ITEM, str(profile.firmware_package.value)))
    # Names and packages are bound by the profile's grammars (PROFILE_NAME, DEBIAN_PACKAGE_NAME): no quote or
    # backslash can reach a label value; the shell still gets them quoted.
    return {"profile": profile.name, "kernel_item": KERNEL_ITEM,
            "kernel_release": shlex.quote(str(profile.kernel_release.value)),
            "packages": [(item, shlex.quote(package)) for item, package in packages]}


def textfile_script(plan: HostPlan, gauges: tuple[str, ...] = GAUGES, cmdline: str = "/proc/cmdline") -> str:
    return render(
        "halo-textfile.sh.j2", output=shlex.quote(paths.TEXTFILE_OUTPUT), gauges=shlex.quote(" ".join(gauges)),
        journal_lines=JOURNAL_LINES, journal_bytes=JOURNAL_BYTES,
        gtt_planned_bytes=plan.gtt.pages_limit * 4096 if plan.gtt else None,
        engine=_engine_values(plan), bench_path=shlex.quote(paths.BENCH_RESULT),
        stack=stack_values(stacks.resolve(plan.config.stack)), cmdline=shlex.quote(cmdline),
    )


def plan_exporter(plan: HostPlan) -> ExporterPlan:
    config = plan.config
    bind = exporter_bind(config)
    listen = f"[{bind}]:{config.exporter_port}" if ":" in bind else f"{bind}:{config.exporter_port}"
    web = exporter_web_config(config.host, config.exporter_password) if config.exporter_password else None
    args = [f"--web.listen-address={listen}", "--collector.drm",
            f"--collector.textfile.directory={paths.TEXTFILE_DIR}"]
    return ExporterPlan(
        listen=listen,
        dropin=render("node-exporter-dropin.conf.j2", args=args, web_config=paths.EXPORTER_WEB if web else None),
        web_config=web,
        script=textfile_script(plan),
        service=render("halo-textfile.service.j2", output=paths.TEXTFILE_OUTPUT, script=paths.TEXTFILE_SCRIPT,
                       timeout=TEXTFILE_TIMEOUT_S),
        timer=render("halo-textfile.timer.j2", interval=config.textfile_interval_s),
    )
