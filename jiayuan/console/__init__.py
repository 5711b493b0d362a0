"""The staff console: a single page (plain HTML, CSS and ES modules, no build step) served at
``/``, its files under ``/console/``. It reads the same API as everyone else.

Only the files shipped in ``static/`` are served, looked up by name: no path from a request
ever reaches the file system.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final

from fastapi import APIRouter, HTTPException
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

STATIC: Final = Path(__file__).parent / "static"
_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
FILES: Final = {p.name: p for p in STATIC.iterdir() if p.suffix in _TYPES}
HEADERS: Final = {
    # revalidate every load (cheap: ETag → 304), so a new version is never half-cached
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(include_in_schema=False)


def _file(name: str) -> FileResponse:
    path = FILES.get(name)
    if path is None:
        raise HTTPException(404, f"no console file '{name}'")
    return FileResponse(path, media_type=_TYPES[path.suffix], headers=HEADERS)


@router.get("/")
def get_console() -> FileResponse:
    """The console's page; everything else it loads from ``/console/`` and ``/api/``."""
    return _file("index.html")


@router.get("/console/{name}")
def get_console_file(name: Annotated[str, PathParam(max_length=64)]) -> FileResponse:
    return _file(name)
