"""What a newcomer reads first: the README, the licence and notice, the release notes.

The README's commands and snippet must run as written, and its headline table must be the
one ``benchmarks/paper.py --report`` computes from ``benchmarks/results/*.csv``.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CHANGELOG = (ROOT / "CHANGELOG.md").read_text()


def code_blocks(text, language):
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def section(text, title):
    """The text of a ``## title`` section, up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert match, f"no section '## {title}'"
    return match.group(1)


def test_readme_starts_with_the_commands():
    """The main job and the tests are the first thing on the page, as short commands, and the
    test command is the one CI runs."""
    first = code_blocks(README, "bash")[0]
    assert README.splitlines()[:3] == ["# skcgcnn", "", "```bash"]
    commands = [line.split("#")[0].strip() for line in first.splitlines()]
    assert commands == ["pip install torch==2.13.0 && pip install -e .",
                        "python examples/elasticity_ensemble.py",
                        'pip install -e ".[test]" && python -m pytest']
    assert all(len(line) <= 100 for line in first.splitlines())
    assert (ROOT / "examples" / "elasticity_ensemble.py").is_file()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "python -m pytest" in ci
    assert any(re.fullmatch(r'python -m pip install .*-e "\.\[test\]"', line) for line in ci)
    assert any("torch==2.13.0" in line for line in ci)


def test_readme_has_a_normal_and_an_editable_install():
    install = code_blocks(section(README, "Install"), "bash")[0]
    commands = [line.split("#")[0].strip() for line in install.splitlines()]
    assert "pip install ." in commands
    assert any(c.startswith("pip install -e ") for c in commands)


def test_readme_is_short_and_its_links_exist():
    assert len(README) <= 8000, f"README.md has {len(README)} characters (at most about 8,000)"
    links = re.findall(r"\]\(([^)#]+)[^)]*\)", README)
    assert links
    for link in links:
        if not re.match(r"https?://", link):
            assert (ROOT / link).exists(), f"README links to a missing file: {link}"


def test_readme_snippet_runs(tmp_path):
    """The snippet of "A first model", shortened (fewer crystals and members) but otherwise as
    written, run in a fresh process from the repository root: it prints the test MAE in log10
    GPa and a 90 % interval in GPa."""
    code = code_blocks(section(README, "A first model"), "python")[0]
    assert "load_mp_elasticity()" in code and "np.log10" in code
    for full, short in [("train_size=300, test_size=500", "train_size=60, test_size=20"),
                        ("n_estimators=5", "n_estimators=3")]:
        assert full in code, f"the README snippet changed: update this test ({full!r})"
        code = code.replace(full, short)
    script = tmp_path / "snippet.py"
    script.write_text(code)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    mae = re.search(r"^test MAE (\d+\.\d+) log10 GPa$", proc.stdout, flags=re.M)
    assert mae and 0 < float(mae.group(1)) < 0.5, proc.stdout
    interval = re.search(r": 90 % interval (\d+)-(\d+) GPa, DFT (\d+) GPa$", proc.stdout,
                         flags=re.M)
    assert interval and int(interval.group(1)) <= int(interval.group(2)), proc.stdout


def _table(text):
    """The lines of the first markdown table that has a 'best classical' column."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| target")
                 and "best classical" in line)
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")),
               len(lines))
    return lines[start:end]


@pytest.fixture
def paper():
    """``benchmarks/paper.py`` as a module; sys.path and sys.modules restored afterwards."""
    path, modules = list(sys.path), set(sys.modules)
    spec = importlib.util.spec_from_file_location("paper", ROOT / "benchmarks" / "paper.py")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path[:] = path
        for name in set(sys.modules) - modules:
            if name in ("paper", "common"):
                del sys.modules[name]


def test_headline_table_is_computed_from_the_results(paper):
    """README table == the generated block of docs/benchmarks.md == what the report writer
    computes from benchmarks/results/*.csv now."""
    import pandas as pd

    frames = {t: pd.read_csv(paper.RESULTS / f"{paper.slug(t)}.csv") for t in paper.TARGETS}
    computed = paper.report_headline(frames)
    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    block = doc[doc.index(paper.HEAD_BEGIN):doc.index(paper.HEAD_END) + len(paper.HEAD_END)]
    hint = "run `python benchmarks/paper.py --report` and copy its table into README.md"
    assert block == "\n".join(computed), hint
    assert _table(README) == _table(block), hint
    assert doc.index(paper.HEAD_BEGIN) < doc.index("## How it was run"), \
        "docs/benchmarks.md opens with the headline"


def test_licence_and_notice_are_shipped():
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "skcgcnn developers" in licence
    notice = (ROOT / "NOTICE").read_text()
    for needed in ("CC BY 4.0", "Jain", "de Jong", "mp_elasticity.npz", "pretrained"):
        assert needed in notice
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert set(project["license-files"]) >= {"LICENSE", "NOTICE"}


def test_changelog_is_release_notes():
    """Keep a Changelog: an Unreleased section with Added / Changed / Fixed, one line per
    entry, short enough to scan."""
    assert len(CHANGELOG) <= 12000, f"CHANGELOG.md has {len(CHANGELOG)} characters"
    unreleased = section(CHANGELOG, "[Unreleased]")
    for kind in ("Added", "Changed", "Fixed"):
        assert f"\n### {kind}\n" in unreleased
    for line in CHANGELOG.splitlines():
        assert not line.startswith("  "), f"an entry runs over several lines: {line!r}"
