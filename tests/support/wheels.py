"""Offline venvs for the packaging tests: an empty venv, and wheels made back
from distributions installed in this environment.

A fresh venv that must hold only ``streamgate-client`` needs its two
dependencies as wheels; fetching them would make the test depend on a
package index. An installed distribution's RECORD lists every file it put
down, so zipping those files with its dist-info (and a new RECORD) gives back
an installable wheel of exactly what is installed here.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from importlib.metadata import distribution
from pathlib import Path

from .timeouts import scaled


def fresh_venv(path: Path) -> Path:
    """An empty venv (no pip, no system site-packages); its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True,
                   capture_output=True, timeout=scaled(120))
    return path / "bin" / "python"


def _tag(dist_info: Path) -> str:
    """The first ``Tag:`` of the dist-info's WHEEL file (e.g. py3-none-any)."""
    for line in (dist_info / "WHEEL").read_text().splitlines():
        if line.startswith("Tag:"):
            return line.split(":", 1)[1].strip()
    raise ValueError(f"{dist_info}: WHEEL has no Tag")


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def repack_installed(name: str, out: Path) -> Path:
    """A wheel of the installed distribution ``name``, written into ``out``."""
    dist = distribution(name)
    files = [f for f in dist.files or [] if "__pycache__" not in f.parts and not str(f).startswith("..")]
    info = next(f for f in files if f.parts[0].endswith(".dist-info")).parts[0]
    root = Path(str(dist.locate_file("")))
    version, project = dist.version, dist.metadata["Name"].replace("-", "_")
    out.mkdir(parents=True, exist_ok=True)
    wheel = out / f"{project}-{version}-{_tag(root / info)}.whl"
    record: list[str] = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for f in files:
            if f.name in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json") and f.parts[0] == info:
                continue
            data = (root / f).read_bytes()
            z.writestr(str(f), data)
            record.append(f"{f},{_digest(data)},{len(data)}")
        record.append(f"{info}/RECORD,,")
        z.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return wheel
