"""Install a release's Python dependencies as its project declares them.

Run by the host's python3 as root (the app role's build.yml and
bundle.yml), in a release directory holding the code in app/ and the venv
in venv/:

  release_deps.py install RELEASE [options]   RELEASE/venv, made when
                                              missing, installed; app/
                                              compiled to bytecode
  release_deps.py pack RELEASE --to DIR --archive FILE
                                              a bundle of RELEASE for DIR

Where the dependencies come from (--source, "auto" detects in this order):
  uv-lock       uv.lock with pyproject.toml: exactly the locked versions of
                the project's dependencies (plus --extra/--group), then the
                project itself when it is a package (a src layout imports)
  pylock        pylock.toml (PEP 751), installed by uv as it lists it; its
                entries from a directory (the project) as it says
  requirements  the requirements file (--requirements-file), hashes or not
  pyproject     pyproject.toml without a lock: resolved now, and said so
  none          nothing but the server stack (an explicit choice)
  package       a requirement spec (--package-spec) instead of source code

The server stack (--server) is installed beside them, except a package the
app pins itself: the app's pin wins, and the output says so. Afterwards
every pin of the app must be installed at its version, or the run fails
naming both versions. A bundle is a release built and installed this way
once, on one host, in a build directory: `pack` rewrites the paths its
venv's scripts carry (shebangs, activate) to the release directory every
host unpacks it into, and packs it.

Each failure is one line on stderr that says what to do, and exit code 2.
"""

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
LIST_DISTRIBUTIONS = (
    "import importlib.metadata as m, json; "
    "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
)
PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*===?\s*([^\s;\\]+)")


