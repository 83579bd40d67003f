"""The distributions: what ``pip wheel`` builds, and that each runs on its own.

- ``streamgate`` (the server): app, streams, ops with every template the
  tools read at run time, the browser SDK under app/static, and the
  ``streamgate`` console script, which works from an installed wheel.
- ``streamgate-client`` (client/python): only ``streamgate_client``,
  depending on websockets and tenacity only; a fresh venv holding nothing
  else runs the client README's program against a running instance.

Nothing is downloaded but the build backend (pip's isolated build fetches
setuptools); when that cannot be had, the tests skip with the reason. The
client's two dependencies are repacked from this environment's own installed
copies (tests/support/wheels.py), so the fresh venv is built offline.
"""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Instance
from tests.support.instance import REPO_ROOT
from tests.support.timeouts import scaled
from tests.support.wheels import fresh_venv, repack_installed

CLIENT_DIR = REPO_ROOT / "client" / "python"
# Not part of any distribution: local state, build output, caches.
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "var", "build", "dist", "*.egg-info", "__pycache__",
                                     ".pytest_cache", "node_modules", "results")
OFFLINE_HINTS = ("No matching distribution", "Could not find a version", "Failed to establish",
                 "Network is unreachable", "Temporary failure in name resolution")


def pip_wheel(source: Path, out: Path) -> Path:
    """``pip wheel --no-deps SOURCE -w OUT``, from a copy of the source (the
    build writes into the tree); the one wheel it made."""
    copy = out.parent / f"src-{source.name}"
    shutil.copytree(source, copy, ignore=COPY_IGNORE)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(copy), "-w", str(out)],
                          capture_output=True, text=True, timeout=scaled(300))
    if done.returncode != 0 and any(h in done.stdout + done.stderr for h in OFFLINE_HINTS):
        pytest.skip("pip cannot fetch the build backend (setuptools) here: no package index reachable")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = [w for w in out.glob("*.whl") if w.name.startswith(_dist_prefix(copy))]
    return wheel


def _dist_prefix(source: Path) -> str:
    name = re.search(r'^name = "([^"]+)"', (source / "pyproject.toml").read_text(), re.M)
    assert name is not None
    return name.group(1).replace("-", "_") + "-"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    out = tmp_path_factory.mktemp("wheels")
    yield {"server": pip_wheel(REPO_ROOT, out / "dist"), "client": pip_wheel(CLIENT_DIR, out / "dist")}


def metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(z.read(name))


def test_pip_wheel_gives_the_two_distributions(wheels: dict[str, Path]) -> None:
    assert wheels["server"].name.startswith("streamgate-")
    assert wheels["client"].name.startswith("streamgate_client-")
    assert metadata(wheels["server"])["Name"] == "streamgate"
    assert metadata(wheels["client"])["Name"] == "streamgate-client"


