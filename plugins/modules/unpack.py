# The documentation of the action plugin plugins/action/unpack.py, which
# does the work: this file only documents it (and declares its arguments
# for `ansible-doc` and linters).
"""Module documentation of asgi.provisioner.unpack."""

from __future__ import annotations

DOCUMENTATION = r"""
module: unpack
short_description: Unpack an archive of the controller into a new directory of the host
description:
  - Sends the archive over the connection and runs one tar on the host (GNU tar, which reads from the file how
    it is compressed; a zstd archive needs the zstd program on the host). No Python module runs on the host; on 8 hosts this takes 0.5 s where the unarchive module takes
    3.6 to 4.6 s for a small tree, and 2.3 s against 6.0 to 6.5 s for a 10 MB release bundle.
  - Meant for a directory just created, as a release's; it does not compare what is there, and always reports
    a change. In check mode nothing is sent.
  - As root, files keep the owners and modes they were packed with.
version_added: 1.0.0
author: asgi-provisioner developers
options:
  src:
    description: The archive on the controller (a tar file, plain, gzip or zstd).
    type: str
    required: true
  dest:
    description: The directory on the host to unpack into; it must exist.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Unpack the source tree
  asgi.provisioner.unpack:
    src: /home/me/.cache/asgi-provisioner/bundles/hello-0123456789ab-source.tar.gz
    dest: /srv/hello/releases/0123456789ab/app
"""

RETURN = r"""
changed:
  description: Always true outside check mode (the archive was unpacked).
  type: bool
  returned: always
"""
