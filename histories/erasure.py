"""Erasure that reaches the log: what ``delete_user`` shredded, as :class:`ErasureReport`.

With ``CHATLOG_ENCRYPTION_KEY`` set, deleting a user (or a session without a
user) publishes its tombstones, then destroys the subject's data keys in the
key store (:mod:`chatlog.producers.key_store`): every copy of its encrypted
events, in the log and in every backup of it, is unreadable from then on,
and every replay, rebuild, verify and export skips them as shredded.
``chatlog erase --user U`` prints this report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ErasureReport:
    """What one erasure did.

    Attributes:
        subject: The user id (or the session id of a session without a user).
        sessions: The sessions whose deletion was published (as the application names them).
        keys_destroyed: Ids of the subject's data keys destroyed; empty when
            encryption is off or the subject never wrote an encrypted event.
        encrypted: Whether encryption is on (without it, the log keeps the
            plaintext: only the read model forgets).
    """

    subject: str
    sessions: list[str] = field(default_factory=list)
    keys_destroyed: list[str] = field(default_factory=list)
    encrypted: bool = False

    @property
    def shredded(self) -> bool:
        """Whether the subject's events in the log are unreadable from now on."""
        return bool(self.keys_destroyed)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``chatlog erase --json``)."""
        return {
            "subject": self.subject,
            "sessions": self.sessions,
            "keys_destroyed": self.keys_destroyed,
            "encrypted": self.encrypted,
            "shredded": self.shredded,
        }
