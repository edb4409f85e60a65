"""The serve stage alone (halofleet.stages.serve)."""

from halofleet.stages import serve

serve()
