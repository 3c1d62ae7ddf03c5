"""Exporting sessions as JSON or JSON Lines, in LangChain's ``messages_to_dict`` form.

One exported session is ``{"session_id": ..., "user_id": ..., "messages": [...]}``
with the messages exactly as ``langchain_core.messages.messages_to_dict`` gives
them. A JSON export is ``{"format": "chatlog.export", "version": 1,
"sessions": [...]}``; a JSON Lines export has one session object per line.
Both are what :mod:`chatlog.histories.importers` reads back.

An encrypted export (``write_export(..., key_store=...)``, ``chatlog export
--encrypt``) holds each session as ``{"session_id": ..., "user_id": ...,
"sealed": {...}}``: its messages' JSON sealed with AES-256-GCM under the data
key of its subject (the user, else the session; the key its events are
sealed under), bound to the session and subject. Erasing the subject
destroys that key, so every copy of the file becomes unreadable too; the
importer skips such a session and counts it (``ImportProgress.shredded``).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Literal, TextIO

from langchain_core.messages import BaseMessage, messages_to_dict

from chatlog.errors import DecryptionError
from chatlog.histories.store import ChatLog
from chatlog.producers.key_store import DataKeyStore

#: Value of ``"format"`` in a JSON export.
EXPORT_FORMAT = "chatlog.export"
EXPORT_VERSION = 1

ExportFormat = Literal["json", "jsonl"]

#: Names the layout and associated data of a sealed session in an export.
SEALED_EXPORT_FORMAT = "chatlog.SessionExportSealed.v1"


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
    #: Read from an encrypted export whose data key was destroyed (the subject
    #: was erased): ``messages`` is empty, and the importer skips it.
    shredded: bool = False

    def to_dict(self, key_store: DataKeyStore | None = None) -> dict[str, Any]:
        """The JSON object of this session (messages in ``messages_to_dict`` form).

        With ``key_store``, the messages are sealed under the data key of the
        session's subject (see the module docs).
        """
        messages = messages_to_dict(list(self.messages))
        head: dict[str, Any] = {"session_id": self.session_id, "user_id": self.user_id}
        if key_store is None:
            return {**head, "messages": messages}
        key = key_store.key_for(self.user_id or self.session_id)
        plaintext = json.dumps(messages, ensure_ascii=False, separators=(",", ":"))
        nonce, ciphertext = key.seal(
            plaintext.encode("utf-8"), _sealed_aad(self.session_id, key.subject, key.key_id)
        )
        sealed = {
            "format": SEALED_EXPORT_FORMAT,
            "subject": key.subject,
            "key_id": key.key_id,
            "nonce": base64.b64encode(nonce).decode("ascii"),
            "ciphertext": base64.b64encode(ciphertext).decode("ascii"),
        }
        return {**head, "sealed": sealed}


def _sealed_aad(session_id: str, subject: str, key_id: str) -> bytes:
    # No chatlog id holds a NUL, so the parts cannot be re-split another way.
    return "\x00".join((SEALED_EXPORT_FORMAT, session_id, subject, key_id)).encode("utf-8")


def open_sealed_messages(
    session_id: str, user_id: str | None, sealed: Any, key_store: DataKeyStore
) -> list[Any] | None:
    """The ``messages_to_dict`` list a sealed export session holds; ``None`` if shredded.

    Raises:
        DecryptionError: it is not a sealed session of this session and
            subject (altered, or moved from another session).
        EncryptionError: its data key is unknown to the key store.
    """
    try:
        if sealed.get("format") != SEALED_EXPORT_FORMAT:
            raise ValueError(f"format is not {SEALED_EXPORT_FORMAT}")
        subject, key_id = str(sealed["subject"]), str(sealed["key_id"])
        nonce = base64.b64decode(sealed["nonce"], validate=True)
        ciphertext = base64.b64decode(sealed["ciphertext"], validate=True)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise DecryptionError(
            f"sealed session {session_id!r} of the export is malformed: {exc}"
        ) from exc
    if subject not in (user_id, session_id):
        raise DecryptionError(
            f"sealed session {session_id!r} of the export names subject {subject!r}, which "
            "is neither its user nor its session"
        )
    key = key_store.find(subject, key_id)
    if key is None:
        return None
    plaintext = key.open(nonce, ciphertext, _sealed_aad(session_id, subject, key_id))
    messages: list[Any] = json.loads(plaintext)
    return messages


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
    sessions: Iterable[SessionExport],
    out: IO[str],
    *,
    fmt: ExportFormat = "json",
    key_store: DataKeyStore | None = None,
) -> int:
    """Write ``sessions`` to ``out`` as JSON or JSON Lines; return how many were written.

    With ``key_store`` (``chatlog export --encrypt``) every session's messages
    are sealed under its subject's data key (see the module docs).
    """
    count = 0
    if fmt == "jsonl":
        for session in sessions:
            out.write(json.dumps(session.to_dict(key_store), ensure_ascii=False) + "\n")
            count += 1
        return count
    body = [session.to_dict(key_store) for session in sessions]
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
