"""The variable tables of the role READMEs, generated from the roles.

Each roles/<role>/README.md has one table under `## Variables`: a row per
option of the role's `main` entry point (meta/argument_specs.yml, in its
order), with its type, its default as defaults/main.yml writes it and its
description. `make docs` rewrites the tables; `make lint` (and the suite's
lint) runs this with --check, which fails naming every stale README.

    python molecule/role_docs.py [--check]
"""

import argparse
import re
import sys
from pathlib import Path

import yaml

ROLES = Path(__file__).resolve().parents[1] / "roles"
HEADER = "| variable | type | default | what it does |\n|---|---|---|---|\n"
NOTE = (
    "<!-- Generated from meta/argument_specs.yml and defaults/main.yml by `make docs`;"
    " `make lint` fails when it is stale. -->\n"
)
# The note (if there), the header and every row after it.
TABLE = re.compile(r"(?:<!-- Generated from [^\n]*-->\n\n?)?\| variable \| type \| default \| what it does \|\n\|---\|---\|---\|---\|\n(?:\|[^\n]*\n)*")


def cell(text):
    """One line, with the table's separator escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def kind(option):
    name = option.get("type", "str")
    if name == "list" and option.get("elements"):
        name = f"list of {option['elements']}"
    if option.get("choices"):
        name += " (" + ", ".join(f"`{choice}`" for choice in option["choices"]) + ")"
    return name


def shown(value):
    """A default as YAML would write it inline."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=1 << 16).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def table(role):
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    rows = []
    for name, option in specs["main"]["options"].items():
        description = option.get("description", "")
        if isinstance(description, list):
            description = " ".join(description)
        default = defaults[name] if name in defaults else option.get("default")
        rows.append(f"| `{name}` | {cell(kind(option))} | `{cell(shown(default))}` | {cell(description)} |\n")
    return NOTE + "\n" + HEADER + "".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a README's table is not what it would be")
    args = parser.parse_args()
    stale = []
    for role in sorted(p for p in ROLES.iterdir() if (p / "meta" / "argument_specs.yml").exists()):
        readme = role / "README.md"
        text = readme.read_text()
        found = TABLE.findall(text)
        if len(found) != 1:
            sys.exit(f"{readme}: expected one variables table, found {len(found)}")
        start, end = TABLE.search(text).span()
        wanted = text[:start] + table(role) + text[end:]
        if wanted != text:
            stale.append(str(readme.relative_to(ROLES.parent)))
            if not args.check:
                readme.write_text(wanted)
    if args.check and stale:
        sys.exit("stale variable tables (run `make docs`): " + ", ".join(stale))
    print(("rewrote: " + ", ".join(stale)) if stale and not args.check else "variable tables up to date")


if __name__ == "__main__":
    main()
