"""The files of an app's source tree that make a release, on the controller.

  source_tree.py digest DIR [--exclude PATTERN]...
      prints the sha256 of the release's files: their paths, contents and
      modes, so the same tree gives the same release id anywhere
  source_tree.py archive DIR OUT.tar.gz --group GROUP [--exclude PATTERN]...
      writes them as one archive (written aside, then renamed into place)

Left out: what matches --exclude (the role's default list and the user's),
and what the tree's .gitignore files ignore, read with git's rules (a
pattern with a slash is anchored to its .gitignore's directory, a trailing
slash matches directories only, `**` spans directories, `!` re-includes,
the last matching line wins, and nothing inside an ignored directory comes
back). The --exclude patterns follow the same rules, from the tree's root.

In the archive everything belongs to root; what the source keeps from
others (no read bit for "other") stays private: group GROUP (the app's)
and no access for others, so the app can read it and no one else can.
"""

import argparse
import hashlib
import os
import re
import stat
import sys
import tarfile
import tempfile
from pathlib import Path


def pattern_regex(pattern):
    """A gitignore pattern (without `!` and the trailing slash) as a regex
    over paths relative to the pattern's base directory."""
    anchored = "/" in pattern
    pattern = pattern.lstrip("/")
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == len(pattern):
            out.append("/.*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                out.append(re.escape("["))
                i += 1
            else:
                body = pattern[i + 1 : end]
                out.append(
                    "[" + ("^" + body[1:] if body.startswith("!") else body) + "]"
                )
                i = end + 1
        elif pattern[i] == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile(("" if anchored else "(?:.*/)?") + "".join(out) + "$")


class Rules:
    """Ignore rules: (base directory, regex, negated, directories only),
    in the order they apply."""

    def __init__(self):
        self.rules = []

    def add(self, base, line):
        line = line.rstrip("\n")
        if not line.startswith("\\ "):
            line = re.sub(r"(?<!\\) +$", "", line)
        if not line or line.startswith("#"):
            return
        negated = line.startswith("!")
        if negated or line.startswith(("\\!", "\\#")):
            line = line[1:]
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        if line:
            self.rules.append((base, pattern_regex(line), negated, dir_only))

    def ignored(self, path, is_dir):
        verdict = False
        for base, regex, negated, dir_only in self.rules:
            if dir_only and not is_dir:
                continue
            if base:
                if not path.startswith(base + "/"):
                    continue
                relative = path[len(base) + 1 :]
            else:
                relative = path
            if regex.match(relative):
                verdict = not negated
        return verdict


def release_files(root, excludes):
    """(relative path, absolute path) of every file and link kept, sorted."""
    rules = Rules()
    for pattern in excludes:
        rules.add("", pattern)
    kept = []

    def walk(directory, relative):
        ignore_file = directory / ".gitignore"
        if ignore_file.is_file():
            for line in ignore_file.read_text(
                encoding="utf-8", errors="replace"
            ).splitlines():
                rules.add(relative, line)
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            path = f"{relative}/{entry.name}" if relative else entry.name
            is_dir = entry.is_dir(follow_symlinks=False)
            if rules.ignored(path, is_dir):
                continue
            if is_dir:
                kept.append((path, Path(entry.path)))
                walk(Path(entry.path), path)
            elif entry.is_file(follow_symlinks=False) or entry.is_symlink():
                kept.append((path, Path(entry.path)))

    walk(root, "")
    return kept


def is_private(mode):
    return not mode & stat.S_IROTH


def digest(root, excludes):
    total = hashlib.sha256()
    for relative, path in release_files(root, excludes):
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            kind, content = "link", os.readlink(path).encode()
        elif stat.S_ISDIR(info.st_mode):
            kind, content = "dir", b""
        else:
            kind, content = "file", b""
            with open(path, "rb") as handle:
                content = hashlib.file_digest(handle, "sha256").digest()
        flags = f"{kind} x={int(bool(info.st_mode & stat.S_IXUSR))} private={int(is_private(info.st_mode))}"
        total.update(f"{relative}\0{flags}\0".encode() + content + b"\0")
    return total.hexdigest()


def archive(root, out, group, excludes):
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=out.parent, prefix=out.name + ".")
    os.close(handle)

    def owned(info):
        info.uid = info.gid = 0
        info.uname = "root"
        private = is_private(info.mode)
        info.gname = group if private else "root"
        executable = info.isdir() or info.mode & stat.S_IXUSR
        info.mode = (
            (0o750 if executable else 0o640)
            if private
            else (0o755 if executable else 0o644)
        )
        info.mtime = int(info.mtime)
        return info

    try:
        with tarfile.open(partial, "w:gz", compresslevel=1) as tar:
            for relative, path in release_files(root, excludes):
                tar.add(path, arcname=relative, recursive=False, filter=owned)
        os.chmod(partial, 0o644)
        os.replace(partial, out)
    except BaseException:
        os.unlink(partial)
        raise


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["digest", "archive"])
    parser.add_argument("root", type=Path)
    parser.add_argument("out", nargs="?")
    parser.add_argument("--group", default="root")
    parser.add_argument("--exclude", action="append", default=[])
    args = parser.parse_args()
    if not args.root.is_dir():
        sys.exit(f"error: {args.root} is not a directory")
    if args.mode == "digest":
        print(digest(args.root, args.exclude))
    else:
        archive(args.root, args.out, args.group, args.exclude)


if __name__ == "__main__":
    main()
