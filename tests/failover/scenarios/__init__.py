"""Failover scenarios that run as their own process (e.g. inside a network namespace)."""
