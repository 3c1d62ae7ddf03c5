"""One benchmark run: every measure next to its baseline, on one broker and one Redis.

:func:`run_benchmarks` is what ``chatlog bench`` and ``python -m benchmarks``
call. It uses ``KAFKA_BOOTSTRAP_SERVERS``/``REDIS_URL`` when set, else an
embedded broker and Redis; it creates its own topics and namespaces and
deletes only those.
"""

from __future__ import annotations

import importlib.util
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from kafka import KafkaAdminClient
from kafka.errors import KafkaError
from rich.console import Console

from chatlog.benchmarks import append, encryption, peer, reads, throughput, visibility
from chatlog.benchmarks.config import BenchConfig
from chatlog.benchmarks.projector_process import ProjectorProcess
from chatlog.benchmarks.report import BenchReport, Measure, Target, machine_facts
from chatlog.benchmarks.timing import percentile
from chatlog.benchmarks.workload import encode_all, message_events, seed_topic
from chatlog.cli.devstack import EmbeddedStack
from chatlog.errors import TopicError
from chatlog.histories.store import ChatLog
from chatlog.producers.admin import ensure_topic
from chatlog.producers.producer import EventProducer
from chatlog.projector.replay import Replayer
from chatlog.settings import Settings

#: Where results go unless told otherwise (git-ignored).
DEFAULT_RESULTS = Path("benchmarks/results/latest.json")

_MB = 1024 * 1024


@contextmanager
def bench_settings(
    base: Settings | None = None, *, embedded: bool | None = None
) -> Iterator[tuple[Settings, str]]:
    """Settings for a run and a description of the services it uses.

    The services of ``base`` (default ``Settings.from_env()``) when ``embedded``
    is false; an embedded stack living as long as the block when it is true.
    ``None`` picks the embedded stack unless ``KAFKA_BOOTSTRAP_SERVERS`` or
    ``REDIS_URL`` is set.
    """
    if embedded is None:
        embedded = not (os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or os.environ.get("REDIS_URL"))
    configured = not embedded
    settings = base or Settings.from_env()
    unique = uuid.uuid4().hex[:8]
    overrides: dict[str, object] = {
        "topic": f"bench-{unique}",
        "namespace": f"bench:{unique}",
        "consumer_group": f"bench-{unique}",
        # The embedded broker needs short group timeouts to join in seconds.
        "consumer_session_timeout_ms": 6000,
        "consumer_heartbeat_interval_ms": 1000,
        "read_timeout_s": 30.0,
    }
    if configured:
        yield settings.with_(**overrides), "configured services"
        return
    with EmbeddedStack() as stack:
        yield stack.settings(settings, **overrides), "embedded Tansu broker + redis-server"


def run_benchmarks(
    config: BenchConfig,
    *,
    settings: Settings | None = None,
    embedded: bool | None = None,
    json_path: Path | None = DEFAULT_RESULTS,
    console: Console | None = None,
) -> BenchReport:
    """Run every benchmark of ``config``, print progress, write JSON, return the report.

    ``settings`` and ``embedded`` choose the services as in :func:`bench_settings`.

    Raises:
        ChatLogError: a benchmark could not complete (the services failed, the
            projector did not keep up, a history returned wrong messages).
    """
    console = console or Console(stderr=True)
    started = time.monotonic()
    with bench_settings(settings, embedded=embedded) as (base, services):
        report = BenchReport(quick=config.quick, services=services, machine=machine_facts())
        run = _Run(config, base, report, console)
        try:
            run.all()
        finally:
            run.cleanup()
    report.seconds = time.monotonic() - started
    if json_path is not None:
        report.write_json(json_path)
    return report


