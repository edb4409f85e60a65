"""``python -m halofleet``: the same command as ``halofleet``."""

from .cli import main

main(prog_name="halofleet")
