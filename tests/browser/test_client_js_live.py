"""The browser SDK (client/js) against a real instance behind the shipped nginx.

node runs tests/browser/sdk_refresh_live.mjs: a token refreshed in band before it
expires keeps the connection, its room and its ids; presence and history
answer over HTTP. Afterwards neither nginx's access log nor the instance's
log may contain any token the SDK used (they travel in
``Sec-WebSocket-Protocol`` and ``Authorization``, never in a URL).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from ops.local import procs
from tests.support import Instance
from tests.support.programs import require
from tests.support.timeouts import scaled
from tests.support.tokens import SECRET

HERE = Path(__file__).resolve().parent


def _node_with_websocket() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    probe = subprocess.run([node, "--experimental-websocket", "-e",
                            "process.exit(typeof WebSocket === 'function' ? 0 : 1)"],
                           capture_output=True, timeout=scaled(30))
    if probe.returncode != 0:
        pytest.skip("this node has no WebSocket (node 20.10+ is needed)")
    return node


def test_sdk_refreshes_in_band_and_keeps_tokens_out_of_the_logs(
    make_instance: Callable[..., Instance], tmp_path: Path
) -> None:
    node = _node_with_websocket()
    require("nginx")
    inst = make_instance("JS", AUTH_MODE="jwt", JWT_SECRET=SECRET)
    port = procs.free_port()
    proxy = procs.start_nginx(port, [inst.port], tmp_path / "nginx")
    tokens_out = tmp_path / "tokens.txt"
    try:
        env = dict(os.environ, STREAMGATE_LIVE_URL=f"ws://127.0.0.1:{port}/ws",
                   STREAMGATE_LIVE_SECRET=SECRET, STREAMGATE_LIVE_TOKENS_OUT=str(tokens_out))
        done = subprocess.run([node, "--experimental-websocket", "--no-warnings", "--test",
                               str(HERE / "sdk_refresh_live.mjs")],
                              cwd=HERE, env=env, capture_output=True, text=True, timeout=scaled(90))
    finally:
        procs.stop(proxy.pid, scaled(5), proxy.started)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    assert "# pass 1" in out and "# skipped 0" in out, out[-3000:]
    tokens = tokens_out.read_text().split()
    assert len(tokens) >= 3  # the short one, its refresh, the publisher's
    access = (tmp_path / "nginx" / "access.log").read_text()
    assert "GET /ws " in access and "/messages " in access
    app_log = inst.log_path.read_text()
    for token in tokens:
        signature = token.rsplit(".", 1)[1]
        payload = token.split(".")[1]
        for text in (access, app_log):
            assert signature not in text and payload not in text
