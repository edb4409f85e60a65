"""halofleet: provision AMD Strix Halo (gfx1151) boxes into LLM servers with pyinfra, and keep a fleet there."""

__version__ = "0.4.0.dev0"  # the one place the version is set (pyproject reads it)
