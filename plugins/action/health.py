# Waits until an app answers its health path with 200 on its unix socket,
# in one command on the host; fails with the last answer and the app's last
# log lines. See plugins/modules/health.py for the documentation.
"""Action plugin asgi.provisioner.health."""

from __future__ import annotations

import shlex

from ansible.plugins.action import ActionBase

ARGUMENT_SPEC = {
    "socket": {"type": "path", "required": True},
    "path": {"type": "str", "required": True},
    "timeout": {"type": "int", "required": True},
    "host": {"type": "str", "required": True},
    "scheme": {"type": "str", "required": True, "choices": ["http", "https"]},
    "log_command": {"type": "list", "elements": "str", "required": True},
    "app": {"type": "str", "required": True},
    "release": {"type": "str", "default": ""},
}

# Run by the host's python3: GET $2 on the unix socket $1, with Host $4
# and X-Forwarded-Proto $5, every 0.2 s until it answers 200 or $3 seconds
# have passed; prints the status, or the last answer (status line and the
# start of the body) or error, then the app's last log lines (the command
# in the remaining arguments), and exits 1.
PROBE = r"""
import socket, subprocess, sys, time
path, url, limit, host, scheme = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
deadline = time.monotonic() + limit
last = "no answer"
while True:
    try:
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(max(1.0, deadline - time.monotonic()))
            conn.connect(path)
            conn.sendall(("GET %s HTTP/1.0\r\nHost: %s\r\nX-Forwarded-Proto: %s\r\n\r\n"
                          % (url, host, scheme)).encode())
            answer = b""
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        if status.split(" ")[1:2] == ["200"]:
            print("200")
            sys.exit(0)
        last = status + " " + body[:300].decode("utf-8", "replace")
    except OSError as error:
        last = str(error)
    if time.monotonic() >= deadline:
        print(last)
        log = subprocess.run(sys.argv[6:], capture_output=True, text=True, errors="replace")
        print("--- the app's last log lines (" + " ".join(sys.argv[6:]) + "):")
        print((log.stdout + log.stderr).rstrip()[-8000:])
        sys.exit(1)
    time.sleep(0.2)
"""

# How much of the probe's output a failure's message keeps.
SHOWN = 4000


class ActionModule(ActionBase):
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        argv = ["python3", "-c", PROBE, args["socket"], args["path"], str(args["timeout"]),
                args["host"], args["scheme"], *args["log_command"]]
        done = self._low_level_execute_command(" ".join(shlex.quote(arg) for arg in argv), sudoable=True)
        # The probe's output goes into the message alone (not shown twice).
        result.update(changed=False, rc=done["rc"])
        if done["rc"] != 0:
            answer = f"{done['stdout']} {done['stderr']}".strip()
            if len(answer) > SHOWN:
                answer = answer[:SHOWN - 3] + "..."
            result["failed"] = True
            result["msg"] = (
                f"{args['app']} did not answer {args['path']} with 200 within {args['timeout']} s"
                f" (release {args['release'] or '?'}): last answer {answer}"
            )
        return result
