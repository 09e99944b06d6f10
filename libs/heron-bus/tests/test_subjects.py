from typing import ClassVar

import pytest

from heron_bus import subject_for
from heron_bus.subjects import access_log_subject
from heron_core.events import Event, ServiceChanged


def test_an_event_is_published_on_its_noun_and_past_verb() -> None:
    assert subject_for(ServiceChanged) == "heron.events.service.changed"


def test_an_event_type_without_a_noun_has_no_subject() -> None:
    with pytest.raises(ValueError, match="'Event' has no valid noun"):
        subject_for(Event)


def test_a_noun_with_a_wildcard_is_refused() -> None:
    class Sneaky(Event):
        noun: ClassVar[str] = "service.*"
        verb: ClassVar[str] = "changed"

    with pytest.raises(ValueError, match="no valid noun"):
        subject_for(Sneaky)


def test_a_cluster_domain_becomes_the_access_log_subject_suffix() -> None:
    assert access_log_subject("eu.proxy.example.com") == "heron.accesslog.eu.proxy.example.com"


@pytest.mark.parametrize("cluster", ["", "a..b", "a.*", ">", "a b", ".a"])
def test_a_cluster_that_is_not_a_subject_suffix_is_refused(cluster: str) -> None:
    with pytest.raises(ValueError, match="not a valid NATS subject suffix"):
        access_log_subject(cluster)
