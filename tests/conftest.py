import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# tests never see this machine's Hugging Face cache: a hub weight is there only if a test put it
os.environ["HF_HUB_CACHE"] = str(Path(tempfile.gettempdir()) / "vitcl-tests-empty-hub-cache")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two pytest workers, one per core: one torch thread each (and in the
    # subprocesses they start), else the workers' threads oversubscribe the cores.
    os.environ["OMP_NUM_THREADS"] = "1"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402
import torch  # noqa: E402


class FixedMask(torch.nn.Module):
    """A token mask that is always ``m`` (a stand-in for a strategy's trained mask)."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self):
        return self.m


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One base-checkpoint cache for the whole test session."""
    return tmp_path_factory.mktemp("pretrained-cache")


# DualPrompt puts its general prefix at blocks 1-2 and its experts at blocks 3-5: a 2-block test
# backbone gets one of each (with the defaults no expert layer exists, which it refuses)
TWO_BLOCKS = ("vit_nano", "t2t_micro")
FIT_TWO_BLOCKS = {"dualprompt": {"g_layers": [0], "e_layers": [1]}}


def fitting_hparams(strategy: str, backbone: str) -> dict:
    """The strategy's registered hyperparameters, with layer choices that exist in the test
    ``backbone``."""
    from strategies.registry import resolve_hparams

    return resolve_hparams(strategy, FIT_TWO_BLOCKS.get(strategy) if backbone in TWO_BLOCKS
                           else None)
