# The documentation of the action plugin plugins/action/health.py, which
# does the work: this file only documents it (and declares its arguments
# for `ansible-doc` and linters).
"""Module documentation of asgi.provisioner.health."""

from __future__ import annotations

DOCUMENTATION = r"""
module: health
short_description: Wait until an app answers its health path with 200 on its unix socket
description:
  - One command on the host (its python3, no module sent) asks I(path) on the unix socket I(socket), as nginx
    would (Host I(host), X-Forwarded-Proto I(scheme)), every 0.2 s until the answer is 200 or I(timeout) seconds
    have passed.
  - On failure, the message names the app, the path, the release and the last answer (status line and the start
    of the body, or the connection's error), followed by the app's last log lines (the output of I(log_command)).
  - Runs in check mode too (it only reads); with become, as the become user (the socket's directory is
    usually root's and the app group's only).
version_added: 1.0.0
author: asgi-provisioner developers
options:
  socket:
    description: The app's unix socket on the host.
    type: path
    required: true
  path:
    description: The health path to ask for.
    type: str
    required: true
  timeout:
    description: Seconds to wait for a 200.
    type: int
    required: true
  host:
    description: The Host header of the request.
    type: str
    required: true
  scheme:
    description: What the request says it came over (X-Forwarded-Proto).
    type: str
    required: true
    choices: [http, https]
  log_command:
    description: The command (argv) whose output is the app's last log lines, shown on failure.
    type: list
    elements: str
    required: true
  app:
    description: How the failure message names the app (e.g. C(hello on web1)).
    type: str
    required: true
  release:
    description: The release the failure message names.
    type: str
    default: ""
attributes:
  check_mode: {support: full, description: Asks the app in check mode too.}
"""

EXAMPLES = r"""
- name: Wait for the app's health endpoint
  asgi.provisioner.health:
    socket: /run/hello/hello.sock
    path: /health
    timeout: 30
    host: hello.example.com
    scheme: http
    log_command: [journalctl, --unit, hello.service, --lines, "40", --no-pager]
    app: hello on web1
"""

RETURN = r"""
rc:
  description: 0 once the app answered 200.
  type: int
  returned: always
msg:
  description: What went wrong, on failure, with the last answer and the app's last log lines.
  type: str
  returned: failed
"""
