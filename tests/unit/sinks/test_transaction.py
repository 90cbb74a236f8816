"""The root transaction's change check (``transaction.fingerprint``): it keeps a hash of each
bolt file as read instead of a second copy of its tree (issue 17: a rebuild of 10,000 images
held meta.db three times over), and must still see every change a tree comparison would."""

from __future__ import annotations

from ctrconv.bolt.tree import BucketTree
from ctrconv.sinks.containerd_root.transaction import fingerprint


def _tree(order: list[bytes], sequence: int = 0) -> BucketTree:
    tree = BucketTree()
    v1 = tree.bucket(b"v1", create=True)
    assert v1 is not None
    v1.sequence = sequence
    for key in order:
        v1.put(key, key * 2)
    sub = tree.bucket(b"v1", b"sub", create=True)
    assert sub is not None
    sub.put(b"k", b"v")
    return tree


def test_equal_trees_have_equal_fingerprints_whatever_the_insertion_order() -> None:
    assert fingerprint(_tree([b"a", b"b", b"c"])) == fingerprint(_tree([b"c", b"a", b"b"]))
    assert fingerprint(BucketTree()) == fingerprint(BucketTree())


def test_every_kind_of_change_changes_the_fingerprint() -> None:
    base = _tree([b"a", b"b"])
    changed = []
    t = _tree([b"a", b"b"]); t.bucket(b"v1").put(b"a", b"x")  # a value
    changed.append(t)
    changed.append(_tree([b"a", b"b"], sequence=1))  # a sequence
    changed.append(_tree([b"a"]))  # a key removed
    t = _tree([b"a", b"b"]); t.bucket(b"v1", b"sub", create=True).put(b"k2", b"")  # deeper, empty value
    changed.append(t)
    t = _tree([b"a", b"b"]); t.bucket(b"v1", b"empty", create=True)  # an empty bucket
    changed.append(t)
    # the same bytes split differently between key and value, or a bucket for a value
    split_a, split_b = BucketTree(), BucketTree()
    split_a.put(b"ab", b"c")
    split_b.put(b"a", b"bc")
    as_value, as_bucket = BucketTree(), BucketTree()
    as_value.put(b"k", b"")
    as_bucket.bucket(b"k", create=True)
    prints = [fingerprint(t) for t in changed]
    assert fingerprint(base) not in prints and len(set(prints)) == len(prints)
    assert all(t != base for t in changed)
    assert fingerprint(split_a) != fingerprint(split_b)
    assert fingerprint(as_value) != fingerprint(as_bucket)


