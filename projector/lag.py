"""Consumer lag and group status of the projector, read from the broker.

Both work whether the worker runs or not: the end offsets come from the
topic, the committed offsets and the members from the group coordinator.
The projector commits after every applied batch, so a partition's committed
offset is the offset after the last event applied to Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError

from chatlog.errors import ConsumerGroupError
from chatlog.producers.admin import end_offsets
from chatlog.producers.client_internals import GroupAdmin
from chatlog.settings import Settings


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One partition: the group's committed offset against the end of the log.

    Attributes:
        partition: Partition number.
        committed: Offset after the last applied event (``None``: never committed,
            the projector starts from the beginning).
        end: Offset after the last event in the partition.

    """

    partition: int
    committed: int | None
    end: int

    @property
    def lag(self) -> int:
        """Events in the log not yet applied (never negative)."""
        return max(self.end - (self.committed or 0), 0)

    @property
    def last_applied(self) -> int | None:
        """Offset of the last applied event, ``None`` when none was."""
        return None if not self.committed else self.committed - 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "partition": self.partition,
            "committed": self.committed,
            "last_applied": self.last_applied,
            "end": self.end,
            "lag": self.lag,
        }


@dataclass(frozen=True, slots=True)
class LagReport:
    """Lag of one consumer group on one topic, per partition."""

    topic: str
    group: str
    partitions: tuple[PartitionLag, ...]

    @property
    def total(self) -> int:
        """Sum of the partitions' lag."""
        return sum(p.lag for p in self.partitions)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "topic": self.topic,
            "group": self.group,
            "total": self.total,
            "partitions": [p.to_dict() for p in self.partitions],
        }


@dataclass(frozen=True, slots=True)
class GroupMember:
    """One member of the consumer group.

    Attributes:
        member_id: The coordinator's id for the member.
        client_id: The member's client id.
        host: The member's address as the broker saw it.
        partitions: Partitions of the topic assigned to it; ``None`` when the
            broker does not report assignments (the embedded Tansu broker).

    """

    member_id: str
    client_id: str
    host: str
    partitions: tuple[int, ...] | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "member_id": self.member_id,
            "client_id": self.client_id,
            "host": self.host,
            "partitions": None if self.partitions is None else list(self.partitions),
        }


@dataclass(frozen=True, slots=True)
class GroupStatus:
    """The projector group: its state, members and lag."""

    group: str
    state: str
    members: tuple[GroupMember, ...]
    lag: LagReport

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "group": self.group,
            "state": self.state,
            "members": [m.to_dict() for m in self.members],
            "lag": self.lag.to_dict(),
        }


def consumer_lag(settings: Settings, *, group: str | None = None) -> LagReport:
    """Lag of ``group`` (default: the projector's group) on ``settings.topic``, per partition.

    Raises:
        BrokerUnavailableError: no broker answered.
        ConsumerGroupError: the group's offsets could not be read.
        TopicError: the topic's end offsets could not be read.

    """
    group = group or settings.consumer_group
    ends = end_offsets(settings, settings.topic)
    admin = GroupAdmin.connect(settings)
    try:
        committed = admin.list_group_offsets({group: None}).get(group, {})
    except KafkaError as exc:
        raise ConsumerGroupError(f"cannot read the offsets of group {group!r}: {exc}") from exc
    finally:
        admin.close()
    partitions = tuple(
        PartitionLag(p, _offset(committed.get(TopicPartition(settings.topic, p))), end)
        for p, end in sorted(ends.items())
    )
    return LagReport(settings.topic, group, partitions)


def group_status(settings: Settings, *, group: str | None = None) -> GroupStatus:
    """State, members (with their assignments when the broker reports them) and lag of ``group``.

    Raises:
        BrokerUnavailableError: no broker answered.
        ConsumerGroupError: the group could not be described.

    """
    group = group or settings.consumer_group
    lag = consumer_lag(settings, group=group)
    admin = GroupAdmin.connect(settings)
    try:
        described = admin.describe_groups([group]).get(group, {})
    except (KafkaError, ValueError) as exc:
        raise ConsumerGroupError(f"cannot describe group {group!r}: {exc}") from exc
    finally:
        admin.close()
    if described.get("error"):
        raise ConsumerGroupError(f"cannot describe group {group!r}: {described['error']}")
    members = tuple(
        GroupMember(
            member_id=str(member.get("member_id", "")),
            client_id=str(member.get("client_id", "")),
            host=str(member.get("client_host", "")),
            partitions=_assigned(member.get("member_assignment"), settings.topic),
        )
        for member in described.get("members", [])
    )
    state = str(described.get("group_state") or "Unknown")
    return GroupStatus(group, state, members, lag)


def _offset(committed: Any) -> int | None:
    offset = getattr(committed, "offset", None)
    return None if offset is None or offset < 0 else int(offset)


def _assigned(assignment: Any, topic: str) -> tuple[int, ...] | None:
    """Partitions of ``topic`` in a decoded member assignment; ``None`` when not reported."""
    if not assignment or isinstance(assignment, (bytes, str)):
        return None
    if hasattr(assignment, "partitions"):
        pairs = [(tp.topic, tp.partition) for tp in assignment.partitions()]
    else:
        pairs = []
        for entry in assignment.get("assigned_partitions", []):
            name, numbers = (
                (entry.get("topic"), entry.get("partitions", []))
                if isinstance(entry, dict)
                else (entry[0], entry[1])
            )
            pairs.extend((name, number) for number in numbers)
    return tuple(sorted(number for name, number in pairs if name == topic))
