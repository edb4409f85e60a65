"""jinja2 rendering of the files halofleet writes, from the package's ``templates/`` (strict: a missing variable
is an error)."""

from __future__ import annotations

import hashlib
from importlib import resources

import jinja2

from .validators import systemd_word


def _load_templates() -> dict[str, str]:
    """
    Read every template once, at import: rendering then touches no file (operations may run many times).
    Package data read through importlib.resources works for every install scheme (venv, --user, pipx, uv tool,
    a zipped wheel) and for the checkout itself.
    """
    folder = resources.files("halofleet") / "templates"
    return {entry.name: entry.read_text() for entry in folder.iterdir() if entry.name.endswith(".j2")}


ENVIRONMENT = jinja2.Environment(
    loader=jinja2.DictLoader(_load_templates()),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=lambda name: bool(name and name.endswith(".html.j2")),  # config files must stay verbatim
)

# Unit files: every argument of an Exec line goes through this filter (specifiers, variables and quoting).
ENVIRONMENT.filters["systemd_word"] = systemd_word


def render(name: str, **context) -> str:
    return ENVIRONMENT.get_template(name).render(**context)


def sha256_text(content: str) -> str:
    """What the probe's ``sha256sum`` prints for a file holding exactly ``content``."""
    return hashlib.sha256(content.encode()).hexdigest()
