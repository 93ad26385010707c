"""molecule/managers, last: systemd -> supervisor under load; the host
ends on the scenario's own manager."""

from manager_suite import assert_switch_under_load


def test_switch_back_to_supervisor_under_load(host):
    assert_switch_under_load(host, "supervisor")
