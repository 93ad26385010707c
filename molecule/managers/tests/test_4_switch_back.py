"""molecule/managers, last: circus -> systemd -> supervisor under load;
the host ends on the scenario's own manager."""

import pytest
from manager_suite import assert_switch_under_load


@pytest.mark.parametrize("target", ["systemd", "supervisor"])
def test_switch_process_manager_under_load(host, target):
    assert_switch_under_load(host, target)
