"""Settings for the whole test suite.

Hypothesis: no per-example deadline. CI machines are shared and noisy; speed is measured by the
benchmarks in bench/, never by a timed unit test.
"""

from hypothesis import settings

settings.register_profile("heron", deadline=None, print_blob=True)
settings.load_profile("heron")
