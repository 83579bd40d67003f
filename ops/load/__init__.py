"""Load against running instances, with every delivery accounted for.

``traffic`` is the accounting WebSocket client the drill and the tests use
too; ``loadtest`` (with ``run``, ``client``, ``worker``, ``stats``,
``report`` and ``chart``) is the fan-out load generator; ``bench``,
``bench_rooms``, ``bench_cluster``, ``pubbench`` and ``membench`` are the
benchmark scenarios of docs/benchmarks.md, built on it and on ``ops.local``.
"""
