"""heron-stack: the whole Heron stack on one machine, every service a supervised subprocess.

Parts: ``specs`` (the table of services: command, environment, ready checks), ``supervisor``
(start in order, stop in reverse), ``child`` (one service: spawn, relay output, restart with
``backoff``, stop its process group; children die with the runner: heron_core.process),
``readiness`` (ready checks), ``output`` (``name |`` prefixed lines), ``runner`` (signals and the
stack's life), ``banner`` (what is printed when ready), ``settings``, ``errors``.
The runner never imports a service: it only runs their commands.
"""
