import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two pytest workers, one per core: one torch thread each (and in the
    # subprocesses they start), else the workers' threads oversubscribe the cores.
    os.environ["OMP_NUM_THREADS"] = "1"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One base-checkpoint cache for the whole test session."""
    return tmp_path_factory.mktemp("pretrained-cache")
