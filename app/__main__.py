"""``python -m app`` (``streamgate serve``): serve one instance on HOST:PORT.

The server pings every socket every ``HEARTBEAT_INTERVAL`` seconds and drops
one that does not answer within the same time (with plain ``uvicorn``, pass
``--ws-ping-interval`` and ``--ws-ping-timeout``), and does not offer
permessage-deflate (``--ws-per-message-deflate false``).
"""

import argparse
import sys
from collections.abc import Sequence

import uvicorn

from .cli import settings_help
from .config import ConfigError, load_settings
from .logs import configure as configure_logs

SHUTDOWN_TASKS_S = 2
LEAN_WS = "app.lean:LeanWebSocket"


def main(argv: Sequence[str] | None = None, prog: str = "streamgate serve") -> None:
    """Serve until SIGTERM (which drains) or Ctrl-C; every setting comes from
    the environment, so the only option is ``--help``."""
    argparse.ArgumentParser(
        prog=prog,
        description="Serve one streamgate instance on HOST:PORT.",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).parse_args(sys.argv[1:] if argv is None else argv)
    try:
        s = load_settings()
    except ConfigError as exc:
        # One line that says what to fix, not a traceback.
        print(f"streamgate: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logs(s.instance_id, s.log_format)
    uvicorn.run(
        "app.main:app",
        host=s.host,
        port=s.port,
        ws_ping_interval=s.heartbeat_interval_s,
        ws_ping_timeout=s.heartbeat_interval_s,
        # Frames a little over MAX_FRAME_BYTES get a `too_large` error frame;
        # far over it, the server closes with 1009 before buffering them.
        ws_max_size=4 * s.max_frame_bytes,
        log_config=None,
        # /ws on streamgate's own protocol class (app/lean.py, measured in
        # docs/benchmarks.md); any other WebSocket path on uvicorn's
        # websockets-sansio through the ASGI app.
        ws=LEAN_WS,
        # A negotiated permessage-deflate costs each socket a zlib compressor
        # and decompressor with full windows, ~47 KiB, more than the rest of
        # an idle socket (docs/benchmarks.md), while the frames that make the
        # traffic (fan-out, replay pages, answers) are written to the
        # transport as shared, uncompressed bytes anyway.
        ws_per_message_deflate=False,
        # The drain has closed every socket before uvicorn's own shutdown
        # starts; a request task still running after this long is cancelled
        # rather than allowed to keep the process alive.
        timeout_graceful_shutdown=SHUTDOWN_TASKS_S,
    )


if __name__ == "__main__":
    main(prog="python -m app")
