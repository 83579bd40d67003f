"""The local deployment: processes on this machine, started from the ops/ templates.

``procs`` starts and stops redis-server, redis-sentinel, uvicorn and nginx;
``render`` turns the compose-oriented templates into loopback configs;
``probes`` asks the running processes how they are; ``cluster`` (with
``cluster_shards`` and ``redis_cluster`` for a Redis Cluster) is the
``streamgate cluster`` command built on them. The drill, the load tools and
the test fixtures all start processes through this package.
"""
