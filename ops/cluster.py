"""``python -m ops.cluster``: the local cluster command, kept at its documented name."""

from ops.local.cluster import main

if __name__ == "__main__":
    raise SystemExit(main())
