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

from chatlog.benchmarks import (
    append,
    cluster,
    encryption,
    own_writes,
    peer,
    reads,
    throughput,
    visibility,
)
from chatlog.benchmarks.config import BenchConfig
from chatlog.benchmarks.projector_process import ProjectorProcess
from chatlog.benchmarks.raw_clients import raw_producer_for
from chatlog.benchmarks.report import (
    BenchReport,
    Measure,
    Target,
    git_commit,
    machine_facts,
    median_pair,
)
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
        report = BenchReport(quick=config.quick, services=services, machine=machine_facts(),
                             commit=git_commit())
        run = _Run(config, base, report, console)
        try:
            run.all()
        finally:
            run.cleanup()
    report.seconds = time.monotonic() - started
    if hasattr(os, "getloadavg"):
        # With the load before the run (machine_facts): whether it stayed quiet.
        report.machine["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
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
        self.single: list[float] = []

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
        self.step("read-your-writes and the idle projector", self.own_writes)
        self.step("projector memory and append -> visible", self.projector_process)
        self.step("peers", self.peer)
        self.step("encryption on vs off", self.encryption)
        self.step("Redis Cluster vs standalone", self.cluster)

    def measure(
        self, name: str, unit: str, baseline_name: str, target: Target, note: str,
        runs: list[list[float | None]],
    ) -> None:
        """Add a row whose figures are the medians of ``runs``."""
        ours, theirs = median_pair(runs)
        self.report.add(Measure(name, unit, ours, baseline_name, theirs, target, note, runs))

    def latency(
        self, name: str, baseline_name: str, target: Target, note: str,
        ours: list[float], theirs: list[float], pct: float,
    ) -> None:
        """Add a percentile row (ms) of interleaved samples; each block of them is a run."""
        blocks = self.config.blocks
        runs: list[list[float | None]] = []
        for b in range(blocks):
            mine = ours[b * len(ours) // blocks:(b + 1) * len(ours) // blocks]
            peer = theirs[b * len(theirs) // blocks:(b + 1) * len(theirs) // blocks]
            if mine and peer:
                runs.append([percentile(mine, pct) * 1000, percentile(peer, pct) * 1000])
        self.report.add(Measure(
            name, "ms", percentile(ours, pct) * 1000, baseline_name,
            percentile(theirs, pct) * 1000, target, note, runs,
        ))

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
        unavailable = _confluent_unavailable()
        live_vs_default: list[list[float | None]] = []
        live_vs_tuned: list[list[float | None]] = []
        confluent_runs: list[list[float | None]] = []
        rebuild_runs: list[list[float | None]] = []
        cpu_runs: list[list[float | None]] = []
        redis_runs: list[list[float | None]] = []
        client = redis.Redis.from_url(settings.redis_url)
        try:
            for rep in range(c.repeats):
                default = throughput.raw_consumer_rate(settings, c.throughput_events, tuned=False)
                tuned = throughput.raw_consumer_rate(settings, c.throughput_events, tuned=True)
                # Live and rebuild alternate which runs first: each run leaves the
                # broker and Redis holding more, which slows the next one.
                order = ("live", "rebuild") if rep % 2 == 0 else ("rebuild", "live")
                rates: dict[str, throughput.Rate] = {}
                for kind in order:
                    scratch = f"{settings.namespace}:{kind}{rep}"
                    if kind == "live":
                        rates[kind] = throughput.projector_rate(settings.with_(
                            namespace=scratch, consumer_group=f"{settings.consumer_group}-{rep}",
                        ), c.throughput_events)
                    else:
                        rates[kind] = throughput.rebuild_rate(settings, scratch)
                    Replayer(settings, redis_client=client).drop(scratch)
                live = rates["live"]
                pushed = throughput.raw_redis_rate(
                    client, f"{settings.namespace}:rawpush{rep}:", records
                )
                live_vs_default.append([live.per_second, default.per_second])
                live_vs_tuned.append([live.per_second, tuned.per_second])
                rebuild_runs.append([rates["rebuild"].per_second, live.per_second])
                cpu_runs.append([live.cpu_us_per_event, tuned.cpu_us_per_event])
                redis_runs.append([live.redis_us_per_event, pushed.redis_us_per_event])
                if not unavailable:
                    scratch = f"{settings.namespace}:confluent{rep}"
                    rate = throughput.projector_rate(settings.with_(
                        transport="confluent", namespace=scratch,
                        consumer_group=f"{settings.consumer_group}-confluent-{rep}",
                    ), c.throughput_events)
                    Replayer(settings, redis_client=client).drop(scratch)
                    raw = throughput.raw_confluent_rate(settings, c.throughput_events)
                    confluent_runs.append([rate.per_second, raw.per_second])
        finally:
            client.close()
        sizes = (f"{c.throughput_events:,} events of {c.message_bytes} B over "
                 f"{c.throughput_sessions:,} sessions, {c.repeats} runs, each next to its "
                 "baselines measured again")
        tuned_name = ("raw kafka-python consumer, fetch_max_bytes 50 MiB, "
                      "max_partition_fetch_bytes 10 MiB, max_records 5000")
        self.measure("projector throughput", "events/s",
                     "raw kafka-python consumer, default fetch sizes", Target("reported"),
                     sizes, live_vs_default)
        self.measure("projector throughput vs tuned consumer", "events/s", tuned_name,
                     Target("ratio_min", 0.6), sizes, live_vs_tuned)
        self.measure("projector throughput, confluent transport", "events/s",
                     "raw confluent-kafka consumer", Target("ratio_min", 0.5),
                     unavailable or f"{sizes}; CHATLOG_TRANSPORT=confluent", confluent_runs)
        self.measure("rebuild throughput", "events/s", "live projector",
                     Target("ratio_min", 1.0),
                     "Replayer.rebuild into a fresh namespace; live and rebuild alternate which "
                     "runs first", rebuild_runs)
        self.measure("projector CPU per event", "µs", f"{tuned_name}, CPU per event",
                     Target("reported"),
                     "CPU time of the projector's process (it runs nothing else meanwhile)",
                     cpu_runs)
        self.measure("redis-server CPU per event", "µs",
                     "pipelined RPUSH of the same payloads, 2,000 a round trip",
                     Target("reported"), "from Redis's own INFO cpu", redis_runs)

    def appends(self) -> None:
        c = self.config
        unavailable = _confluent_unavailable()
        for label, transport in (("", "kafka-python"), (", confluent transport", "confluent")):
            if transport == "confluent" and unavailable:
                for shape, _calls in c.append_shapes:
                    self.report.add(Measure(
                        f"add_messages of {shape} messages{label}", "msgs/s", None, None, None,
                        Target("ratio_min", 0.8), unavailable,
                    ))
                continue
            settings = self.settings(f"append-{transport}").with_(transport=transport)
            raw = raw_producer_for(settings)
            try:
                with ChatLog(settings) as chatlog:
                    for shape, calls in c.append_shapes:
                        runs = append.append_shape(
                            chatlog, raw, calls, shape, c.message_bytes, blocks=c.blocks
                        )
                        self.measure(
                            f"add_messages of {shape} messages{label}", "msgs/s",
                            f"{raw.name}, same records, same call shape",
                            Target("ratio_min", 0.8),
                            f"{calls:,} calls, each followed by the raw producer sending the "
                            "same records and waiting for their acks",
                            runs,
                        )
                    single = append.single_append(chatlog, raw, c.sync_samples, c.message_bytes)
            finally:
                raw.close()
            if not label:
                self.single = single.chatlog
            for pct, target in ((50, Target("ratio_max", 1.2)), (99, Target("reported"))):
                self.latency(
                    f"add_messages(1 message) p{pct}{label}", f"{raw.name}, send().get()",
                    target, f"{c.sync_samples} samples each, interleaved",
                    single.chatlog, single.raw, pct,
                )

    def reads(self) -> None:
        c = self.config
        settings = self.settings("read")
        with ChatLog(settings) as chatlog:
            result = reads.session_reads(chatlog, c.read_messages, c.read_samples, c.message_bytes)
        for pct, target in ((50, Target("ratio_max", 0.8)), (99, Target("reported"))):
            self.latency(
                f"read of a {c.read_messages}-message session p{pct}",
                "RedisChatMessageHistory", target,
                f"{c.read_samples} reads each, interleaved, same Redis",
                result.chatlog, result.langchain, pct,
            )

    def own_writes(self) -> None:
        unavailable = _confluent_unavailable()
        self.own_writes_of(self.settings("own-writes"), "")
        confluent = ", confluent transport"
        if unavailable:
            for name, unit in (("idle projector CPU", "% of a core"),
                               ("read-your-writes: add_messages -> messages p50", "ms"),
                               ("read-your-writes: checkpointer put -> get_tuple p50", "ms")):
                self.report.add(Measure(f"{name}{confluent}", unit, None, None, None,
                                        Target("value_max", 5), unavailable))
        else:
            self.own_writes_of(
                self.settings("own-writes-confluent").with_(transport="confluent"), confluent
            )

    def own_writes_of(self, settings: Settings, label: str) -> None:
        """Idle projector CPU and read-your-writes on the transport of ``settings``."""
        c = self.config
        for topic in (settings.topic, settings.dlq_topic, settings.checkpoint_topic):
            ensure_topic(topic, settings.partitions, settings.replication_factor,
                         settings=settings)
        client = "confluent-kafka" if settings.transport == "confluent" else "kafka-python"
        with ProjectorProcess(settings) as child:
            assert child.process is not None
            time.sleep(1.0)  # past the first fetches after the group join
            idle = own_writes.idle_share(child.process.pid, c.idle_seconds)
            raw_idle = own_writes.idle_raw_consumer_share(settings, c.idle_seconds)
            with ChatLog(settings) as chatlog:
                messages = own_writes.message_read_back(
                    chatlog, c.own_write_samples, c.message_bytes
                )
                checkpoints = own_writes.checkpoint_read_back(chatlog, c.own_write_samples)
        wakeups = "on" if settings.wakeup else "off"
        self.report.add(Measure(
            f"idle projector CPU{label}", "% of a core", idle,
            f"raw {client} consumer polling the idle topic", raw_idle,
            Target("value_max", 5),
            f"over {c.idle_seconds:g}s each; projector in its own process; wake-ups "
            f"{wakeups}; both fetch with a {settings.fetch_max_wait_ms} ms wait",
            [[idle, raw_idle]],
        ))
        note = (f"{c.own_write_samples} writes, each on a new session (thread), read back by "
                "the same process; projector in its own process on an idle stack; wake-ups "
                f"{wakeups}")
        self.latency(
            f"read-your-writes: add_messages -> messages p50{label}",
            "the same read once visible", Target("value_max", 5), note,
            messages.waited, messages.visible, 50,
        )
        self.latency(
            f"read-your-writes: checkpointer put -> get_tuple p50{label}",
            "the same get_tuple once visible", Target("value_max", 5), note,
            checkpoints.waited, checkpoints.visible, 50,
        )

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
            [[rss_large / _MB, rss_small / _MB]],
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
                name = f"append -> visible p{pct}{label}"
                if seen is None:
                    self.report.add(Measure(name, "ms", None, None, None, target, note))
                else:
                    self.latency(name, "the writer's own acks", target, note,
                                 seen.latencies, seen.acks, pct)

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
        with ChatLog(self.settings("peer")) as chatlog:
            result = peer.kafka_history_peer(
                chatlog, c.peer_appends, c.peer_reads, c.read_messages, c.message_bytes
            )
        name = "KafkaChatMessageHistory"
        note = result.unavailable or (
            f"{c.peer_appends} appends, {c.peer_reads} read(s) on confluent-kafka, chatlog's "
            "interleaved with them; it keeps a topic per session and every read joins a "
            "consumer group"
        )
        if result.unavailable:
            for what in ("sync append of 1 message", f"read of a {c.read_messages}-message "
                         "session"):
                self.report.add(Measure(f"peer: {what} p50", "ms", None, name, None,
                                        Target("reported"), note))
        else:
            self.latency("peer: sync append of 1 message p50", name, Target("reported"), note,
                         result.ours_appends, result.appends, 50)
            self.latency(f"peer: read of a {c.read_messages}-message session p50", name,
                         Target("reported"), note, result.ours_reads, result.reads, 50)
        with ChatLog(self.settings("peer-redis")) as chatlog:
            appended = reads.redis_history_appends(chatlog, c.sync_samples, c.message_bytes)
        self.latency(
            "peer: sync append of 1 message p50, vs Redis only", "RedisChatMessageHistory",
            Target("reported"),
            f"{c.sync_samples} appends each, interleaved; the peer writes Redis only, no log",
            appended.chatlog, appended.langchain, 50,
        )

    # -- cleanup ----------------------------------------------------------

    def encryption(self) -> None:
        c = self.config
        batch, calls = c.append_shapes[-1]
        events = min(c.throughput_events, batch * calls)
        append_runs: list[list[float | None]] = []
        project_runs: list[list[float | None]] = []
        for rep in range(c.repeats):
            # Encryption off is the same-run baseline: same messages, broker and Redis.
            plain = self.settings(f"plain{rep}")
            sealed = encryption.encrypted(self.settings(f"sealed{rep}"))
            for settings in (plain, sealed):
                self.topics += [f"{settings.topic}-append", f"{settings.topic}-append.dlq"]
            self.topics += [f"{sealed.topic}.keys", f"{sealed.topic}-append.keys"]
            cost = encryption.encryption_cost(
                plain,
                sealed,
                events=events,
                sessions=c.throughput_sessions,
                batch=batch,
                size=c.message_bytes,
                project_events=c.encryption_events,
            )
            append_runs.append([cost.append_sealed, cost.append_plain])
            project_runs.append([cost.project_sealed, cost.project_plain])
        note = (f"{events:,} messages of {c.message_bytes} B, CHATLOG_ENCRYPTION_KEY set; "
                "AES-256-GCM per message under its subject's data key; "
                f"{c.repeats} runs, each next to encryption off measured again")
        self.measure("batched append throughput, encrypted", "msgs/s",
                     "same appends, encryption off", Target("reported"), note, append_runs)
        self.measure("projector throughput, encrypted", "events/s",
                     "same events, encryption off", Target("reported"), note, project_runs)

    def cluster(self) -> None:
        c = self.config
        settings = self.settings("cluster")
        ensure_topic(settings.topic, settings.partitions, settings.replication_factor,
                     settings=settings)
        events = c.cluster_sessions * c.read_messages
        with EventProducer(settings) as producer:
            seed_topic(settings, encode_all(
                message_events(events, c.cluster_sessions, c.message_bytes), producer
            ))
        with cluster.deployments() as deployments:
            urls = {name: url for name, (url, _primaries, _replicas) in deployments.items()}
            rates: list[list[float | None]] = []
            for rep in range(c.repeats):
                # Alternating which goes first, as the throughput step does.
                names = list(urls) if rep % 2 == 0 else list(reversed(urls))
                rate: dict[str, float] = {}
                for name in names:
                    rate[name] = throughput.projector_rate(settings.with_(
                        redis_url=urls[name], namespace=f"{settings.namespace}:{rep}",
                        consumer_group=f"{settings.consumer_group}-{name}-{rep}",
                    ), events).per_second
                rates.append([rate[cluster.CLUSTER], rate[cluster.STANDALONE]])
            latency = cluster.session_reads(
                {name: settings.with_(redis_url=url, namespace=f"{settings.namespace}:0")
                 for name, url in urls.items()},
                c.cluster_sessions, c.read_messages, c.read_samples,
            )
        baseline = "the same on one standalone redis-server, same run"
        shape = (f"{events:,} events of {c.message_bytes} B over {c.cluster_sessions:,} "
                 "sessions; 3 primaries with a replica each (WAIT for it per batch) vs one "
                 "redis-server, both fresh from the same binary")
        self.measure("projector throughput, Redis Cluster (3 primaries)", "events/s", baseline,
                     Target("reported"),
                     f"{shape}; {c.repeats} runs alternating which goes first", rates)
        self.latency(
            f"read of a {c.read_messages}-message session p50, Redis Cluster (3 primaries)",
            baseline, Target("reported"),
            f"{shape}; {c.read_samples} reads each, interleaved, random sessions",
            latency.chatlog, latency.langchain, 50,
        )

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
