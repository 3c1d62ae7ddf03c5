"""The embedded Redis Cluster that the cluster tests and `chatlog dev` build on."""

from __future__ import annotations

from redis.cluster import RedisCluster

from chatlog.cli.devstack import EmbeddedRedisCluster


def test_a_three_primary_cluster_with_replicas_forms_and_serves_every_slot() -> None:
    """3 primaries + 3 replicas from plain redis-server: keys of every slot reach a primary."""
    cluster = EmbeddedRedisCluster(primaries=3, replicas=1)
    cluster.start()
    try:
        client = RedisCluster.from_url(cluster.url)
        try:
            for number in range(300):
                client.set(f"probe:{{{number}}}", number)
            assert [int(client.get(f"probe:{{{n}}}") or -1) for n in range(300)] == list(
                range(300)
            )
            shards = client.cluster_shards()
            assert len(shards) == 3
            assert all(len(shard["nodes"]) == 2 for shard in shards)
        finally:
            client.close()
    finally:
        cluster.stop()