class _Run:
    """The steps of one run, sharing settings, the report and the cleanup list."""

    def __init__(
        self, config: BenchConfig, base: Settings, report: BenchReport, console: Console
    ) -> None:
        self.config = config
        self.base = base
        self.report = report
        self.console = console
        self.topics: list[str] = []
        self.namespaces: list[str] = []
        self.single_p50 = 0.0
        self.read_p50 = 0.0

    def settings(self, suffix: str) -> Settings:
        """Settings on a topic, group and namespace of this step's own."""
        settings = self.base.with_(
            topic=f"{self.base.topic}-{suffix}",
            namespace=f"{self.base.namespace}:{suffix}",
            consumer_group=f"{self.base.consumer_group}-{suffix}",
        )
        # Every topic a projector on these settings creates, for the cleanup.
        self.topics += [settings.topic, settings.dlq_topic, settings.checkpoint_topic]
        self.namespaces.append(settings.namespace)
        return settings

    def step(self, what: str, action: Callable[[], None]) -> None:
        began = time.monotonic()
        self.console.print(f"[dim]bench:[/] {what} ...")
        action()
        self.console.print(f"[dim]bench:[/] {what} done in {time.monotonic() - began:.1f}s")

    def all(self) -> None:
        self.step("projector and rebuild throughput", self.throughput)
        self.step("appends", self.appends)
        self.step("reads", self.reads)
        self.step("projector memory and append -> visible", self.projector_process)
        self.step("KafkaChatMessageHistory peer", self.peer)
        self.step("encryption on vs off", self.encryption)

    # -- steps ------------------------------------------------------------

    def throughput(self) -> None:
        c = self.config
        settings = self.settings("throughput")
        ensure_topic(settings.topic, settings.partitions, settings.replication_factor,
                     settings=settings)
        with EventProducer(settings) as producer:
            records = encode_all(
                message_events(c.throughput_events, c.throughput_sessions, c.message_bytes),
                producer,
            )
        seed_topic(settings, records)
        raw = throughput.raw_consumer_rate(settings, c.throughput_events)
        live = throughput.projector_rate(settings, c.throughput_events)
        # Right after the live run: each run leaves the broker and Redis
        # holding more, which slows the next (a live run after the rest was
        # ~10% slower), so with the confluent run in between the ratio carried
        # that drift (0.84-0.97 x in noisy runs; 1.05-1.33 x back to back).
        rebuilt_ns = f"{settings.namespace}:rebuilt"
        self.namespaces.append(rebuilt_ns)
        rebuild = throughput.rebuild_rate(settings, rebuilt_ns)
        # The same projector on the optional confluent-kafka transport: the same
        # topic, its own group and namespace, the same raw kafka-python baseline.
        confluent_settings = settings.with_(
            transport="confluent",
            consumer_group=f"{settings.consumer_group}-confluent",
            namespace=f"{settings.namespace}:confluent",
        )
        confluent: throughput.Rate | None = None
        unavailable = _confluent_unavailable()
        if not unavailable:
            self.namespaces.append(confluent_settings.namespace)
            confluent = throughput.projector_rate(confluent_settings, c.throughput_events)
        sizes = (f"{c.throughput_events:,} events of {c.message_bytes} B over "
                 f"{c.throughput_sessions:,} sessions")
        self.report.add(Measure(
            "projector throughput", "events/s", live.per_second,
            "raw kafka-python consumer", raw.per_second, Target("ratio_min", 0.6), sizes,
        ))
        self.report.add(Measure(
            "projector throughput, confluent transport", "events/s",
            confluent.per_second if confluent else None,
            "raw kafka-python consumer", raw.per_second, Target("ratio_min", 0.6),
            unavailable or f"{sizes}; CHATLOG_TRANSPORT=confluent",
        ))
        self.report.add(Measure(
            "rebuild throughput", "events/s", rebuild.per_second,
            "live projector", live.per_second, Target("ratio_min", 1.0),
            "Replayer.rebuild into a fresh namespace",
        ))

    def appends(self) -> None:
        c = self.config
        settings = self.settings("append")
        with ChatLog(settings) as chatlog:
            batched = append.batched_append(
                chatlog, c.append_events, c.append_batch, c.message_bytes
            )
            single = append.single_append(chatlog, c.sync_samples, c.message_bytes)
        self.single_p50 = percentile(single.chatlog, 50)
        batch_note = (f"add_messages of {c.append_batch} messages, {c.append_events:,} in all; "
                      "raw: kafka-python defaults with acks=all, a flush per batch")
        self.report.add(Measure(
            "batched append throughput", "msgs/s", batched.chatlog,
            "raw KafkaProducer, same records", batched.raw, Target("ratio_min", 0.8), batch_note,
        ))
        for pct, target in ((50, Target("ratio_max", 1.5)), (99, Target("reported"))):
            self.report.add(Measure(
                f"sync add_messages(1 message) p{pct}", "ms",
                percentile(single.chatlog, pct) * 1000,
                "raw send().get()", percentile(single.raw, pct) * 1000, target,
                f"{c.sync_samples} samples each, interleaved",
            ))
        # The same appends with the producer on the optional confluent-kafka
        # transport, next to the same raw kafka-python baselines (measured again,
        # interleaved with these samples).
        unavailable = _confluent_unavailable()
        confluent_batched: append.AppendThroughput | None = None
        confluent_single: append.AppendLatency | None = None
        if not unavailable:
            confluent = self.settings("append-confluent").with_(transport="confluent")
            with ChatLog(confluent) as chatlog:
                confluent_batched = append.batched_append(
                    chatlog, c.append_events, c.append_batch, c.message_bytes
                )
                confluent_single = append.single_append(chatlog, c.sync_samples, c.message_bytes)
        self.report.add(Measure(
            "batched append throughput, confluent transport", "msgs/s",
            confluent_batched.chatlog if confluent_batched else None,
            "raw KafkaProducer, same records",
            confluent_batched.raw if confluent_batched else batched.raw,
            Target("ratio_min", 0.8), unavailable or f"{batch_note}; CHATLOG_TRANSPORT=confluent",
        ))
        for pct, target in ((50, Target("ratio_max", 1.5)), (99, Target("reported"))):
            self.report.add(Measure(
                f"sync add_messages(1 message) p{pct}, confluent transport", "ms",
                percentile(confluent_single.chatlog, pct) * 1000 if confluent_single else None,
                "raw send().get()",
                percentile((confluent_single or single).raw, pct) * 1000, target,
                unavailable or f"{c.sync_samples} samples each, interleaved; "
                "CHATLOG_TRANSPORT=confluent",
            ))

    def reads(self) -> None:
        c = self.config
        settings = self.settings("read")
        with ChatLog(settings) as chatlog:
            result = reads.session_reads(chatlog, c.read_messages, c.read_samples, c.message_bytes)
        self.read_p50 = percentile(result.chatlog, 50)
        for pct, target in ((50, Target("ratio_max", 0.8)), (99, Target("reported"))):
            self.report.add(Measure(
                f"read of a {c.read_messages}-message session p{pct}", "ms",
                percentile(result.chatlog, pct) * 1000,
                "RedisChatMessageHistory", percentile(result.langchain, pct) * 1000, target,
                f"{c.read_samples} reads each, interleaved, same Redis",
            ))

    def projector_process(self) -> None:
        c = self.config
        settings = self.settings("process")
        ensure_topic(settings.topic, settings.partitions, settings.replication_factor,
                     settings=settings)
        ensure_topic(settings.dlq_topic, settings.partitions, settings.replication_factor,
                     settings=settings)
        small, large = c.memory_sessions
        # The same number of events in both measured phases, so that only the
        # number of sessions differs, and both after a warm-up of as many
        # events: the first reading used to include the allocator's and the
        # young-object collector's growth to their working size (one run in
        # three read 1.10-1.16 x), which is not memory that grows with sessions.
        with EventProducer(settings) as producer, ProjectorProcess(settings) as child:
            few = encode_all(message_events(large, small, c.message_bytes), producer)
            seed_topic(settings, few)
            child.wait_applied(large)
            seed_topic(settings, few)
            rss_small = child.wait_applied(2 * large)
            seed_topic(settings, encode_all(
                message_events(large, large, c.message_bytes, first_session=small),
                producer,
            ))
            rss_large = child.wait_applied(3 * large)
        visible = self.visible(self.settings("visible"))
        unavailable = _confluent_unavailable()
        confluent = None if unavailable else self.visible(
            self.settings("visible-confluent").with_(transport="confluent")
        )
        self.report.add(Measure(
            f"projector RSS at {large:,} sessions", "MB", rss_large / _MB,
            f"at {small:,} sessions", rss_small / _MB, Target("ratio_max", 1.1),
            f"projector in its own process, {large:,} events over each set of sessions, "
            f"after a warm-up of {large:,}; flat = within 10%",
        ))
        for label, seen in (("", visible), (", confluent transport", confluent)):
            if seen is None:
                note = unavailable
            else:
                note = (f"target rate {c.visible_rate:,}/s for {c.visible_seconds:g}s, "
                        f"achieved {seen.rate:,.0f}/s; {visibility.WRITERS} writer threads "
                        "sharing one producer; projector and reader each in a process of their "
                        f"own; a fresh topic; the writer's own acks p50 "
                        f"{percentile(seen.acks, 50) * 1000:.1f} ms, "
                        f"p99 {percentile(seen.acks, 99) * 1000:.1f} ms")
                if label:
                    note += "; CHATLOG_TRANSPORT=confluent (producer and projector)"
            for pct, target in ((50, Target("reported")), (99, Target("value_max", 20))):
                self.report.add(Measure(
                    f"append -> visible p{pct}{label}", "ms",
                    percentile(seen.latencies, pct) * 1000 if seen else None,
                    None, None, target, note,
                ))

    def visible(self, settings: Settings) -> visibility.Visibility:
        """Append -> visible on a fresh topic with a projector process of its own.

        The embedded broker's fetches slow down as a topic grows (a real Kafka
        indexes offsets), so a topic that already holds the memory benchmark's
        events would put the broker, not chatlog, in the figure.
        """
        c = self.config
        for topic in (settings.topic, settings.dlq_topic):
            ensure_topic(topic, settings.partitions, settings.replication_factor,
                         settings=settings)
        with ProjectorProcess(settings):
            return visibility.append_to_visible(
                settings, c.visible_rate, c.visible_seconds, c.message_bytes
            )

    def peer(self) -> None:
        c = self.config
        settings = self.settings("peer")
        result = peer.kafka_history_peer(
            settings, c.peer_appends, c.peer_reads, c.read_messages, c.message_bytes
        )
        name = "KafkaChatMessageHistory"
        note = result.unavailable or (
            f"{c.peer_appends} appends, {c.peer_reads} read(s) on confluent-kafka; it keeps a "
            "topic per session and every read joins a consumer group"
        )
        self.report.add(Measure(
            "peer: sync append of 1 message p50", "ms", self.single_p50 * 1000, name,
            percentile(result.appends, 50) * 1000 if result.appends else None,
            Target("reported"), note,
        ))
        self.report.add(Measure(
            f"peer: read of a {c.read_messages}-message session p50", "ms",
            self.read_p50 * 1000, name,
            percentile(result.reads, 50) * 1000 if result.reads else None,
            Target("reported"), note,
        ))

    # -- cleanup ----------------------------------------------------------

    def encryption(self) -> None:
        c = self.config
        plain = self.settings("plain")
        sealed = encryption.encrypted(self.settings("sealed"))
        for settings in (plain, sealed):
            self.topics += [f"{settings.topic}-append", f"{settings.topic}-append.dlq"]
        self.topics += [f"{sealed.topic}.keys", f"{sealed.topic}-append.keys"]
        events = min(c.throughput_events, c.append_events)
        cost = encryption.encryption_cost(
            plain,
            sealed,
            events=events,
            sessions=c.throughput_sessions,
            batch=c.append_batch,
            size=c.message_bytes,
        )
        note = (f"{events:,} messages of {c.message_bytes} B, CHATLOG_ENCRYPTION_KEY set; "
                "AES-256-GCM per message under its subject's data key")
        self.report.add(Measure(
            "batched append throughput, encrypted", "msgs/s", cost.append_sealed,
            "same appends, encryption off", cost.append_plain, Target("reported"), note,
        ))
        self.report.add(Measure(
            "projector throughput, encrypted", "events/s", cost.project_sealed,
            "same events, encryption off", cost.project_plain, Target("reported"), note,
        ))

    def cleanup(self) -> None:
        """Delete the namespaces and topics this run created (and nothing else)."""
        client = redis.Redis.from_url(self.base.redis_url)
        try:
            replayer = Replayer(self.base, redis_client=client)
            for namespace in self.namespaces:
                replayer.drop(namespace)
        finally:
            client.close()
        if not self.topics:
            return
        try:
            admin = KafkaAdminClient(**self.base.kafka_client_options())
        except KafkaError as exc:
            raise TopicError(f"cannot delete the benchmark topics {self.topics}: {exc}") from exc
        try:
            existing = set(admin.list_topics())
            doomed = [t for t in self.topics if t in existing]
            if doomed:
                admin.delete_topics(doomed)
        except KafkaError as exc:
            raise TopicError(f"cannot delete the benchmark topics {self.topics}: {exc}") from exc
        finally:
            admin.close()


def _confluent_unavailable() -> str:
    """Why the confluent-transport figures are not measured, or "" when they can be."""
    if importlib.util.find_spec("confluent_kafka") is None:
        return "not measured: confluent-kafka is not installed (the confluent extra)"
    return ""
