"""Failover tests: real Redis masters, replicas and sentinels killed, frozen and cut off."""
