"""Tests of the CI scripts in .ci/."""

import os
import runpy
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOWEST = os.path.join(ROOT, ".ci", "lowest.py")
#: Python 3.10 has no tomllib; a CI machine need not have tomli either.
WITHOUT_TOML = ("import runpy, sys; sys.modules['tomllib'] = sys.modules['tomli'] = None; "
                f"sys.argv = [{LOWEST!r}]; runpy.run_path({LOWEST!r}, run_name='__main__')")


def _run(*argv):
    return subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout


def test_lowest_versions_without_tomllib_equal_those_with_it():
    # .ci/lowest.py imported tomllib (3.11+) while requires-python is >= 3.10
    with_toml = _run(LOWEST)
    assert "numpy==" in with_toml and "scikit-learn==" in with_toml
    assert _run("-c", WITHOUT_TOML) == with_toml


def test_fallback_reads_comments_extras_and_quotes():
    import builtins

    lowest = runpy.run_path(LOWEST)
    text = ('[build-system]\nrequires = ["setuptools>=61"]\n\n[project]\nname = "x"\n'
            'dependencies = [\n  "numpy>=1.25",  # arrays\n  \'pkg[extra]>=2.0\',\n'
            '  "b>=1,<3",\n]\n\n[project.optional-dependencies]\ntest = ["pytest>=8"]\n')
    real_import = builtins.__import__

    def no_toml(name, *args, **kwargs):
        if name in ("tomllib", "tomli"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    builtins.__import__ = no_toml
    try:
        deps = lowest["project_dependencies"](text)
    finally:
        builtins.__import__ = real_import
    assert deps == ["numpy>=1.25", "pkg[extra]>=2.0", "b>=1,<3"]
