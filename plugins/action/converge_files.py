# The collection's one way to compare what a role wants on a host with
# what is there, and to write only what differs. See
# plugins/modules/converge_files.py for the documentation.
"""Action plugin asgi.provisioner.converge_files."""

from __future__ import annotations

import hashlib
import os
import secrets
import shlex
import shutil
import tempfile
from contextlib import contextmanager

from ansible import constants as C
from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.action import ActionBase
from ansible.template import trust_as_template
from ansible_collections.asgi.provisioner.plugins.module_utils.converge_files import (
    ARGUMENT_SPEC,
)

try:  # what the template action renders with (ansible-core 2.19)
    from ansible._internal._templating import _template_vars
except ImportError:  # pragma: no cover
    _template_vars = None

# One shell call reads every item; each argument is "<kind>:<name>" and
# gives one line "<kind>:<name>\t<state>":
#   path     link <target> | absent | directory <mode> <owner> <group>
#            | file <sha1> <mode> <owner> <group>
#   unit     <is-enabled or absent> <is-active or unknown>
#   package  installed | missing
#   listing  the names in the directory, each followed by "/"
#   account  <gid of the group>:<the user's gid>:<home>:<shell>:<password field>
#            (the name is "<user>/<group>")
READ_SCRIPT = r"""
for spec in "$@"; do
  kind=${spec%%:*}; name=${spec#*:}
  case $kind in
    path)
      if [ -L "$name" ]; then v="link $(readlink "$name")"
      elif [ ! -e "$name" ]; then v=absent
      elif [ -d "$name" ]; then v="directory $(stat -c '%#a %U %G' "$name")"
      else v="file $(sha1sum < "$name" | cut -c1-40) $(stat -c '%#a %U %G' "$name")"; fi ;;
    unit)
      e=$(systemctl is-enabled "$name" 2>/dev/null); a=$(systemctl is-active "$name" 2>/dev/null)
      v="${e:-absent} ${a:-unknown}" ;;
    package)
      if dpkg-query -W -f '${db:Status-Abbrev}' "$name" 2>/dev/null | grep -q '^ii'; then v=installed; else v=missing; fi ;;
    listing)
      v=$(find "$name" -mindepth 1 -maxdepth 1 -printf '%f/' 2>/dev/null) ;;
    account)
      u=${name%%/*}; g=${name#*/}
      v="$(getent group "$g" | cut -d: -f3):$(getent passwd "$u" | cut -d: -f4,6,7):$(getent shadow "$u" | cut -d: -f2)" ;;
    *) v=unknown ;;
  esac
  printf '%s\t%s\n' "$spec" "$v"
done
"""

# What a written file's result keeps (never its content, digest or source).
KEPT = ("changed", "failed", "msg")


