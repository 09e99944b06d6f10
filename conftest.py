"""Settings for the whole test suite.

Hypothesis: no per-example deadline. CI machines are shared and noisy; speed is measured by the
benchmarks in bench/, never by a timed unit test.

Parallel runs (pytest-xdist, as ``scripts/test`` runs the suite): with ``--dist=loadscope`` the
integration and end-to-end modules under ``tests/`` go whole to one worker each, because their
tests share servers and stacks set up once per module; every other test is a unit of its own,
handed to whichever worker is free. (xdist's own ``loadgroup`` would say this with marks, but
its grouping does not take effect with pytest 9.2: pytest-dev/pytest-xdist#1386.)
"""

from typing import Any

import pytest
from hypothesis import settings
from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

settings.register_profile("heron", deadline=None, print_blob=True)
settings.load_profile("heron")

SHARED_PER_MODULE = "tests/"


class ModulesUnderTestsTogether(LoadScopeScheduling):  # type: ignore[misc]
    """``loadscope`` with a module as the unit under ``tests/`` and a test elsewhere."""

    def _split_scope(self, nodeid: str) -> str:
        path = nodeid.split("::", 1)[0]
        return path if path.startswith(SHARED_PER_MODULE) else nodeid


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadscope":
        return None
    # in collection order, where testpaths puts the long end-to-end modules first; xdist would
    # otherwise start with the scopes of most tests, i.e. the short unit tests
    config.option.loadscopereorder = False
    return ModulesUnderTestsTogether(config, log)
