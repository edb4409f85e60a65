"""
halofleet as a user gets it: the wheel built from the checkout, installed outside it into a fresh venv and with
``pip --user`` (a private ``PYTHONUSERBASE``), then a site written by each one's ``halofleet init`` in an empty
directory. :func:`plans_like_the_checkout` proves such a site's deploy file plans, command for command, what the
checkout's ``deploys/full.py`` plans for the same host and data. Shared by tests/vm/test_fleet.py (a VM) and
tests/nspawn/test_installed_wheel.py (a container, in CI).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .runs import ROOT, dry_run_listing, run_pyinfra


def install_schemes(workdir: Path) -> dict[str, tuple[Path, str, dict[str, str]]]:
    """
    Build the wheel and install it twice under ``workdir``; return {scheme: (the ``halofleet`` script, the python
    that runs it, its environment)} for ``venv`` and ``user``.
    """
    base_python = getattr(sys, "_base_executable", sys.executable)
    dist = workdir / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)], check=True,
                   capture_output=True)
    wheel = str(next(dist.glob("halofleet-*.whl")))
    constraints = str(ROOT / "constraints.txt")
    venv, userbase = workdir / "venv", workdir / "userbase"
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin/pip"), "install", "-q", "-c", constraints, wheel], check=True)
    user_env = {key: value for key, value in os.environ.items() if key != "PYTHONNOUSERSITE"}
    user_env["PYTHONUSERBASE"] = str(userbase)
    subprocess.run([base_python, "-m", "pip", "install", "-q", "--user", "--break-system-packages", "-c",
                    constraints, wheel], check=True, env=user_env)
    return {
        "venv": (venv / "bin/halofleet", str(venv / "bin/python"), dict(os.environ)),
        "user": (userbase / "bin/halofleet", base_python, user_env),
    }


def plans_like_the_checkout(workdir: Path, description: Path, args: tuple[str, ...], managed_file: str,
                            prefix: tuple[str, ...] = ()) -> int:
    """
    The checkout's ``--dry --diff`` of ``deploys/full.py`` (with ``args``) on the hosts of ``description`` lists
    ``managed_file``; each installed scheme imports halofleet from under ``workdir``, and its ``halofleet init``
    site's ``deploy.py`` lists exactly the same commands. ``prefix`` wraps the pyinfra commands (``ip netns exec``).
    Returns the number of listing lines compared.
    """
    checkout = run_pyinfra(description, "deploys/full.py", *args, review=True, prefix=prefix)
    assert checkout.returncode == 0, checkout.stderr[-3000:]
    expected = dry_run_listing(checkout.stderr)
    assert any(managed_file in line for line in expected), expected
    for scheme, (halofleet, python, env) in install_schemes(workdir).items():
        site = workdir / f"site-{scheme}"
        site.mkdir()

        def ask(code: str) -> str:
            return subprocess.run([python, "-c", code], cwd=site, env=env, capture_output=True, text=True,
                                  check=True).stdout.strip()

        assert ask("import halofleet; print(halofleet.__file__)").startswith(str(workdir)), scheme
        init = subprocess.run([str(halofleet), "init", "."], cwd=site, env=env, capture_output=True, text=True)
        assert init.returncode == 0, init.stderr
        inventory = ask("from halofleet.testing import vm; print(vm.INVENTORY_FILE)")  # the installed one
        dry = subprocess.run([*prefix, str(halofleet), "pyinfra", "--dry", "--diff", *args, inventory, "deploy.py"],
                             cwd=site, env={**env, "HALOFLEET_VM_INVENTORY": str(description)}, capture_output=True,
                             text=True, timeout=600)
        assert dry.returncode == 0, dry.stderr[-3000:]
        assert dry_run_listing(dry.stderr) == expected, f"{scheme}: the installed deploy plans differently"
        print(f"{scheme}: {len(expected)} listing lines identical to the checkout's")
    return len(expected)