def test_a_new_root_s_bolt_files_are_held_by_locked_placeholders(tmp_path) -> None:
    """A containerd started on a new root while ctrconv writes it opened no file, created its
    own empty meta.db and ran on it, its GC deleting everything the write added (found by a
    red-team run). Now a locked empty placeholder holds each new bolt file's name: a daemon
    opens it and waits; the commit replaces it and zeroes the old inode (bbolt then refuses
    it), and a write that fails removes it."""
    import fcntl
    import os

    import pytest

    from ctrconv.containerd.locking import is_locked
    from ctrconv.sinks.containerd_root.transaction import RootTransaction

    root = tmp_path / "root"
    with RootTransaction(root, snapshotters=("overlayfs",)) as txn:
        meta = root / "io.containerd.metadata.v1.bolt" / "meta.db"
        backend = root / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db"
        assert meta.stat().st_size == 0 and is_locked(meta) and is_locked(backend)
        daemon = os.open(meta, os.O_RDWR)  # a containerd that opened it and waits for the lock
        with pytest.raises(BlockingIOError):
            fcntl.flock(daemon, fcntl.LOCK_EX | fcntl.LOCK_NB)
        txn.meta.bucket(b"v1", b"default", b"images", create=True)
        assert txn.commit()
    assert meta.stat().st_size > 0
    assert os.fstat(daemon).st_nlink == 0 and os.pread(daemon, 8192, 0) == bytes(8192)  # retired
    os.close(daemon)
    assert not backend.exists()  # (nothing to write to it: its placeholder went)

    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "keep").write_text("x")  # an existing, non-empty directory: only what was added goes
    with pytest.raises(RuntimeError):
        with RootTransaction(failed, snapshotters=("overlayfs",)):
            raise RuntimeError("the write fails")
    assert not (failed / "io.containerd.metadata.v1.bolt" / "meta.db").exists()
    assert not (failed / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db").exists()


def test_a_killed_bolt_write_s_temp_file_goes_with_the_next_write(tmp_path) -> None:
    """``.meta.db.XXXX.tmp`` (a whole copy of the file) left by a write killed before its
    rename survived every later write (found by a red-team run)."""
    from ctrconv.sinks.containerd_root.transaction import RootTransaction

    root = tmp_path / "root"
    with RootTransaction(root) as txn:
        txn.meta.bucket(b"v1", b"default", b"images", create=True)
        txn.commit()
    stale = root / "io.containerd.metadata.v1.bolt" / ".meta.db.abcd1234.tmp"
    stale.write_bytes(b"x" * 8192)
    keep = root / "io.containerd.metadata.v1.bolt" / "meta.db.bak-20260101T000000Z"
    keep.write_bytes(b"y")
    with RootTransaction(root):
        pass
    assert not stale.exists() and keep.exists()


def test_a_writer_killed_between_the_rename_and_the_retirement_still_retires_the_old_file(tmp_path) -> None:
    """A containerd started during an import waits on the old meta.db inode; a writer killed
    outright right after renaming the new file over it (before it zeroed the old one) let the
    lock pass to that daemon, which ran on the old metadata and GC-ed what the new file names
    (found by a red-team run). A forked guard holds the lock across the replacement and retires
    the old inode itself when the writer dies, even by a kill of its whole process group (as
    ``timeout -s KILL`` sends: the guard runs in its own session)."""
    import fcntl
    import os
    import signal
    import subprocess
    import sys
    import time

    from ctrconv.sinks.containerd_root.transaction import RootTransaction

    root = tmp_path / "root"
    with RootTransaction(root) as txn:
        txn.meta.bucket(b"v1", b"default", b"images", create=True)
        txn.commit()
    meta = root / "io.containerd.metadata.v1.bolt" / "meta.db"
    daemon = os.open(meta, os.O_RDWR)  # the waiting containerd's descriptor of the old inode
    code = (
        "import os, signal, sys\n"
        "from ctrconv.sinks.containerd_root import transaction as t\n"
        "real = t.fsync_dir\n"
        "meta = os.path.join(sys.argv[1], 'io.containerd.metadata.v1.bolt', 'meta.db')\n"
        "old = os.stat(meta).st_ino\n"
        "def killed(path):\n"
        "    real(path)\n"
        "    if path.name == 'io.containerd.metadata.v1.bolt' and os.stat(meta).st_ino != old:\n"
        "        os.killpg(0, signal.SIGKILL)  # its whole process group, right after the rename, before the retirement\n"
        "t.fsync_dir = killed\n"
        "with t.RootTransaction(sys.argv[1]) as txn:\n"
        "    txn.meta.bucket(b'v1', b'default', b'images', b'new', create=True)\n"
        "    txn.commit()\n"
    )
    run = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=120,
                         preexec_fn=os.setsid)
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert os.fstat(daemon).st_nlink == 0  # renamed over
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the guard retires, then lets the lock go
        try:
            fcntl.flock(daemon, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            time.sleep(0.05)
    else:
        raise AssertionError("the old inode's lock was never released")
    assert os.pread(daemon, 8192, 0) == bytes(8192)  # retired before the daemon got it
    os.close(daemon)
    from ctrconv.bolt.reader import read_tree

    assert read_tree(meta).bucket(b"v1", b"default", b"images", b"new") is not None
