import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "resources"))

from testlib import ssh_host


@pytest.fixture(scope="module")
def host():
    """The machine both apps live on (its inventory names are the apps')."""
    return ssh_host("asgi-multi")
