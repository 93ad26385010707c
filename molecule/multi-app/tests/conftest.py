import sys
from pathlib import Path

import pytest
import testinfra

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "resources"))


@pytest.fixture(scope="module")
def host():
    """The machine both apps live on (its inventory names are the apps')."""
    return testinfra.get_host("podman://asgi-multi")
