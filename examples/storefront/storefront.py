"""A plain Starlette app with hash-pinned requirements: `storefront:app`.

Like many tutorials, it opens its SQLite database by a relative path: it
needs a writable working directory (app_working_directory: state).
"""

import datetime
import os
import socket
import sqlite3
from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

HERE = Path(__file__).resolve().parent
VERSION = (HERE / "VERSION").read_text(encoding="utf-8").strip()
# Build information the service reports: the release directory it runs from.
RELEASE = HERE.parent.name if HERE.parent.parent.name == "releases" else "dev"
DATABASE = "storefront.db"

# Each process notes its start in the database, in the working directory.
with sqlite3.connect(DATABASE, timeout=10) as db:
    db.execute("CREATE TABLE IF NOT EXISTS starts (pid INTEGER, at TEXT)")
    db.execute("INSERT INTO starts VALUES (?, ?)", (os.getpid(), datetime.datetime.now(datetime.UTC).isoformat()))


def starts():
    with sqlite3.connect(DATABASE, timeout=10) as db:
        return db.execute("SELECT count(*) FROM starts").fetchone()[0]


async def index(request):
    return JSONResponse(
        {
            "app": "storefront",
            "message": os.environ.get("STOREFRONT_GREETING", ""),
            "version": VERSION,
            "release": RELEASE,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "database": str(Path(DATABASE).resolve()),
            "starts": starts(),
        }
    )


async def health(request):
    return JSONResponse({"status": "ok", "version": VERSION})


app = Starlette(routes=[Route("/", index), Route("/health", health)])
