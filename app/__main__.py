"""``python -m app``: serve one instance on HOST:PORT."""

import uvicorn

from .config import load_settings


def main() -> None:
    s = load_settings()
    uvicorn.run("app.main:app", host=s.host, port=s.port, log_level="info")


if __name__ == "__main__":
    main()
