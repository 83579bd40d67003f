"""Where the demo page and the browser assets live."""

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
INDEX = STATIC_DIR / "index.html"
