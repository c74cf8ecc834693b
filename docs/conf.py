"""Sphinx configuration of the skcgcnn documentation.

Build with ``python -m sphinx -W --keep-going -b html docs docs/_build/html``
(``pip install -e .[docs]``). The gallery executes ``examples/plot_*.py``;
the other scripts in ``examples/`` (the README's minutes-long jobs) are left
out of the gallery.
"""

import json
import os
import re
import sys
import warnings
from pathlib import Path

import torch

import skcgcnn

HERE = Path(__file__).resolve().parent
EXAMPLES = (HERE / ".." / "examples").resolve()
GENERATED = HERE / "gen_modules"

# -- project -----------------------------------------------------------------
project = "skcgcnn"
author = "the skcgcnn developers"
copyright = "2025, the skcgcnn developers"
release = skcgcnn.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
# results/ holds data files and notes that the markdown pages link to, not pages
exclude_patterns = ["_build", "results", "**/*.ipynb", "**/*.rst.inc",
                    "auto_examples/*.py", "auto_examples/*.zip"]

# -- autodoc, autosummary, numpydoc -----------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"
numpydoc_show_class_members = False  # members come from autodoc, our own only
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True

intersphinx_mapping = {}  # offline builds: no inventories are fetched

# Markdown notes (docs/*.md) are written alongside the benchmarks and may link to
# files outside docs/ (scripts, CSV results); those links are not pages.
suppress_warnings = ["myst.header", "myst.xref_missing"]
myst_heading_anchors = 3

# -- sphinx-gallery ----------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": os.path.relpath(EXAMPLES, HERE),
    "gallery_dirs": "auto_examples",
    # only plot_*.py are gallery examples: examples/elasticity_ensemble.py and
    # examples/dcdft_transfer.py (minutes each) are never run here
    "filename_pattern": r"plot_",
    "ignore_pattern": r"^(?!plot_)",
    "within_subsection_order": "FileNameSortKey",
    "doc_module": ("skcgcnn",),
    "backreferences_dir": os.path.join("gen_modules", "backreferences"),
    "reference_url": {"skcgcnn": None},
    "remove_config_comments": True,
    "abort_on_example_error": False,
    "show_memory": False,
    "download_all_examples": False,
    "plot_gallery": "True",
}

# The gallery trains small networks inside this process. On a busy machine torch's
# OpenMP threads spin-wait for one another and a 2-second fit can take minutes; one
# thread is as fast for 71 crystals and keeps the build time predictable.
torch.set_num_threads(int(os.environ.get("SKCGCNN_DOCS_THREADS", "1")))

# -- HTML --------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"skcgcnn {release}"
html_static_path = []
html_theme_options = {
    "description": "Transfer learning with crystal graph networks in scikit-learn",
    "fixed_sidebar": False,
}

# Third-party noise at build time is not ours to fix.
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", module="pymatgen")
warnings.filterwarnings("ignore", message="Matplotlib is currently using agg")


# -- generated pages ---------------------------------------------------------
def _cell(value):
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _fmt(value, spec=".4g"):
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value)
    if isinstance(value, (int, float)):
        return format(value, spec) if isinstance(value, float) else f"{value:,}"
    return str(value)


def _test_mae(card):
    """The card's test MAE in the target's units, or None (keys as written by pretrain.py)."""
    for key in ("test_mae", "test_mae_" + str(card.get("units", ""))):
        if key in card and isinstance(card[key], (int, float)):
            return card[key]
    metrics = card.get("metrics")
    if isinstance(metrics, dict):
        for key in ("test_mae", "mae_test"):
            if isinstance(metrics.get(key), (int, float)):
                return metrics[key]
    return None


