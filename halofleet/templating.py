"""jinja2 rendering of the files halofleet writes, from ``templates/`` (strict: a missing variable is an error)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import jinja2

from .validators import systemd_word

# The checkout's templates/ first, then where `pip install .` puts them.
TEMPLATE_DIRS = (
    Path(__file__).resolve().parent.parent / "templates",
    Path(sys.prefix) / "share" / "halofleet" / "templates",
)


def _load_templates() -> dict[str, str]:
    """Read every template once, at import: rendering then touches no file (operations may run many times)."""
    for directory in TEMPLATE_DIRS:
        if directory.is_dir():
            return {path.name: path.read_text() for path in sorted(directory.glob("*.j2"))}
    raise RuntimeError(f"halofleet templates not found in {', '.join(map(str, TEMPLATE_DIRS))}")


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
