"""The stack runner's exception tree.

HeronError                      (heron_core.errors)
 ├── ConfigError                settings that cannot work (heron_core.errors)
 └── StackError                 anything the runner raises on purpose
      └── StartupError          a service could not be brought up; the whole stack stops
           ├── PortInUseError       something already listens where a service must listen
           ├── SpawnError           the service's command could not be executed
           ├── ExitedEarlyError     the service exited before it became ready
           └── NotReadyError        the service did not become ready in time
"""

from heron_core.errors import HeronError


class StackError(HeronError):
    """Base of every error the stack runner raises on purpose."""


class StartupError(StackError):
    """A service could not be brought up; the runner stops what it started and exits 1."""


class PortInUseError(StartupError):
    """Something already accepts connections on a port a service is about to listen on."""


class SpawnError(StartupError):
    """The operating system refused to execute a service's command."""


class ExitedEarlyError(StartupError):
    """A service exited before its ready checks passed."""


class NotReadyError(StartupError):
    """A service kept running but its ready checks did not pass within the timeout."""
