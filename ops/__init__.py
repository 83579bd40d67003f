"""Operations tooling, and beside it the deployment templates it renders.

Subpackages: ``ops.local`` (processes on this machine and the local
cluster), ``ops.drill`` (the failover drill), ``ops.load`` (load generator
and benchmarks). The folders nginx/, redis/, sentinel/, prometheus/,
alertmanager/ and grafana/ are the configs compose mounts and the local
launcher renders; they ship in the wheel as package data.
"""
