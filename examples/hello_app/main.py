"""The sample ASGI app the provisioner deploys by default.

It reports what an operator wants to see through the whole stack: which
release, host and worker answered, and which client address and scheme the app
saw once nginx's forwarded headers were applied.

The handlers that never block are `async def`: FastAPI runs a plain `def`
handler in a thread pool, and that hop cost about 110 us of CPU per request
on the benchmark host, more than the app's own work and nginx's together
(bench/). /credentials reads files, so it stays a plain `def`.
"""

import os
import socket
from pathlib import Path

from fastapi import FastAPI, Request, WebSocket

HERE = Path(__file__).resolve().parent
VERSION = (HERE / "VERSION").read_text(encoding="utf-8").strip()
# The release directory this code was deployed in (<root>/releases/<id>/app).
RELEASE = HERE.parent.name if HERE.parent.parent.name == "releases" else "dev"

app = FastAPI(title="hello", version=VERSION)


@app.get("/")
async def index() -> dict:
    return {
        "app": "hello",
        "message": os.environ.get("HELLO_GREETING", "Hello, world"),
        "version": VERSION,
        "release": RELEASE,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


@app.get("/health")
async def health() -> dict:
    return {"status": "ok", "version": VERSION}


@app.get("/request")
async def request_info(request: Request) -> dict:
    """Echo the client address and scheme the app saw, and the Host asked for."""
    return {
        "client": request.client.host if request.client else None,
        "scheme": request.url.scheme,
        "host": request.headers.get("host"),
    }


@app.get("/credentials")
def credentials() -> dict:
    """Names and sizes of the systemd credentials this process can read (never their values)."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return {"credentials": {}}
    files = sorted(Path(directory).iterdir())
    return {"credentials": {path.name: len(path.read_bytes()) for path in files}}


@app.websocket("/ws")
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    async for message in websocket.iter_text():
        await websocket.send_text(message)
