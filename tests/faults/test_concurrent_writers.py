"""Threads and separate processes append to the same sessions at once: exactly once, log order."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import redis
from langchain_core.messages import HumanMessage

from chatlog import ChatLog
from chatlog.projector import Projector
from chatlog.settings import Settings
from tests.faults.ledger import Ledger, reconcile, wait_caught_up
from tests.faults.processes import environment

SESSIONS = [f"shared-{n}" for n in range(6)]
THREADS = 4
PROCESSES = 2
PER_WRITER = 60
WRITER = Path(__file__).resolve().parents[1] / "fixtures" / "writer_process.py"


def test_concurrent_thread_and_process_writers_each_appear_exactly_once_in_log_order(
    settings_factory: Callable[..., Settings],
    chatlog_factory: Callable[[Settings], ChatLog],
    projector_factory: Callable[..., Projector],
    redis_client: redis.Redis,
) -> None:
    """4 threads and 2 processes write the same 6 sessions; the read model is the log."""
    settings = settings_factory()
    projector_factory(settings)
    ledger = Ledger()
    errors: list[BaseException] = []

    def write(prefix: str) -> None:
        chatlog = chatlog_factory(settings)  # its own producer, like another app instance
        try:
            for n in range(PER_WRITER):
                session_id = SESSIONS[n % len(SESSIONS)]
                text = f"{session_id}#{prefix}-{n}"
                chatlog.history(session_id).add_messages([HumanMessage(text)])
                # Only this thread writes through this ChatLog, so its newest
                # position for the session is this append's.
                position = chatlog.written.get(session_id)
                assert position is not None
                ledger.record_texts(
                    session_id, [text], [(position.partition, position.offset)], writer=prefix
                )
        except BaseException as exc:
            errors.append(exc)

    processes = [
        subprocess.Popen(
            [sys.executable, str(WRITER), f"p{n}", str(PER_WRITER), *SESSIONS],
            env=environment(settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for n in range(PROCESSES)
    ]
    threads = [threading.Thread(target=write, args=(f"t{n}",)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for n, process in enumerate(processes):
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err.decode(errors="replace")[-2000:]
        # The process prints each append once acknowledged, in the order it sent them.
        for line in out.decode().splitlines():
            row = json.loads(line)
            ledger.record_texts(
                row["session"],
                [row["text"]],
                [(row["partition"], row["offset"])],
                writer=f"p{n}",
            )
    assert not errors, errors
    wait_caught_up(redis_client, settings.namespace, ledger)
    figures = reconcile(
        "concurrent-writers",
        redis_client,
        settings.namespace,
        ledger,
        writer_threads=THREADS,
        writer_processes=PROCESSES,
    )
    figures.assert_exact()
    assert figures.acknowledged == (THREADS + PROCESSES) * PER_WRITER == figures.applied
    offsets = [(a.partition, a.offset) for appends in ledger.appends.values() for a in appends]
    assert len(set(offsets)) == len(offsets), "two acknowledged appends share a log position"
