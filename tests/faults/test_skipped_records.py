"""Records the broker leaves out are never skipped for good: by a poll, or by where a log begins.

The embedded broker was seen answering a fetch with offsets ``779..782, 790``
of a partition while ``783..789`` were in the log (issue 14: a read then got a
history missing messages in the middle, which the live apply skipped for good
once a later message of the session was in). Here a hook on the projector's
real consumer leaves chosen records out of the polls, the way the broker did;
everything else is the real broker, Redis and projector. The same broker also
answered ``ListOffsets(earliest)`` past records it held (a rebuild then started
after them); a hook on the real client's answer forces that too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from kafka import KafkaConsumer

from chatlog.producers.admin import ensure_topic
from chatlog.producers.producer import EventProducer
from chatlog.projector import Projector
from chatlog.projector import worker as projector_worker
from chatlog.projector.offset_gaps import GAP_REREADS
from chatlog.projector.replay import Replayer
from chatlog.settings import Settings
from tests.faults.ledger import Ledger, message_event, read_texts, reconcile, wait_caught_up

SESSION = "gappy"
MESSAGES = 10
#: The offsets the hook leaves out of the polls (all of them on the one partition).
HIDDEN = {3, 4, 5}


class SkippingConsumer:
    """The projector's real consumer, with the records at :data:`HIDDEN` left out of its polls.

    ``times`` is how many polls each hidden record is left out of: once, as a
    broker that had not made it readable yet; always, as offsets a log
    really lacks (transaction markers, compaction).
    """

    def __init__(self, consumer: Any, topic: str, *, times: int) -> None:
        self._consumer = consumer
        self._topic = topic
        self._times = times
        #: How often each hidden offset was left out.
        self.hidden: dict[int, int] = {}

    def poll(self, *args: Any, **kwargs: Any) -> dict[Any, list[Any]]:
        batch: dict[Any, list[Any]] = self._consumer.poll(*args, **kwargs)
        for tp, raws in list(batch.items()):
            if tp.topic != self._topic:
                continue
            kept = []
            for raw in raws:
                if raw.offset in HIDDEN and self.hidden.get(raw.offset, 0) < self._times:
                    self.hidden[raw.offset] = self.hidden.get(raw.offset, 0) + 1
                else:
                    kept.append(raw)
            batch[tp] = kept
        return batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


def _project_with_hidden_records(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, *, times: int
) -> tuple[Ledger, Projector, SkippingConsumer]:
    """Publish MESSAGES appends to one session, then project them through the hook."""
    ensure_topic(settings.topic, settings.partitions, settings=settings)
    ledger = Ledger()
    events = [message_event(SESSION, f"{SESSION}#{n}") for n in range(MESSAGES)]
    with EventProducer(settings) as producer:
        ledger.record(events, producer.publish(events))
    assert [a.offset for a in ledger.appends[SESSION]] == list(range(MESSAGES))
    hooks: list[SkippingConsumer] = []
    real_open = projector_worker.open_consumer

    def open_skipping(s: Settings) -> SkippingConsumer:
        hooks.append(SkippingConsumer(real_open(s), s.topic, times=times))
        return hooks[-1]

    monkeypatch.setattr(projector_worker, "open_consumer", open_skipping)
    client = redis.Redis.from_url(settings.redis_url)
    with Projector(settings).running() as projector:
        wait_caught_up(client, settings.namespace, ledger)
    (hook,) = hooks
    return ledger, projector, hook


def test_records_a_poll_skipped_are_read_again_before_anything_after_them_is_applied(
    settings_factory: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offsets 3-5 left out of one poll: the projector seeks back to 3; all 10 messages in order."""
    settings = settings_factory(partitions=1)
    ledger, projector, hook = _project_with_hidden_records(settings, monkeypatch, times=1)
    assert hook.hidden == {3: 1, 4: 1, 5: 1}
    client = redis.Redis.from_url(settings.redis_url)
    assert read_texts(client, settings.namespace, SESSION) == ledger.expected(SESSION)
    figures = reconcile(
        "skipped-records", client, settings.namespace, ledger,
        gaps_reread=projector.stats.gaps_reread, gaps_accepted=projector.stats.gaps_accepted,
    )
    figures.assert_exact()
    assert figures.applied == MESSAGES
    assert figures.extra == {"gaps_reread": 1, "gaps_accepted": 0}


def test_a_gap_the_log_really_has_is_accepted_after_its_rereads(
    settings_factory: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offsets 3-5 missing from every poll: re-read GAP_REREADS times, then the rest is applied."""
    settings = settings_factory(partitions=1)
    ledger, projector, hook = _project_with_hidden_records(settings, monkeypatch, times=1_000)
    # The first poll and every re-read left 3-5 out (a fetch may also return
    # only hidden records, which tells nothing and is not counted).
    assert set(hook.hidden) == HIDDEN
    assert min(hook.hidden.values()) >= GAP_REREADS + 1
    client = redis.Redis.from_url(settings.redis_url)
    expected = [t for n, t in enumerate(ledger.expected(SESSION)) if n not in HIDDEN]
    assert read_texts(client, settings.namespace, SESSION) == expected
    assert (projector.stats.gaps_reread, projector.stats.gaps_accepted) == (1, 1)


def test_a_rebuild_reads_records_before_a_beginning_the_broker_reports_too_late(
    settings_factory: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker says the partition begins at 3 while 0-2 are in it: the rebuild still has 0-9."""
    settings = settings_factory(partitions=1)
    ensure_topic(settings.topic, settings.partitions, settings=settings)
    ledger = Ledger()
    events = [message_event(SESSION, f"{SESSION}#{n}") for n in range(MESSAGES)]
    with EventProducer(settings) as producer:
        ledger.record(events, producer.publish(events))
    real = KafkaConsumer.beginning_offsets
    answered: list[dict[Any, int]] = []

    def too_late(self: KafkaConsumer, partitions: Any) -> dict[Any, int]:
        answered.append({tp: 3 for tp in real(self, partitions)})
        return answered[-1]

    monkeypatch.setattr(KafkaConsumer, "beginning_offsets", too_late)
    progress = Replayer(settings).rebuild(settings.namespace)
    assert [list(a.values()) for a in answered] == [[3]]
    client = redis.Redis.from_url(settings.redis_url)
    assert read_texts(client, settings.namespace, SESSION) == ledger.expected(SESSION)
    assert progress.applied == MESSAGES
