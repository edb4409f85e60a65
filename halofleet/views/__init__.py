"""
What halofleet shows a person about a fleet, on the control machine: ``verify`` (what is live on each host),
``report`` (the HTML status page, with the last day drawn from the monitor's Prometheus: :mod:`.plots`), ``diff`` (:mod:`.review`, built on :mod:`.changes`), the one-line-per-host run
summary (:mod:`.summary`), ``verify --deep`` and ``qualify`` (:mod:`.correctness`), the memory table of ``halofleet
plan --model`` (:mod:`.sizing`), inventory loading, ``--limit`` and connecting with pyinfra's reasons
(:mod:`.inventory`) and ``halofleet check``, everything known about an inventory without a host (:mod:`.check`).
May import every package below it (contract, models, fleet, box, facts); the deploy, the stages and the CLI
build on it, never the reverse.
"""
