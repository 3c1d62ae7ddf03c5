"""A SQL read model's positions table: each partition's next offset, only ever moved forward."""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa


def advance_positions(
    conn: sa.Connection, table: sa.Table, advance: Mapping[int, int], *, lock: bool
) -> None:
    """Record ``advance`` (partition -> next offset) in ``conn``'s transaction, forward only.

    ``lock`` reads the rows ``FOR UPDATE`` (PostgreSQL), so two writers never
    move a position back.
    """
    if not advance:
        return
    query = sa.select(table.c.partition, table.c.next_offset).where(
        table.c.partition.in_(list(advance))
    )
    if lock:
        query = query.with_for_update()
    current = {int(part): int(off) for part, off in conn.execute(query)}
    forward = {part: off for part, off in advance.items() if off > current.get(part, -1)}
    if not forward:
        return
    conn.execute(sa.delete(table).where(table.c.partition.in_(list(forward))))
    conn.execute(sa.insert(table), [
        {"partition": part, "next_offset": off} for part, off in forward.items()
    ])