def write_pretrained_cards(path=GENERATED / "pretrained_cards.rst.inc"):
    """Render every bundled model card (skcgcnn/pretrained/*.json) as rST.

    Cards are read at build time, so the page follows retrained models.
    """
    from skcgcnn.pretrained import list_pretrained

    cards = list_pretrained()
    lines = []
    if not cards:
        lines += ["No pretrained model is bundled with this installation.", ""]
    else:
        lines += [".. list-table:: Bundled pretrained models (read from their cards at build time)",
                  "   :header-rows: 1", "",
                  "   * - name", "     - target (units)", "     - training data",
                  "     - train / validation / test", "     - test MAE",
                  "     - best epoch / trained", "     - featurizer"]
        for name, card in cards.items():
            units = card.get("units", "")
            sizes = " / ".join(_fmt(card.get(k)) for k in ("n_train", "n_validation", "n_test"))
            if isinstance(card.get("test_mae"), list):  # a multi-property model
                mae = ", ".join(f"{_fmt(m)} {u}" for m, u in zip(card["test_mae"], units))
                card = {**card, "target": ", ".join(card["target"])}
                units = ", ".join(units)
            else:
                mae = _test_mae(card)
                mae = "not recorded" if mae is None else f"{_fmt(mae)} {units}".strip()
            feat = card.get("featurizer", {})
            lines += [f"   * - ``{name}``",
                      f"     - {_cell(card.get('target', '?'))} ({_cell(units) or 'no units'})",
                      f"     - {_cell(card.get('data', '—'))}",
                      f"     - {sizes}",
                      f"     - {_cell(mae)}",
                      f"     - {_fmt(card.get('best_epoch'))} / {_fmt(card.get('epochs_trained'))}",
                      f"     - {_fmt(feat.get('max_num_nbr'))} neighbours within "
                      f"{_fmt(feat.get('radius'))} Å"]
        lines.append("")
        for name, card in cards.items():
            title = f"Model card: ``{name}``"
            lines += [title, "~" * len(title), ""]
            command = card.get("training_command")
            if command:
                lines += ["Retrain it with::", "", f"    {command}", ""]
            lines += [".. code-block:: json", ""]
            lines += ["   " + line for line in json.dumps(card, indent=2, sort_keys=True).splitlines()]
            lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def write_cli_help(path=GENERATED / "cli_help.rst.inc"):
    """``skcgcnn --help`` and each subcommand's help, as literal blocks."""
    try:
        from skcgcnn.cli import build_parser
    except ImportError:
        text = "The ``skcgcnn`` command is not part of this installation.\n"
    else:
        import argparse

        os.environ.setdefault("COLUMNS", "88")
        parser = build_parser()
        blocks = [("skcgcnn --help", parser.format_help())]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    blocks.append((f"skcgcnn {name} --help", sub.format_help()))
        out = []
        for title, body in blocks:
            out += [f"``{title}``", "", "::", ""]
            out += ["    " + line if line else "" for line in body.rstrip().splitlines()]
            out.append("")
        text = "\n".join(out) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


NOTES_FIRST = ("performance", "scaleout", "benchmarks")


def notes_toctree_entries(srcdir=HERE):
    """Markdown notes in docs/ (performance, scale-out, benchmarks, ... as they exist)."""
    names = sorted(p.stem for p in Path(srcdir).glob("*.md"))
    return [n for n in NOTES_FIRST if n in names] + [n for n in names if n not in NOTES_FIRST]


def _fill_notes(app, docname, source):
    if docname == "notes":
        entries = notes_toctree_entries(app.srcdir)
        listing = "\n".join(f"   {name}" for name in entries) or ""
        source[0] = source[0].replace("   .. notes-toctree-entries", listing)
        if not entries:
            source[0] += "\nNo notes are in this build.\n"


def _skip_member(app, what, name, obj, skip, options):
    # scikit-learn's generated metadata-routing setters (set_fit_request, ...)
    # are documented by scikit-learn; their docstrings use its glossary
    if re.fullmatch(r"set_\w+_request", name):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_member)
    write_pretrained_cards()
    write_cli_help()
    app.connect("source-read", _fill_notes)
