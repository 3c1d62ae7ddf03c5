"""The projector: folds the event log into the Redis read model (``chatlog.projector``)."""

from __future__ import annotations

from chatlog.projector.dead_letter import DeadLetter, DeadLetterQueue
from chatlog.projector.redis_projection import ApplyResult, LogRecord, RedisProjection
from chatlog.projector.replay import Replayer, ReplayProgress, VerifyReport
from chatlog.projector.worker import Projector, ProjectorStats

__all__ = [
    "ApplyResult",
    "DeadLetter",
    "DeadLetterQueue",
    "LogRecord",
    "Projector",
    "ProjectorStats",
    "RedisProjection",
    "ReplayProgress",
    "Replayer",
    "VerifyReport",
]
