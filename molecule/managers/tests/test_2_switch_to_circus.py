"""molecule/managers: the host leaves supervisor for circus under load."""

from manager_suite import assert_switch_under_load


def test_switch_from_supervisor_to_circus_under_load(host):
    assert_switch_under_load(host, "circus")
