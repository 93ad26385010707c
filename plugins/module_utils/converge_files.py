# The arguments of asgi.provisioner.converge_files, shared by the action
# plugin (which validates its task's arguments with it) and the module's
# documentation stub.
"""Argument spec of asgi.provisioner.converge_files."""

from __future__ import annotations

_FILE = {
    "dest": {"type": "str", "required": True},
    "src": {"type": "str"},
    "content": {"type": "str", "no_log": False},
    "owner": {"type": "str", "required": True},
    "group": {"type": "str", "required": True},
    "mode": {"type": "str", "required": True},
    "secret": {"type": "bool", "default": False},
    "vars": {"type": "dict", "default": {}},
}
_DIRECTORY = {
    "path": {"type": "str", "required": True},
    "owner": {"type": "str", "required": True},
    "group": {"type": "str", "required": True},
    "mode": {"type": "str", "required": True},
}
_LINK = {"dest": {"type": "str", "required": True}, "src": {"type": "str", "required": True}}
_ACCOUNT = {
    "user": {"type": "str", "required": True},
    "group": {"type": "str", "required": True},
    "home": {"type": "str", "required": True},
    "shell": {"type": "str", "required": True},
}

ARGUMENT_SPEC = {
    "files": {"type": "list", "elements": "dict", "default": [], "options": _FILE,
              "mutually_exclusive": [["src", "content"]], "required_one_of": [["src", "content"]]},
    "directories": {"type": "list", "elements": "dict", "default": [], "options": _DIRECTORY},
    "links": {"type": "list", "elements": "dict", "default": [], "options": _LINK},
    "absent": {"type": "list", "elements": "str", "default": []},
    "units": {"type": "list", "elements": "str", "default": []},
    "packages": {"type": "list", "elements": "str", "default": []},
    "listings": {"type": "list", "elements": "str", "default": []},
    "accounts": {"type": "list", "elements": "dict", "default": [], "options": _ACCOUNT},
    "write": {"type": "bool", "default": True},
    "stage": {"type": "bool", "default": False},
}
