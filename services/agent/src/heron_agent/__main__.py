"""``python -m heron_agent`` is the ``heron`` command."""

from heron_agent.cli import main

main()
