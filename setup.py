"""Build hook of the server distribution; everything else is in pyproject.toml.

The browser SDK is developed as its own npm package in ``client/js``, but
every instance serves it at ``/static/streamgate.js``. So that a wheel is
self-contained without a second copy checked in, the build copies the SDK's
files into the wheel's ``app/static`` (see ``app/static.py``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SDK_DIR = HERE / "client" / "js"
SDK_FILES = ("streamgate.js", "streamgate.d.ts")


class BuildWithBrowserSdk(build_py):
    """``build_py`` plus the browser SDK's files under ``app/static``."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return  # an editable install serves them from client/js directly
        target = Path(self.build_lib) / "app" / "static"
        target.mkdir(parents=True, exist_ok=True)
        for name in SDK_FILES:
            shutil.copyfile(SDK_DIR / name, target / name)


setup(cmdclass={"build_py": BuildWithBrowserSdk})
