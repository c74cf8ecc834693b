"""No process-wide state left behind by ``fit``, ``pretrain`` and ``skcgcnn`` (issue 28).

Each check runs in a fresh process, since glibc's allocator settings, the
environment and torch's thread count belong to the process.
"""

import json
import os
import subprocess
import sys

import pytest

from skcgcnn.callbacks import ONEDNN_CACHE_VARIABLES, _malloc_trim

#: Train, then allocate and free ~900 MiB of numpy arrays (one array, then 100 of 9 MiB)
#: and report the resident memory (MiB) before and after each, with whether the
#: environment and torch's thread count are as before training.
_SCRIPT = """
import json, os, sys, tempfile
import numpy as np, torch
from ase.build import bulk

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

# torch's own lazy import at the first optimizer sets TORCHINDUCTOR_CACHE_DIR: done first
torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
from skcgcnn import CGCNNRegressor, estimators
from skcgcnn.pretraining import pretrain

X = [bulk("Cu", a=a) for a in np.linspace(3.4, 3.8, 12)]
y = np.linspace(3.4, 3.8, 12) ** 3 / 4
env, threads = dict(os.environ), torch.get_num_threads()
what = sys.argv[1]
if what == "pretrain":
    pretrain(X, y, os.path.join(tempfile.mkdtemp(), "m"), epochs=2, warmup=1, batch_size=4)
else:
    if what == "big fit":  # bounds oneDNN's caches around training, as from BIG_FIT crystals
        estimators.BIG_FIT = 1
    CGCNNRegressor(max_epochs=2, batch_size=4, random_state=0).fit(X, y)
out = {"env": dict(os.environ) == env, "threads": torch.get_num_threads() == threads,
       "changed": sorted(k for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k))}
out["start"] = rss_mib()
a = np.ones(900 * 2**20 // 8)
out["peak"] = rss_mib()
del a
out["one"] = rss_mib()
arrays = [np.ones(9 * 2**20 // 8) for _ in range(100)]
del arrays
out["many"] = rss_mib()
print(json.dumps(out))
"""


def _run(what):
    env = {k: v for k, v in os.environ.items()
           if k not in ONEDNN_CACHE_VARIABLES and not k.startswith("MALLOC_")}
    run = subprocess.run([sys.executable, "-c", _SCRIPT, what], capture_output=True, text=True,
                         env={**env, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("what", ["fit", "big fit", "pretrain"])
def test_training_leaves_no_process_state(what):
    out = _run(what)
    assert out["env"], f"{what} changed the environment: {out['changed']}"
    assert out["threads"]
    if _malloc_trim() is not None:  # glibc
        # during training glibc keeps up to 1 GiB of freed memory for the next batch
        # (ReleaseMemory); after it, freed arrays must leave the process again
        assert out["peak"] - out["start"] > 800  # the array was resident
        assert out["one"] - out["start"] < 150
        assert out["many"] - out["start"] < 150
