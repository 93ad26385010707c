"""molecule/managers: circus -> systemd under load; the release tests
(test_5) run under systemd, then the host goes back to supervisor."""

from manager_suite import assert_settings_arrive_as_written, assert_switch_under_load


def test_switch_to_systemd_under_load(host):
    assert_switch_under_load(host, "systemd")


def test_settings_arrive_as_written_under_systemd(host):
    """The gunicorn role's units read the env file with systemd's
    EnvironmentFile=: the same values as under supervisor and circus."""
    assert_settings_arrive_as_written(host)
