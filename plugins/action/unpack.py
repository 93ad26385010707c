# Unpacks an archive of the controller into a directory of the host: the
# file goes over the connection and one tar runs there. No Python module
# runs on the host (the unarchive module runs two, and reads the archive
# three times). See plugins/modules/unpack.py for the documentation.
"""Action plugin asgi.provisioner.unpack."""

from __future__ import annotations

import os
import shlex

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

ARGUMENT_SPEC = {
    "src": {"type": "str", "required": True},
    "dest": {"type": "str", "required": True},
}


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        try:
            _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
            src, dest = args["src"], args["dest"]
            if not os.path.isfile(src):
                raise AnsibleActionFail(f"{src} is not a file on the controller")
            result["changed"] = True
            if self._task.check_mode:
                return result
            archive = self._connection._shell.join_path(self._connection._shell.tmpdir, os.path.basename(src))
            self._transfer_file(src, archive)
            self._fixup_perms2((self._connection._shell.tmpdir, archive))
            # GNU tar: the compression (gzip, zstd) is read from the file; as root, owners
            # and modes are kept as packed. dest must exist.
            done = self._low_level_execute_command(
                f"tar -x -f {shlex.quote(archive)} -C {shlex.quote(dest)}", sudoable=True
            )
            if done["rc"] != 0:
                raise AnsibleActionFail(
                    f"tar could not unpack {os.path.basename(src)} into {dest}: {done['stderr'].strip() or done['stdout'].strip()}"
                )
            return result
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