def test_the_server_wheel_ships_every_template_and_the_browser_sdk(wheels: dict[str, Path]) -> None:
    with zipfile.ZipFile(wheels["server"]) as z:
        names = set(z.namelist())
        entry_points = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
        shipped_js = z.read("app/static/streamgate.js")
    tracked = subprocess.run(["git", "ls-files", "ops", "app/static", "streams/lua"], cwd=REPO_ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    templates = [f for f in tracked if not f.endswith(".py")]
    assert len(templates) >= 15 and any(f.startswith("ops/grafana/") for f in templates)
    missing = [f for f in templates if f not in names]
    assert not missing, f"not in the wheel: {missing}"
    for name in ("streamgate.js", "streamgate.d.ts"):
        assert f"app/static/{name}" in names
    assert shipped_js == (REPO_ROOT / "client" / "js" / "streamgate.js").read_bytes()
    assert {n.split("/")[0] for n in names if not n.startswith("streamgate-")} == {"app", "ops", "streams"}
    assert re.search(r"^streamgate = app\.cli:main$", entry_points, re.M), entry_points


def test_the_client_wheel_holds_the_client_only(wheels: dict[str, Path]) -> None:
    with zipfile.ZipFile(wheels["client"]) as z:
        tops = {n.split("/")[0] for n in z.namelist() if ".dist-info/" not in n}
    assert tops == {"streamgate_client"}
    declared = metadata(wheels["client"]).get_all("Requires-Dist") or []
    requires = sorted(re.split(r"[<>=!~ ;\[]", r)[0].lower() for r in declared if "extra ==" not in r)
    assert requires == ["tenacity", "websockets"]


def test_a_fresh_venv_with_only_the_client_runs_the_readme_example(
    wheels: dict[str, Path], inst_a: Instance, tmp_path: Path
) -> None:
    deps = tmp_path / "deps"
    for dist in ("websockets", "tenacity"):
        repack_installed(dist, deps)
    python = fresh_venv(tmp_path / "venv")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-index",
                              "--find-links", str(deps), str(wheels["client"])],
                             capture_output=True, text=True, timeout=scaled(300))
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]

    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    probe = subprocess.run(
        [str(python), "-I", "-c", "import importlib.util as u; import streamgate_client; "
         "print([m for m in ('app', 'streams', 'fastapi', 'redis', 'uvicorn') if u.find_spec(m)])"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=scaled(60))
    assert probe.returncode == 0 and probe.stdout.strip() == "[]", probe.stdout + probe.stderr

    readme = (CLIENT_DIR / "README.md").read_text()
    program = re.search(r"```python\n(.*?)```", readme, re.S)
    assert program is not None and "ws://127.0.0.1:8000/ws" in program.group(1)
    script = tmp_path / "example.py"
    script.write_text(program.group(1).replace("ws://127.0.0.1:8000/ws", inst_a.ws_url()))
    done = subprocess.run([str(python), "-I", str(script)], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=scaled(60))
    assert done.returncode == 0, done.stdout + done.stderr
    stored = re.search(r"^stored as (\d+-\d+)$", done.stdout, re.M)
    assert stored is not None, done.stdout
    assert f"lobby {stored.group(1)} alice {{'text': 'hello'}}" in done.stdout


def test_the_installed_console_script_serves_help_version_and_refusals(
    wheels: dict[str, Path], tmp_path: Path
) -> None:
    """The server wheel in a venv of its own, its dependencies taken from this
    environment (a path entry, not an install): the ``streamgate`` script and
    the templates resolve inside the installed package, not this checkout."""
    python = fresh_venv(tmp_path / "venv")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                              "--no-index", str(wheels["server"])], capture_output=True, text=True,
                             timeout=scaled(300))
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    deps = subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "shared-deps.pth").write_text(deps + "\n")
    script = python.parent / "streamgate"
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(script), *args], env={**env, **extra}, cwd=tmp_path, capture_output=True,
                              text=True, timeout=scaled(60))

    assert run("--version").stdout.strip() == "streamgate 0.1.0"
    assert "HEARTBEAT_INTERVAL" in run("--help").stdout
    refused = run("serve", AUTH_MODE="none", LOG_FORMAT="xml")
    assert refused.returncode == 2 and refused.stderr.startswith("streamgate: LOG_FORMAT"), refused.stderr
    where = subprocess.run(
        [str(python), "-c", "import app, ops.local.render as r, ops.load.loadtest as l; print(app.__file__); "
         "print(all(p.is_file() for p in (r.NGINX_SITE, r.SENTINEL_CONF, r.REDIS_MASTER_CONF))); "
         "print(l.RESULTS_DIR.resolve())"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=scaled(60))
    assert where.returncode == 0, where.stderr
    module_path, templates_found, results = where.stdout.split()
    assert module_path.startswith(site) and templates_found == "True"
    assert Path(results) == tmp_path / "bench" / "results"  # results land in the working directory
