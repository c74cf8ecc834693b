"""How long ``skcgcnn --help`` and ``skcgcnn pretrained`` take, against bare Python.

Examples
--------
python benchmarks/cli_startup.py                 # 7 rounds, writes docs/results/cli_startup.json
python benchmarks/cli_startup.py --rounds 3 --json /tmp/startup.json
python benchmarks/cli_startup.py --compare-with ../other-checkout   # also time that checkout

Each round runs, one after the other and each in a fresh process, bare Python
(``python -c pass``, the floor), ``python -m skcgcnn --help``,
``python -m skcgcnn pretrained`` and ``python -c "import torch"`` (what every
command cost before torch was imported lazily). The figures are the median wall
times over the rounds and their ratios to bare Python, so a loaded machine
shows in the floor too. It also records which heavy libraries each command
imports (none should: ``train --help`` imports torch to show the estimators'
defaults, the training commands import it to train).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "skorch", "sklearn", "pymatgen", "pandas", "numpy", "ase")
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "skcgcnn --help": ["-m", "skcgcnn", "--help"],
    "skcgcnn pretrained": ["-m", "skcgcnn", "pretrained"],
    "python -c 'import torch'": ["-c", "import torch"],
}
PROBE = ("import sys\nfrom skcgcnn.cli import main\ntry:\n    main({argv!r})\n"
         "except SystemExit:\n    pass\nprint(sorted(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)")


def _env(root=ROOT):
    return {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}


def _time(args, root=ROOT):
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, capture_output=True, env=_env(root),
                   cwd=root)  # python -m and -c put the working directory first on sys.path
    return time.perf_counter() - t0


def _heavy_imports(argv):
    done = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)],
                          check=True, capture_output=True, text=True, env=_env(), cwd=ROOT)
    return json.loads(done.stderr.strip().splitlines()[-1].replace("'", '"'))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--json", default=str(ROOT / "docs" / "results" / "cli_startup.json"))
    p.add_argument("--compare-with", metavar="DIR",
                   help="another checkout (e.g. one before lazy imports) to time alongside")
    args = p.parse_args(argv)
    commands = {name: (command, ROOT) for name, command in COMMANDS.items()}
    if args.compare_with:
        done = subprocess.run(["git", "-C", args.compare_with, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True)
        label = f"commit {done.stdout.strip()}" if done.returncode == 0 else args.compare_with
        for name in ("skcgcnn --help", "skcgcnn pretrained"):
            commands[f"{name} ({label})"] = (COMMANDS[name], args.compare_with)
    times = {name: [] for name in commands}
    for _ in range(args.rounds):
        for name, (command, root) in commands.items():
            times[name].append(_time(command, root))
    floor = statistics.median(times["python -c pass"])
    result = {
        "command": " ".join(["python benchmarks/cli_startup.py", *(argv or sys.argv[1:])]),
        "rounds": args.rounds,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "median_s": {k: round(statistics.median(v), 3) for k, v in times.items()},
        "ratio_to_bare_python": {k: round(statistics.median(v) / floor, 2)
                                 for k, v in times.items()},
        "heavy_imports": {"skcgcnn --help": _heavy_imports(["--help"]),
                          "skcgcnn pretrained": _heavy_imports(["pretrained"])},
    }
    text = json.dumps(result, indent=2)
    Path(args.json).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
