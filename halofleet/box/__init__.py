"""
One host's decisions, pure: from its data and its preflight probe to everything the stages will write. GTT sizing
from MemTotal (:mod:`.gtt`), the kernel cmdline (:mod:`.cmdline`), the ROCm repository and pins (:mod:`.rocm`), the
engine's unit and model (:mod:`.serving`), the llama.cpp builds refused (:mod:`.engine_build`), the correctness
gate's prompts, tolerances, goldens and verdict (:mod:`.answers`, :mod:`.golden`, :mod:`.gate`), a host's drift from
its stack profile and the kernel stage's remediation (:mod:`.stack`), llama-bench figures against the memory roofline
(:mod:`.bench`), node exporter's drop-in and the textfile collector (:mod:`.exporter`) and :func:`.plan.build_plan`,
which puts them together and refuses the
host before the first change. May import :mod:`halofleet.contract`, :mod:`halofleet.models` and
:mod:`halofleet.fleet`; talks to no host.
"""