def _mode(value):
    """A mode as the read prints it ("0644"), from "0644", "644" or 420."""
    number = value if isinstance(value, int) else int(str(value), 8)
    return f"0{number:o}"


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def run(self, tmp=None, task_vars=None):
        try:
            return self._run(task_vars or {})
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)

    def _run(self, task_vars):
        result = super().run(None, task_vars)
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        files = [dict(item) for item in args["files"]]
        directories = [dict(item) for item in args["directories"]]
        links = [dict(item) for item in args["links"]]
        absent = list(args["absent"])
        write = args["write"]
        # Staging writes nothing live; in check mode nothing is written at all.
        stage = args["stage"] and not self._task.check_mode

        # The wanted content, rendered here on the controller.
        for item in files:
            item["rendered"] = self._render(item, task_vars) if item.get("src") else to_text(item["content"])
            digest = hashlib.sha1(to_bytes(item["rendered"])).hexdigest()
            item["wanted"] = " ".join(["file", digest, _mode(item["mode"]), item["owner"], item["group"]])

        specs = (
            ["path:" + item["dest"] for item in files]
            + ["path:" + item["path"] for item in directories]
            + ["path:" + item["dest"] for item in links]
            + ["path:" + path for path in absent]
            + ["unit:" + name for name in args["units"]]
            + ["package:" + name for name in args["packages"]]
            + ["listing:" + path for path in args["listings"]]
            + [f"account:{item['user']}/{item['group']}" for item in args["accounts"]]
        )
        found = self._read(specs)

        def differs(path, wanted):
            return found.get("path:" + path, "absent") != wanted

        out = {"files": {}, "directories": {}, "links": {}, "absent": {}, "differs": []}
        for item in files:
            out["files"][item["dest"]] = {"changed": False, "differed": differs(item["dest"], item["wanted"])}
        for item in directories:
            wanted = " ".join(["directory", _mode(item["mode"]), item["owner"], item["group"]])
            out["directories"][item["path"]] = {"changed": False, "differed": differs(item["path"], wanted)}
        for item in links:
            out["links"][item["dest"]] = {"changed": False, "differed": differs(item["dest"], "link " + item["src"])}
        for path in absent:
            out["absent"][path] = {"changed": False, "differed": differs(path, "absent")}
        for group in ("files", "directories", "links", "absent"):
            out["differs"] += [path for path, state in out[group].items() if state["differed"]]
        out["units"] = {name: dict(zip(("enabled", "active"), found.get("unit:" + name, "absent unknown").split(" ", 1)))
                        for name in args["units"]}
        out["packages_missing"] = [name for name in args["packages"] if found.get("package:" + name) != "installed"]
        out["listings"] = {path: [n for n in found.get("listing:" + path, "").split("/") if n] for path in args["listings"]}
        out["accounts"] = {}
        for item in args["accounts"]:
            got = found.get(f"account:{item['user']}/{item['group']}", "")
            gid, _, rest = got.partition(":")
            wanted = f"{gid}:{item['home']}:{item['shell']}:!"
            out["accounts"][item["user"]] = {"as_wanted": bool(gid) and rest == wanted}

        out["apply"] = []
        if write:
            diffs = []
            order = [("directories", item, item["path"]) for item in directories]
            order += [("files", item, item["dest"]) for item in files]
            order += [("links", item, item["dest"]) for item in links]
            order += [("absent", path, path) for path in absent]
            for group, item, path in order:
                if not out[group][path]["differed"]:
                    continue
                if stage and group != "directories":
                    done, operation = self._stage(group, item, found.get("path:" + path, "absent"), task_vars)
                    out["apply"] += operation
                else:
                    done = self._write(group, item, task_vars)
                if done.get("failed"):
                    result.update(failed=True, msg=f"{path}: {done.get('msg', 'failed')}", **out)
                    return result
                out[group][path].update({key: done[key] for key in KEPT if key in done})
                if done.get("diff") and not (group == "files" and item.get("secret")):
                    for diff in done["diff"] if isinstance(done["diff"], list) else [done["diff"]]:
                        diffs.append(dict(diff, before_header=path, after_header=path) if group == "files" else diff)
            if diffs:
                result["diff"] = diffs
        result.update(out)
        result["changed"] = any(state["changed"] for group in ("files", "directories", "links", "absent")
                                for state in out[group].values())
        return result

    def _render(self, item, task_vars):
        """A role template, rendered as the template action renders it (the
        same searchpath, ansible_managed and template_* variables). The
        template lookup would copy every variable deeply for each file: a
        fifth of a no-op run's controller time on eight hosts."""
        if _template_vars is None:  # an ansible-core without the template action's helper
            lookup = self._shared_loader_obj.lookup_loader.get("ansible.builtin.template", loader=self._loader, templar=self._templar)
            return to_text(lookup.run([item["src"]], variables=dict(task_vars, **item["vars"]))[0])
        source = self._find_needle("templates", item["src"])
        data = trust_as_template(self._loader.get_text_file_contents(source))
        searchpath = list(task_vars.get("ansible_search_path", [])) + [self._loader._basedir, os.path.dirname(source)]
        searchpath = [path for base in searchpath for path in (os.path.join(base, "templates"), base)]
        variables = dict(task_vars, **item["vars"])
        variables.update(_template_vars.generate_ansible_template_vars(
            path=item["src"], fullpath=source, dest_path=item["dest"],
            include_ansible_managed="ansible_managed" not in variables))
        templar = self._templar.copy_with_new_env(searchpath=searchpath, available_variables=variables)
        return to_text(templar.template(data, escape_backslashes=False) or "")

    def _read(self, specs):
        if not specs:
            return {}
        command = f"/bin/sh -c {shlex.quote(READ_SCRIPT)} read {' '.join(shlex.quote(s) for s in specs)}"
        # Its answer holds the digests of the host's files, secret ones too:
        # the connection does not print it, even at -vvv.
        with self._unlogged():
            answer = self._low_level_execute_command(command, sudoable=True)
        if answer["rc"] != 0:
            raise AnsibleActionFail(f"reading the host's files failed: {to_text(answer.get('stderr', '')).strip()}")
        found = {}
        for line in to_text(answer["stdout"]).splitlines():
            spec, _, state = line.partition("\t")
            found[spec] = state
        return found

    @contextmanager
    def _unlogged(self):
        """The connection's no_log for a while: at -vvv it prints every
        command's answer unless the play context says no_log."""
        context = self._connection._play_context
        before = context.no_log
        context.no_log = True
        try:
            yield
        finally:
            context.no_log = before

    def _write(self, group, item, task_vars):
        if group == "files":
            return self._copy(item, task_vars)
        if group == "directories":
            args = {"path": item["path"], "state": "directory"}
            args.update({k: item[k] for k in ("owner", "group", "mode") if item.get(k) is not None})
        elif group == "links":
            # A file or directory where the link goes is left alone (and the
            # run fails naming it); in check mode the target may not exist yet.
            args = {"path": item["dest"], "src": item["src"], "state": "link", "force": bool(self._task.check_mode)}
            args.update({k: item[k] for k in ("owner", "group") if item.get(k) is not None})
        else:
            args = {"path": item, "state": "absent"}
        return self._execute_module(module_name="ansible.legacy.file", module_args=args, task_vars=task_vars)

    def _stage(self, group, item, before, task_vars):
        """A change left for the caller to put live: a file is written as
        .<name>.asgi-new-<random> beside its path (its diff is the live file's, from
        the copy action in check mode); a link or removal is only listed."""
        if group == "files":
            dest = item["dest"]
            # A name of this run's own: two inventory names of one machine
            # may stage the same host-wide file at once.
            staged = os.path.join(os.path.dirname(dest), f".{os.path.basename(dest)}.asgi-new-{secrets.token_hex(4)}")
            diff = None
            if self._task.diff and not item.get("secret"):
                diff = self._copy(item, task_vars, check_mode=True).get("diff")
            done = self._copy(item, task_vars, dest=staged)
            done.pop("diff", None)
            if diff:
                done["diff"] = diff
            return done, ["put", dest, staged]
        if group == "links":
            after, operation = "link " + item["src"], ["link", item["dest"], item["src"]]
            path = item["dest"]
        else:
            after, operation, path = "absent", ["remove", item], item
        diff = {"before_header": path, "after_header": path, "before": before + "\n", "after": after + "\n"}
        return {"changed": True, "diff": diff}, operation

    def _copy(self, item, task_vars, dest=None, check_mode=False):
        """The file through the copy action (check mode, --diff and become
        as the copy module does them)."""
        workdir = tempfile.mkdtemp(dir=C.DEFAULT_LOCAL_TMP)
        try:
            source = os.path.join(workdir, os.path.basename(item["dest"]) or "content")
            with open(to_bytes(source), "wb") as handle:
                handle.write(to_bytes(item["rendered"]))
            task = self._task.copy()
            task.args = {"src": source, "dest": dest or item["dest"]}
            if check_mode:
                task.check_mode = True
            elif dest:
                task.diff = False
            task.args.update({k: item[k] for k in ("owner", "group", "mode") if item.get(k) is not None})
            if item.get("secret"):
                task.diff = False
            action = self._shared_loader_obj.action_loader.get(
                "ansible.legacy.copy", task=task, connection=self._connection, play_context=self._play_context,
                loader=self._loader, templar=self._templar, shared_loader_obj=self._shared_loader_obj,
            )
            if not item["secret"]:
                return action.run(task_vars=task_vars)
            # The copy module answers with the new file's digest.
            with self._unlogged():
                return action.run(task_vars=task_vars)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

