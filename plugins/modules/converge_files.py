# The documentation of the action plugin plugins/action/converge_files.py,
# which does the work on the controller: this file only documents it (and
# declares its arguments for `ansible-doc` and linters).
"""Module documentation of asgi.provisioner.converge_files."""

from __future__ import annotations

DOCUMENTATION = r"""
module: converge_files
short_description: Compare a role's files with the host's in one call, and write only those that differ
description:
  - Renders the role's templates on the controller, reads every listed path's state (content digest, mode,
    owner, group; a link's target; absence), the units' and packages' states, directory listings and
    accounts in one shell call on the host, and writes only the files, directories and links that differ
    (through the copy and file modules, so check mode, C(--diff) and become behave as theirs do).
  - Results are keyed by path. No content, digest or secret appears in the task's arguments or result;
    a file marked I(secret) shows no diff.
  - The one mechanism of the collection's roles for their own files (python, app, gunicorn, nginx).
  - With I(stage), nothing live changes; the new files wait beside the live ones for the caller to swap them in.
version_added: 1.0.0
author: asgi-provisioner developers
options:
  files:
    description: Files wanted on the host.
    type: list
    elements: dict
    suboptions:
      dest: {description: Path on the host., type: str, required: true}
      src: {description: Template of the role (templates/), rendered with the task's variables., type: str}
      content: {description: Content instead of a template., type: str}
      owner: {description: Owner., type: str, required: true}
      group: {description: Group., type: str, required: true}
      mode: {description: Mode (octal string)., type: str, required: true}
      secret: {description: Never show a diff of this file., type: bool, default: false}
      vars: {description: "Variables of this file's template alone (e.g. which secret it holds: its name, not its value).", type: dict, default: {}}
  directories:
    description: Directories wanted on the host.
    type: list
    elements: dict
    suboptions:
      path: {description: Path on the host., type: str, required: true}
      owner: {description: Owner., type: str, required: true}
      group: {description: Group., type: str, required: true}
      mode: {description: Mode (octal string)., type: str, required: true}
  links:
    description: Symbolic links wanted on the host.
    type: list
    elements: dict
    suboptions:
      dest: {description: The link., type: str, required: true}
      src: {description: What it points to., type: str, required: true}
  absent:
    description: Paths that must not exist.
    type: list
    elements: str
  units:
    description: systemd units whose is-enabled and is-active states to read.
    type: list
    elements: str
  packages:
    description: Debian packages to check are installed.
    type: list
    elements: str
  listings:
    description: Directories whose entries to list.
    type: list
    elements: str
  accounts:
    description: System users to check (primary group, home, shell, locked password).
    type: list
    elements: dict
    suboptions:
      user: {description: User name., type: str, required: true}
      group: {description: Its primary group., type: str, required: true}
      home: {description: Its home directory., type: str, required: true}
      shell: {description: Its shell., type: str, required: true}
  write:
    description: Write what differs (false only reads and compares).
    type: bool
    default: true
  stage:
    description:
      - Leave the live files as they are, for a caller that puts every change live as one and can undo it
        (the nginx role's C(asgi-nginx-apply)). A file that differs is written beside its path, as
        C(.<name>.asgi-new-<random>) in the same directory (hidden, so no C(*) include matches it); links and paths
        to remove are not touched. The result's I(apply) lists the operations that put them live.
      - Directories are created as usual. In check mode nothing is staged; the diffs are those of the live files.
    type: bool
    default: false
attributes:
  check_mode: {support: full, description: Reads, and reports what it would write.}
  diff_mode: {support: full, description: The diffs of written files but secret ones.}
"""

EXAMPLES = r"""
- name: Write gunicorn's files, read the units' states
  asgi.provisioner.converge_files:
    files:
      - {src: etc/app/gunicorn.conf.py.j2, dest: /etc/hello/gunicorn.conf.py, owner: root, group: hello, mode: "0640"}
    units: [hello.socket, hello.service]
  register: written
"""

RETURN = r"""
files:
  description: Per path, whether it differed before the run (differed) and was written (changed).
  type: dict
  returned: always
directories:
  description: The same, per directory.
  type: dict
  returned: always
links:
  description: The same, per link.
  type: dict
  returned: always
absent:
  description: The same, per path that must not exist.
  type: dict
  returned: always
differs:
  description: Every path that differed.
  type: list
  returned: always
units:
  description: Per unit, its enabled and active states (absent and unknown when there is no such unit).
  type: dict
  returned: always
packages_missing:
  description: The packages not installed.
  type: list
  returned: always
listings:
  description: Per directory, the names in it (empty when it does not exist).
  type: dict
  returned: always
accounts:
  description: Per user, whether it exists as wanted (as_wanted).
  type: dict
  returned: always
apply:
  description:
    - With I(stage), the staged changes as the arguments of C(asgi-nginx-apply), in order
      (C(put <path> <staged file>), C(link <path> <target>), C(remove <path>)); empty otherwise.
  type: list
  elements: str
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.asgi.provisioner.plugins.module_utils.converge_files import (
    ARGUMENT_SPEC,
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    module.fail_json(msg="converge_files runs as an action plugin on the controller; it has no module to run on a host")


if __name__ == "__main__":
    main()
