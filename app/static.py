"""Where the demo page and the browser assets live.

The browser SDK is its own npm package (``client/js``) and is developed
there; an instance serves it at ``/static/streamgate.js`` all the same, so
pages need no install. Run from a checkout (or an editable install) it is
read from ``client/js``; a built wheel carries it in ``app/static`` (setup.py
copies it there at build time), so one copy is ever checked in.
"""

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
INDEX = STATIC_DIR / "index.html"

SDK_FILES = ("streamgate.js", "streamgate.d.ts")
_SOURCE_SDK_DIR = Path(__file__).resolve().parents[1] / "client" / "js"


def sdk_dir() -> Path:
    """The directory holding the browser SDK's files: the source package's
    in a checkout, the wheel's copy inside ``app/static`` once installed."""
    if (_SOURCE_SDK_DIR / SDK_FILES[0]).is_file():
        return _SOURCE_SDK_DIR
    return STATIC_DIR
