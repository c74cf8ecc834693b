"""pytest setup shared by tests/ and the doctests in skcgcnn/."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Run the suite with one torch thread, then restore the count.

    The suite's networks are tiny: on a busy machine, more torch (OpenMP)
    threads than free cores make them train up to a hundred times slower,
    from spin-waiting threads, and one thread is as fast on an idle one.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# Doctests of modules whose optional dependency is absent (e.g. the lowest-versions step of
# .ci/run, which installs only the runtime dependencies) are not collected.
import importlib.util  # noqa: E402

collect_ignore = [path for path, module in (("skcgcnn/soap.py", "dscribe"),)
                  if importlib.util.find_spec(module) is None]
