"""The cwsr stage alone (halofleet.stages.cwsr)."""

from halofleet.stages import cwsr

cwsr()