class Refused(Exception):
    """A problem of the input: the message says what to do."""


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def run(argv, cwd=None):
    print("+ " + " ".join(argv), file=sys.stderr, flush=True)
    done = subprocess.run(
        argv,
        check=False,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if done.returncode != 0:
        raise Refused(
            f"{Path(argv[0]).name} {argv[1]} failed (exit {done.returncode}):\n{done.stdout.strip()[-4000:]}"
        )
    return done.stdout


def requirement_lines(path, seen=None):
    """The requirement lines of a requirements file and the files it
    includes (-r), joined across backslash continuations."""
    seen = seen or set()
    path = path.resolve()
    if path in seen:
        return []
    seen.add(path)
    text = path.read_text(encoding="utf-8").replace("\\\n", " ")
    lines = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        include = re.match(r"^(-r|--requirement)[\s=]+(\S+)", line)
        if include:
            lines += requirement_lines(path.parent / include.group(2), seen)
        elif not line.startswith("-"):
            lines.append(line)
    return lines


def pins_of(lines):
    """{canonical name: version} of the lines pinned with == (or ===)."""
    pins = {}
    for line in lines:
        match = PIN.match(line)
        if match:
            pins[canonical(match.group(1))] = match.group(3)
    return pins


# requires-python: the usual specifier operators, enough to compare an
# interpreter's version (PEP 440 release segments only).
def version_tuple(text):
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def satisfies(version, specifiers):
    have = version_tuple(version)
    for spec in filter(None, (s.strip() for s in specifiers.split(","))):
        match = re.match(r"^(~=|===|==|!=|<=|>=|<|>)\s*(\S+)$", spec)
        if not match:
            continue
        op, want_text = match.groups()
        wildcard = want_text.endswith(".*")
        want = version_tuple(want_text)
        cut = have[: len(want)] if wildcard else have + (0,) * (len(want) - len(have))
        ok = {
            "==": cut == want
            if wildcard
            else have[: len(want)] == want and not any(have[len(want) :]),
            "===": have == want,
            "!=": cut != want if wildcard else have[: len(want)] != want,
            ">=": have >= want,
            "<=": have[: len(want)] <= want,
            ">": have > want,
            "<": have < want,
            "~=": have >= want
            and have[: max(1, len(want) - 1)] == want[: max(1, len(want) - 1)],
        }[op]
        if not ok:
            return False
    return True


def read_pyproject(app):
    import tomllib

    with open(app / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)


def is_package(pyproject):
    """uv's rule: a project is built and installed when it declares a build
    system, unless tool.uv.package says otherwise."""
    flag = pyproject.get("tool", {}).get("uv", {}).get("package")
    return bool(flag) if flag is not None else "build-system" in pyproject


def detect(app, args):
    if args.source == "package":
        return "package"
    if args.source != "auto":
        return args.source
    if (app / "uv.lock").is_file() and (app / "pyproject.toml").is_file():
        return "uv-lock"
    if (app / "pylock.toml").is_file():
        return "pylock"
    if (app / args.requirements_file).is_file():
        return "requirements"
    if (app / "pyproject.toml").is_file():
        return "pyproject"
    raise Refused(
        f"the source tree declares no dependencies: no uv.lock, no pylock.toml, no {args.requirements_file},"
        " no pyproject.toml"
        f" in {args.source_name}. Add one, set app_requirements_file to the file you have, or set"
        " app_dependencies: none to install the server stack alone"
    )


def read_pylock(app):
    import tomllib

    with open(app / "pylock.toml", "rb") as handle:
        return tomllib.load(handle)


def refuse_python(wanted, python_version, where):
    if wanted and not satisfies(python_version, wanted):
        raise Refused(
            f"the project requires Python {wanted} (requires-python in {where}), but the host's"
            f" interpreter is Python {python_version}: run it on a distro whose Python satisfies it,"
            " or change requires-python"
        )


def plan(release, args, python_version):
    """What the release installs: writes RELEASE/deps (plan.json, the
    app's pinned lines with and without hashes) and returns the plan."""
    app = release / "app"
    deps = release / "deps"
    deps.mkdir(exist_ok=True)
    source = detect(app, args)
    notes = []
    project = False
    lines = []
    if source in ("uv-lock", "pyproject"):
        if not (app / "pyproject.toml").is_file():
            raise Refused(
                f"app_dependencies is {source} but {args.source_name} has no pyproject.toml"
            )
        pyproject = read_pyproject(app)
        refuse_python(
            pyproject.get("project", {}).get("requires-python", ""),
            python_version,
            "pyproject.toml",
        )
        project = is_package(pyproject)
    if source == "uv-lock":
        if not (app / "uv.lock").is_file():
            raise Refused(
                f"app_dependencies is uv-lock but {args.source_name} has no uv.lock (run `uv lock`)"
            )
        if not args.uv:
            raise Refused("uv.lock needs uv on the host: set python_installer: uv")
        export = [
            args.uv,
            "export",
            "--frozen",
            "--format",
            "requirements-txt",
            "--no-default-groups",
            "--no-emit-project",
            "--no-header",
            "--no-annotate",
            "--output-file",
            str(deps / "locked.txt"),
        ]
        export += [f"--extra={extra}" for extra in args.extra] + [
            f"--group={group}" for group in args.group
        ]
        run(export, cwd=app)
        lines = requirement_lines(deps / "locked.txt")
        notes.append(f"uv.lock: {len(lines)} locked packages")
    elif source == "pylock":
        if not (app / "pylock.toml").is_file():
            raise Refused(
                f"app_dependencies is pylock but {args.source_name} has no pylock.toml"
            )
        if not args.uv:
            raise Refused(
                "pylock.toml needs uv on the host (pip does not install it): set python_installer: uv"
            )
        lock = read_pylock(app)
        refuse_python(lock.get("requires-python", ""), python_version, "pylock.toml")
        packages = lock.get("packages", [])
        # Pinned entries; one from a directory (the project, often
        # editable) is installed as the lock says and has no version pin.
        lines = [
            f"{entry['name']}=={entry['version']}"
            for entry in packages
            if "version" in entry
        ]
        notes.append(f"pylock.toml: {len(packages)} locked packages")
    elif source == "requirements":
        path = app / args.requirements_file
        if not path.is_file():
            raise Refused(
                f"app_dependencies is requirements but {args.source_name} has no {args.requirements_file}"
                " (app_requirements_file)"
            )
        lines = requirement_lines(path)
        hashed = "--hash" in path.read_text(encoding="utf-8")
        notes.append(
            f"{args.requirements_file}: {len(lines)} requirements"
            + (", hash-checked" if hashed else "")
        )
    elif source == "pyproject":
        notes.append(
            "pyproject.toml without a lock file: dependencies resolved now, at build"
        )
    elif source == "package":
        lines = [args.package_spec]
    pins = pins_of(lines)
    # The app's own pins of the server stack win over app_server_packages.
    server = []
    for spec in args.server:
        name = canonical(NAME.match(spec).group(1))
        if name in pins:
            notes.append(
                f"{name}=={pins[name]} pinned by the app wins over {spec} (app_server_packages)"
            )
        else:
            server.append(spec)
    (deps / "pins.txt").write_text(
        "".join(f"{name}=={version}\n" for name, version in sorted(pins.items())),
        encoding="utf-8",
    )
    result = {
        "source": source,
        "project": project,
        "server": server,
        "pins": pins,
        "notes": notes,
    }
    (deps / "plan.json").write_text(
        json.dumps(result, indent=1) + "\n", encoding="utf-8"
    )
    return result


def install(release, args):
    """The release's venv (made first when missing), its dependencies and
    the server stack, the pins checked, then the app's own bytecode: the
    code is read-only for the app, so compiled now rather than never."""
    app = release / "app"
    venv_python = str(release / "venv" / "bin" / "python")
    if not Path(venv_python).exists():
        venv = str(release / "venv")
        run(
            [args.uv, "venv", "--quiet", "--python", args.python, venv]
            if args.uv
            else [args.python, "-m", "venv", venv]
        )
    python_version = run(
        [venv_python, "-c", "import platform; print(platform.python_version())"]
    ).strip()
    the_plan = plan(release, args, python_version)
    if args.uv:
        base = [args.uv, "pip", "install", "--quiet", "--compile-bytecode"]
        base += ["--python", venv_python]
    else:
        base = [str(release / "venv" / "bin" / "pip"), "install", "--quiet"]
        base += ["--disable-pip-version-check", "--compile"]
    # uv checks the hashes a requirements file gives and resolves it
    # with the server stack; pip's hash-checking mode wants a hash for
    # every requirement of a command, so the file goes alone first.
    for arguments in steps(
        the_plan, args, app, release / "deps", joint_requirements=bool(args.uv)
    ):
        run(base + arguments)
    check_pins(release, the_plan)
    run([venv_python, "-m", "compileall", "-q", str(app)])
    print("dependencies: " + "; ".join([the_plan["source"]] + the_plan["notes"]))


def check_pins(release, the_plan):
    """Every version the app pins is the installed one. A pin that is
    not installed at all was left out by its environment marker (the
    installer fails on anything else it cannot install)."""
    listing = run([str(release / "venv" / "bin" / "python"), "-c", LIST_DISTRIBUTIONS])
    have = {
        canonical(name): version
        for name, version in json.loads(listing.splitlines()[-1]).items()
    }
    wrong = [
        f"{name}: the app pins {want}, the venv has {have[name]}"
        for name, want in sorted(the_plan["pins"].items())
        if have.get(name, want) != want
    ]
    if wrong:
        raise Refused(
            "the release's venv does not hold the app's pinned versions (another requirement, "
            "such as app_server_packages, asks for a different one): "
            + "; ".join(wrong)
        )


def steps(the_plan, args, app, deps, joint_requirements):
    """The arguments of each install command, in order:
    the app's own set, then the server stack (with a package spec or a
    lock-less project) constrained to the app's pins, then the project
    itself from its lock."""
    source = the_plan["source"]
    commands = []
    more = list(the_plan["server"])
    if source == "uv-lock":
        commands.append(["--no-deps", "-r", str(deps / "locked.txt")])
    elif source == "pylock" and "directories" in the_plan:
        commands.append(["--no-deps", "-r", str(deps / "locked.txt")])
        commands += [["--no-deps", directory] for directory in the_plan["directories"]]
    elif source == "pylock":
        commands.append(
            ["-r", str(app / "pylock.toml")]
            + [f"--extra={extra}" for extra in args.extra]
            + [f"--group={group}" for group in args.group]
        )
    elif source == "requirements" and joint_requirements:
        more += ["-r", str(app / args.requirements_file)]
    elif source == "requirements":
        commands.append(["-r", str(app / args.requirements_file)])
    elif source == "pyproject":
        more += (
            [str(app)] if the_plan["project"] else ["-r", str(app / "pyproject.toml")]
        )
    elif source == "package":
        more.append(args.package_spec)
    if more:
        commands.append(
            (["-c", str(deps / "pins.txt")] if the_plan["pins"] else []) + more
        )
    if source == "uv-lock" and the_plan["project"]:
        commands.append(["--no-deps", str(app)])
    return commands


def relocate(release, args):
    """The venv was built in RELEASE and is unpacked into args.to on every
    host: the paths its scripts carry (entry points' shebangs, including
    the long-path form that execs from /bin/sh, and the activate scripts)
    and pyvenv.cfg are rewritten to the destination. Only text that
    names the build's venv changes; binaries and symlinks are left alone."""
    if args.to is None:
        raise Refused("relocate needs --to, the release directory the venv goes to")
    venv = release / "venv"
    old = str(venv).encode()
    new = str(args.to / "venv").encode()
    changed = 0
    for path in sorted((venv / "bin").iterdir()) + [venv / "pyvenv.cfg"]:
        if path.is_symlink() or not path.is_file():
            continue
        content = path.read_bytes()
        if b"\0" in content[:8192] or old not in content:
            continue
        path.write_bytes(content.replace(old, new))
        changed += 1
    print(f"relocated: {changed} files of {venv} now name {args.to / 'venv'}")


def pack(release, args):
    """A bundle: the venv relocated to args.to, then the code, the venv
    and the install plan in one archive, compressed by zstd at its default
    level on every core. Against gzip -1 it packs faster, sends less and
    unpacks with a fraction of the CPU on each host (figures in the
    README's Benchmarks)."""
    if args.archive is None:
        raise Refused("pack needs --archive, the file to write")
    relocate(release, args)
    run(
        ["tar", "-C", str(release), "-I", "zstd -q -T0", "-cf", str(args.archive)]
        + ["app", "venv", "deps"]
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["install", "pack"])
    parser.add_argument("release", type=Path)
    parser.add_argument(
        "--source",
        default="auto",
        choices=[
            "auto",
            "uv-lock",
            "pylock",
            "requirements",
            "pyproject",
            "none",
            "package",
        ],
    )
    parser.add_argument(
        "--source-name", default="the source tree", help="how errors name the source"
    )
    parser.add_argument("--requirements-file", default="requirements.txt")
    parser.add_argument("--extra", action="append", default=[])
    parser.add_argument("--group", action="append", default=[])
    parser.add_argument("--server", action="append", default=[])
    parser.add_argument("--package-spec", default="")
    parser.add_argument("--uv", default="", help="uv's path; pip when empty")
    parser.add_argument(
        "--python", default=sys.executable, help="the interpreter of a new venv"
    )
    parser.add_argument(
        "--to", type=Path, help="pack: the release directory the venv is unpacked into"
    )
    parser.add_argument("--archive", type=Path, help="pack: the bundle to write")
    args = parser.parse_args()
    os.umask(0o022)
    try:
        (install if args.mode == "install" else pack)(args.release, args)
    except Refused as refused:
        print(f"error: {refused}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
