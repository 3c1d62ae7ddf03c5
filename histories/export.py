"""Exporting sessions as JSON or JSON Lines, in LangChain's ``messages_to_dict`` form.

One exported session is ``{"session_id": ..., "user_id": ..., "messages": [...]}``
with the messages exactly as ``langchain_core.messages.messages_to_dict`` gives
them. A JSON export is ``{"format": "chatlog.export", "version": 1,
"sessions": [...]}``; a JSON Lines export has one session object per line.
Both are what :mod:`chatlog.histories.importers` reads back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Literal, TextIO

from langchain_core.messages import BaseMessage, messages_to_dict

from chatlog.histories.store import ChatLog

#: Value of ``"format"`` in a JSON export.
EXPORT_FORMAT = "chatlog.export"
EXPORT_VERSION = 1

ExportFormat = Literal["json", "jsonl"]


@dataclass(frozen=True, slots=True)
class SessionExport:
    """One session's messages, with the session id and owner they belong to.

    ``owner_from_source`` is true when ``user_id`` is what the imported data
    says (a file's ``user_id``, or no owner at all) rather than an owner the
    caller gave; :func:`~chatlog.histories.importers.import_sessions` only
    uses such an owner when told to trust it.
    """

    session_id: str
    user_id: str | None
    messages: tuple[BaseMessage, ...] = field(default_factory=tuple)
    owner_from_source: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this session (messages in ``messages_to_dict`` form)."""
        return {
            "session_id": self.session_id,
            "user_id": self.user_id,
            "messages": messages_to_dict(list(self.messages)),
        }


def export_sessions(
    chatlog: ChatLog, *, user_id: str | None = None, session_ids: Iterable[str] | None = None
) -> Iterator[SessionExport]:
    """Yield the given sessions (default: every session ``user_id`` owns).

    Every read goes through a history opened with ``user_id``, so ownership is
    checked as for any read.

    Raises:
        SessionOwnershipError: a session belongs to another user.
        ValueError: neither ``user_id`` nor ``session_ids`` is given.
    """
    if session_ids is None:
        if user_id is None:
            raise ValueError("give the sessions to export, or the user whose sessions to export")
        session_ids = [info.session_id for info in chatlog.sessions(user_id)]
    for session_id in session_ids:
        messages = chatlog.history(session_id, user_id).messages
        yield SessionExport(session_id, user_id, tuple(messages))


def write_export(
    sessions: Iterable[SessionExport], out: IO[str], *, fmt: ExportFormat = "json"
) -> int:
    """Write ``sessions`` to ``out`` as JSON or JSON Lines; return how many were written."""
    count = 0
    if fmt == "jsonl":
        for session in sessions:
            out.write(json.dumps(session.to_dict(), ensure_ascii=False) + "\n")
            count += 1
        return count
    body = [session.to_dict() for session in sessions]
    document = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "sessions": body}
    json.dump(document, out, ensure_ascii=False, indent=2)
    out.write("\n")
    return len(body)


def open_export_file(path: str | os.PathLike[str]) -> TextIO:
    """Open ``path`` for writing an export, readable and writable by its owner only.

    An export holds whole conversations, so the file is created with mode
    0600 at once (never created world-readable and narrowed later). A file
    that already exists is narrowed to 0600 before anything is written to it.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
        return os.fdopen(fd, "w", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise
