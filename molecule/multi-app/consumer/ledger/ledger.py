"""The ledger team's app: Starlette, settings from the environment."""

import os

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


async def home(request):
    return JSONResponse({"app": "ledger", "greeting": os.environ.get("LEDGER_GREETING", "")})


async def health(request):
    return JSONResponse({"ok": True})


app = Starlette(routes=[Route("/", home), Route("/health", health)])
