"""ASGI entry point of the journal project: `journal.asgi:application`."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "journal.settings")

application = get_asgi_application()
