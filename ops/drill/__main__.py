"""``python -m ops.drill``: the drill against the local cluster."""

from ops.drill.drill import main

if __name__ == "__main__":
    raise SystemExit(main())
