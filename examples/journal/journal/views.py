import os
import socket
from pathlib import Path

from django.http import JsonResponse
from posts.models import Post

HERE = Path(__file__).resolve().parent.parent
VERSION = (HERE / "VERSION").read_text(encoding="utf-8").strip()
RELEASE = HERE.parent.name if HERE.parent.parent.name == "releases" else "dev"


def index(request):
    return JsonResponse(
        {
            "app": "journal",
            "message": os.environ.get("JOURNAL_GREETING", ""),
            "version": VERSION,
            "release": RELEASE,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "posts": Post.objects.count(),
            "secure": request.is_secure(),
        }
    )


def health(request):
    return JsonResponse({"status": "ok", "version": VERSION})
