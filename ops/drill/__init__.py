"""The failover drill: faults injected under traffic, every message accounted for.

``drill`` runs the phases and prints the report (``python -m ops.drill``);
``faults`` and ``shard_faults`` inject them into a Sentinel topology or a
Redis Cluster; ``shards`` runs a phase against a cluster; ``report`` is the
pure accounting (lost, duplicates, gaps, phantoms) that the tests check too.
"""
