"""
Models as managed artifacts, on top of :mod:`halofleet.contract`: the ``halo_models`` entries and the whole-host
``validate`` that checks them (:mod:`.specs`), the files to fetch, push and stamp (:mod:`.files`), the Hub's
tree API (:mod:`.hub`), GGUF headers (:mod:`.gguf`), KV-cache and weight sizing from a header
(:mod:`.kvcache`), the memory budget of models resident at once (:mod:`.budget`) and whether a host's models fit
its GTT (:mod:`.fit`). Reading a file on a host is passed in as a reader (see
:func:`halofleet.facts.model_header.host_reader`), so this package imports only :mod:`halofleet.contract`.
"""
