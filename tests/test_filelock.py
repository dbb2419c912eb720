"""File locks (``atomicio``): one mechanism for run folders, pre-training, the image cache
and probes; a filesystem without ``flock`` is one line naming the fix, from the CLI before any
work (exit 2)."""

import errno
import fcntl
import os

import pytest
from test_cli import run_main

import atomicio as filelock
from atomicio import LockHeld, LocksUnsupported, check_locks, file_lock


def refuse_flock(monkeypatch, code: int) -> None:
    """``flock`` fails as on Lustre mounted without ``-o flock`` (or NFS without lockd)."""
    def flock(fd, op):
        raise OSError(code, "simulated")

    monkeypatch.setattr(filelock.fcntl, "flock", flock)


def test_a_held_lock_refuses_a_second_holder_at_once(tmp_path):
    with (file_lock(tmp_path / "a" / ".lock"),
          pytest.raises(LockHeld, match="locked by another process"),
          file_lock(tmp_path / "a" / ".lock", blocking=False)):
        pass
    with file_lock(tmp_path / "a" / ".lock", blocking=False):  # released with the block
        pass


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS])
def test_a_filesystem_without_flock_names_the_mount_option(tmp_path, monkeypatch, code):
    refuse_flock(monkeypatch, code)
    with (pytest.raises(LocksUnsupported, match=r"refuses file locks .*-o flock") as e,
          file_lock(tmp_path / "runs" / ".lock")):
        pass
    assert str(tmp_path / "runs") in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(LocksUnsupported):
        check_locks(tmp_path / "not" / "yet")


def test_other_flock_errors_are_not_disguised(tmp_path, monkeypatch):
    refuse_flock(monkeypatch, errno.EBADF)
    with pytest.raises(OSError) as e, file_lock(tmp_path / ".lock"):
        pass
    assert not isinstance(e.value, LocksUnsupported) and e.value.errno == errno.EBADF


def test_check_locks_leaves_nothing_behind(tmp_path):
    check_locks(tmp_path / "out" / "deeper")  # not there yet: checked where it will be made
    check_locks(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_locks_are_flocks_other_tools_see(tmp_path):
    """The lock is an ordinary ``flock``: the probe tests and outside tools can test it."""
    with file_lock(tmp_path / ".lock"):
        fd = os.open(tmp_path / ".lock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)


@pytest.mark.parametrize("command", [[], ["cache"]], ids=["run", "cache"])
def test_cli_refuses_folders_without_flock_before_any_work(tmp_path, monkeypatch, command):
    refuse_flock(monkeypatch, errno.ENOSYS)
    out, cache = tmp_path / "out", tmp_path / "cache"
    run = ["--strategies", "classifier", "--out", str(out)]
    r = run_main(*command, "--suite", "smoke", "--cache", str(cache), *([] if command else run))
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.strip().splitlines()
    flag = "--cache" if command else "--out"
    assert line.startswith(f"run_benchmark.py: error: {flag} ") and "-o flock" in line
    assert r.stdout == "" and list(tmp_path.iterdir()) == []
