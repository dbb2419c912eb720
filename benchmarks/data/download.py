"""Downloads where a library allows them (``--download``): torchvision fetches the local datasets
it can into their folder, once, under a lock, with a socket timeout; without the network a
download is one line naming the offline way (the same files placed by hand)."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from atomicio import LocksUnsupported, file_lock
from benchmarks.data.datasets import DataError

# The datasets torchvision can download into their folder, and what to place there by hand
# instead (the same layout) on a machine without network.
DOWNLOADABLE = {
    "cifar10": "cifar-10-python.tar.gz extracted (cifar-10-batches-py/)",
    "cifar100": "cifar-100-python.tar.gz extracted (cifar-100-python/)",
    "svhn": "train_32x32.mat and test_32x32.mat",
    "fashionmnist": "the four idx files in FashionMNIST/raw/",
    "aircraft": "fgvc-aircraft-2013b.tar.gz extracted (fgvc-aircraft-2013b/)",
}
DOWNLOAD_TIMEOUT_S = 60  # a socket that stalls this long fails the download (no default: never)


def _torchvision_download(name: str, root: str) -> None:
    """torchvision's datasets with ``download=True``: each fetches and extracts its official
    files into ``root`` unless they are there and whole (torchvision's own check: md5 sums for
    CIFAR and SVHN, the files' or folder's existence for Fashion-MNIST and FGVC-Aircraft)."""
    from torchvision import datasets as tv

    if name == "cifar10":
        tv.CIFAR10(root, train=False, download=True)
    elif name == "cifar100":
        tv.CIFAR100(root, train=False, download=True)
    elif name == "svhn":
        for split in ("train", "test"):
            tv.SVHN(root, split=split, download=True)
    elif name == "fashionmnist":
        tv.FashionMNIST(root, train=False, download=True)
    elif name == "aircraft":
        tv.FGVCAircraft(root, split="test", annotation_level="variant", download=True)


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """torchvision opens its URLs without a timeout: a stalled connection fails after
    ``seconds`` instead of hanging (only while no default timeout is set)."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds if before is None else before)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def fetch(name: str, path: Path) -> None:
    """Let torchvision download ``name`` into ``path`` (created) unless its files are there; a
    no-op for a dataset it cannot download. Under a lock in ``path``, so runs that start
    together download once. A failed download (no network, a refused or corrupt file) is a
    :class:`DataError` of one line naming the offline way, and leaves no folder it created."""
    if name not in DOWNLOADABLE:
        return
    path = Path(path)
    created = not path.exists()
    try:
        with file_lock(path / ".download.lock"), _socket_timeout(DOWNLOAD_TIMEOUT_S):
            _torchvision_download(name, str(path))
    except LocksUnsupported as e:
        raise DataError(str(e)) from e
    except Exception as e:  # URLError, socket errors, torchvision's RuntimeErrors
        if created and not any(f.is_file() and f.name != ".download.lock"
                               for f in path.rglob("*")):
            shutil.rmtree(path, ignore_errors=True)
        cause = " ".join(str(getattr(e, "reason", None) or e).split())[:200]
        raise DataError(f"{name}: download into {path} failed ({type(e).__name__}: {cause}); "
                        f"offline: place {DOWNLOADABLE[name]} under {path} by hand (the "
                        "--data-root layout) and run without --download") from e
