"""Undo what halofleet added (pyinfra -y inventory.py rollback.py)."""

from halofleet.stages import rollback

rollback()
