"""The ASGI app: `bookshelf.main:app`."""

import os
import socket

from fastapi import FastAPI, Request
from starlette.middleware.trustedhost import TrustedHostMiddleware

from bookshelf.settings import Settings, settings

app = FastAPI(title="bookshelf")
app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)


@app.get("/")
async def index() -> dict:
    return {"app": "bookshelf", "message": settings.greeting, "host": socket.gethostname(), "pid": os.getpid()}


@app.get("/health")
async def health() -> dict:
    return {"status": "ok"}


@app.get("/request")
async def request_info(request: Request) -> dict:
    return {
        "client": request.client.host if request.client else None,
        "scheme": request.url.scheme,
        "host": request.headers.get("host"),
    }


@app.get("/settings")
async def show_settings() -> dict:
    """The settings as parsed, and the raw environment they came from."""
    names = [f"{Settings.model_config['env_prefix']}{field}".upper() for field in Settings.model_fields]
    return {"parsed": settings.model_dump(mode="json"), "environ": {name: os.environ.get(name) for name in names}}
