"""Undo what halofleet added (halofleet.stages.rollback)."""

from halofleet.stages import rollback

rollback()
