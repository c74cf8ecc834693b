"""Print the lowest versions pyproject.toml declares, as pip requirements (name==floor).

Every runtime dependency must declare a floor (``>=``); ``.ci/run`` installs
exactly these versions in a fresh virtualenv and runs a fast subset of the
tests there, so that a floor that no longer holds fails CI.
"""

import re
import sys
import tomllib

with open("pyproject.toml", "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
for dep in deps:
    match = re.match(r"\s*([A-Za-z0-9_.\[\]-]+)\s*>=\s*([^,;\s]+)", dep)
    if match is None:
        sys.exit(f"dependency {dep!r} in pyproject.toml declares no floor (>=)")
    print(f"{match.group(1)}=={match.group(2)}")
