"""The root of every Heron exception tree.

HeronError
 ├── ConfigError          settings that cannot work (refused at start-up)
 └── <service>Error       each service's own tree (e.g. heron_management.errors)
"""


class HeronError(Exception):
    """Base of every exception Heron raises on purpose."""


class ConfigError(HeronError):
    """A setting that cannot work; raised before anything starts."""
