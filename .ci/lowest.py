"""Print the lowest versions pyproject.toml declares, as pip requirements (name==floor).

Every runtime dependency must declare a floor (``>=``); ``.ci/run`` installs
exactly these versions in a fresh virtualenv and runs a fast subset of the
tests there, so that a floor that no longer holds fails CI.

Runs on every Python the project supports (``requires-python >= 3.10``):
``tomllib`` from 3.11, ``tomli`` where it is installed, else a reader of the one
list this script needs (``[project] dependencies``, an array of strings).
"""

import re
import sys


def _strings_of_array(text, start):
    """The quoted strings of the TOML array whose ``[`` is at ``text[start]``."""
    items, i = [], start + 1
    while i < len(text):
        char = text[i]
        if char == "]":
            return items
        if char == "#":  # a comment, to the end of its line
            i = text.find("\n", i)
            i = len(text) if i < 0 else i
        elif char in "\"'":
            end = text.index(char, i + 1)
            items.append(text[i + 1:end])
            i = end
        elif not (char.isspace() or char == ","):
            raise ValueError(f"unexpected {char!r} in pyproject.toml's dependencies")
        i += 1
    raise ValueError("pyproject.toml's dependencies array is not closed")


def project_dependencies(text):
    """``[project] dependencies`` of a pyproject.toml's text."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            tomllib = None
    if tomllib is not None:
        return tomllib.loads(text)["project"]["dependencies"]
    table = re.search(r"^\[project\][ \t]*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    found = table and re.search(r"^dependencies\s*=\s*\[", table.group(1), re.M)
    if not found:
        raise ValueError("pyproject.toml has no [project] dependencies")
    return _strings_of_array(table.group(1), found.end() - 1)


def main():
    with open("pyproject.toml", encoding="utf-8") as f:
        deps = project_dependencies(f.read())
    for dep in deps:
        match = re.match(r"\s*([A-Za-z0-9_.\[\]-]+)\s*>=\s*([^,;\s]+)", dep)
        if match is None:
            sys.exit(f"dependency {dep!r} in pyproject.toml declares no floor (>=)")
        print(f"{match.group(1)}=={match.group(2)}")


if __name__ == "__main__":
    main()
