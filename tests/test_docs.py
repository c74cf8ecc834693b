"""The documentation builds without a warning, gallery included (Sphinx -W)."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
#: Written by a build into the source folder; never copied into the test's build.
BUILD_OUTPUTS = ("_build", "auto_examples", "gen_modules", "sg_execution_times.rst")

MISSING = [m for m in ("sphinx", "numpydoc", "sphinx_gallery", "myst_parser")
           if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(
    bool(MISSING), reason=f"documentation tools not installed ({', '.join(MISSING)}): "
                          "pip install -e .[docs]")


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    """Build the docs from a copy of docs/ and examples/ into a temporary folder.

    A copy, so the build neither writes into the checkout nor reuses a gallery that an
    earlier build ran (sphinx-gallery skips examples whose MD5 it has seen), and two test
    runs at once cannot collide.
    """
    tmp = tmp_path_factory.mktemp("docs")
    shutil.copytree(DOCS, tmp / "docs", ignore=shutil.ignore_patterns(*BUILD_OUTPUTS))
    shutil.copytree(EXAMPLES, tmp / "examples",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp / "html"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MPLBACKEND": "agg"}
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html",
         str(tmp / "docs"), str(out)],
        capture_output=True, text=True, env=env, cwd=tmp, timeout=900)
    assert proc.returncode == 0, (
        f"sphinx exited with {proc.returncode}\n--- stderr ---\n{proc.stderr[-8000:]}"
        f"\n--- stdout ---\n{proc.stdout[-4000:]}")
    return out


def test_index_and_api_pages_exist(html):
    assert (html / "index.html").is_file()
    api = (html / "api.html").read_text()
    for module in ("skcgcnn.graph", "skcgcnn.estimators", "skcgcnn.pretrained",
                   "skcgcnn.datasets", "skcgcnn.io"):
        assert module in api
    assert (html / "gen_modules" / "skcgcnn.TransferCGCNNRegressor.html").is_file()
    assert (html / "gen_modules" / "skcgcnn.CrystalGraphTransformer.html").is_file()


def _gallery_conf_literals():
    """The literal values of docs/conf.py's sphinx_gallery_conf (read, not executed)."""
    import ast

    for node in ast.parse((DOCS / "conf.py").read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == \
                "sphinx_gallery_conf":
            return {ast.literal_eval(k): ast.literal_eval(v)
                    for k, v in zip(node.value.keys, node.value.values)
                    if isinstance(v, ast.Constant)}
    raise AssertionError("docs/conf.py sets no sphinx_gallery_conf")


def test_every_gallery_example_has_a_page():
    """Without a build: the gallery takes every plot_*.py and only those, each has the
    title sphinx-gallery needs, and the gallery is in the documentation's table of contents."""
    import re

    from sphinx_gallery.gen_rst import extract_intro_and_title
    from sphinx_gallery.py_source_parser import split_code_and_text_blocks

    examples = sorted(EXAMPLES.glob("plot_*.py"))
    assert examples, "no gallery examples (examples/plot_*.py)"
    conf = _gallery_conf_literals()
    for path in EXAMPLES.glob("*.py"):
        taken = bool(re.search(conf["filename_pattern"], path.name)) and \
            not re.search(conf["ignore_pattern"], path.name)
        assert taken == path.name.startswith("plot_"), path.name
    for path in examples:
        _, blocks = split_code_and_text_blocks(str(path))[:2]
        assert blocks[0][0] == "text", f"{path.name} starts without a docstring"
        intro, title = extract_intro_and_title(str(path), blocks[0][1])
        assert title and intro, f"{path.name} has no title and introduction"
    assert re.search(r"^\s+auto_examples/index\s*$", (DOCS / "index.rst").read_text(), re.M)


@pytest.mark.parametrize("example", sorted(p.stem for p in EXAMPLES.glob("plot_*.py")))
def test_gallery_example_page(html, example):
    page = html / "auto_examples" / f"{example}.html"
    assert page.is_file(), f"no page for examples/{example}.py"
    text = page.read_text()
    # sphinx-gallery writes a traceback into the page of an example that failed
    assert "Traceback (most recent call last)" not in text


def test_long_scripts_are_not_in_the_gallery(html):
    for script in ("dcdft_transfer", "elasticity_ensemble"):
        assert not (html / "auto_examples" / f"{script}.html").exists()


def test_pretrained_page_renders_every_bundled_card(html):
    from skcgcnn.pretrained import list_pretrained

    text = (html / "user_guide" / "pretrained.html").read_text()
    for name in list_pretrained():
        assert name in text, f"model card {name!r} is not on the pretrained page"
    assert text.count("Model card:") == len(list_pretrained())
