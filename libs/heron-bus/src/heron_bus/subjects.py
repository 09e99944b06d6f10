"""Every NATS name Heron uses: subjects, streams and KV buckets (a wire **contract**, see ARCHITECTURE.md).

Events go to ``heron.events.<noun>.<past-verb>`` (stream ``EVENTS``); access-log records go to
``heron.accesslog.<cluster>`` (stream ``ACCESS_LOGS``).
"""

import re

from heron_core.events import Event

EVENTS_STREAM = "EVENTS"
#: every subject the ``EVENTS`` stream stores
EVENTS_SUBJECTS = "heron.events.>"

ACCESS_LOGS_STREAM = "ACCESS_LOGS"
#: every subject the ``ACCESS_LOGS`` stream stores
ACCESS_LOGS_SUBJECTS = "heron.accesslog.>"

#: issued certificate chains and keys, by domain (written by certmanager, watched by edges)
CERTIFICATES_BUCKET = "certificates"
#: ACME challenge answers, so whichever edge the CA reaches can answer
ACME_CHALLENGES_BUCKET = "acme_challenges"
#: the auth gateway's public signing keys, by ``kid``
AUTH_KEYS_BUCKET = "auth_keys"
#: each login-protected service's auth settings and secret hashes (management → auth gateway)
AUTH_SERVICES_BUCKET = "auth_services"
#: failed password/PIN attempts (the auth gateway's own, shared by its replicas)
AUTH_ATTEMPTS_BUCKET = "auth_attempts"
#: OIDC flows in progress and one-time hand-off codes (the auth gateway's own)
AUTH_FLOWS_BUCKET = "auth_flows"
#: the certmanager's leases on the domains it orders (its own, not a contract)
LEASES_BUCKET = "certmanager_leases"

_EVENT_TOKEN = re.compile(r"[a-z][a-z0-9_]*")
# one subject token: no whitespace, no wildcards, no empty token (nats.io subject rules)
_SUBJECT_TOKEN = re.compile(r"[^\s.*>]+")


def subject_for(event_type: type[Event]) -> str:
    """The subject ``event_type`` is published on: ``heron.events.<noun>.<verb>``."""
    noun = getattr(event_type, "noun", None)
    verb = getattr(event_type, "verb", None)
    for part, value in (("noun", noun), ("verb", verb)):
        if not isinstance(value, str) or not _EVENT_TOKEN.fullmatch(value):
            raise ValueError(f"event type {event_type.__name__!r} has no valid {part}: {value!r}")
    return f"heron.events.{noun}.{verb}"


def access_log_subject(cluster: str) -> str:
    """The subject the edges of ``cluster`` publish access-log records on.

    A cluster is named by its proxy domain, so its dots become several subject tokens; consumers
    subscribe to ``heron.accesslog.>``.
    """
    if not all(_SUBJECT_TOKEN.fullmatch(token) for token in cluster.split(".")):
        raise ValueError(f"cluster {cluster!r} is not a valid NATS subject suffix")
    return f"heron.accesslog.{cluster}"
