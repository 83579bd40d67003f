"""Fast tests of the pure modules: no Redis, no sockets, no server."""
