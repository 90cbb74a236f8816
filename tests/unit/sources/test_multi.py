"""MultiSource: several inputs as one source, for the importer's shared download pool.

Fake sources say which were asked about which blob: a registry-kind input is asked only about
blobs no local input holds, and once per blob; the union offers its inputs' parallel reads and
passes an abort on to every input that can cut its downloads.
"""

from __future__ import annotations

import io

from ctrconv.sources.multi import MultiSource


class Fake:
    """Holds ``blobs``; records every ``exists`` question; ``kind`` registry or local."""

    def __init__(self, kind: str, blobs: dict[str, bytes], parallel: int | None = None) -> None:
        self.kind, self.blobs, self.asked, self.aborted = kind, blobs, [], False
        if parallel is not None:
            self.parallel_reads = parallel

    def exists(self, digest: object) -> bool:
        self.asked.append(str(digest))
        return str(digest) in self.blobs

    def open(self, digest: object) -> io.BytesIO:
        return io.BytesIO(self.blobs[str(digest)])

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        pass


A, B, C = ("sha256:" + c * 64 for c in "abc")


def test_local_inputs_are_asked_first_and_each_blob_once() -> None:
    remote = Fake("registry", {A: b"remote a", B: b"remote b"}, parallel=4)
    local = Fake("oci-archive", {A: b"local a"})
    multi = MultiSource([("docker://reg/x", remote), ("x.tar", local)])  # the registry named first
    assert multi.open(A).read() == b"local a"
    assert multi.open(B).read() == b"remote b"
    assert multi.exists(A) and multi.exists(B) and not multi.exists(C)
    assert remote.asked.count(A) == 0, "a blob a local input holds is never asked of the registry"
    assert remote.asked.count(B) == 1 and local.asked.count(A) == 1, "the holder is looked up once"


def test_parallel_reads_and_abort_come_from_the_inputs() -> None:
    remote, local = Fake("registry", {}, parallel=5), Fake("oci-archive", {})
    multi = MultiSource([("x.tar", local), ("docker://reg/x", remote)])
    assert multi.parallel_reads == 5
    multi.abort()
    assert remote.aborted and local.aborted
    assert MultiSource([("a.tar", Fake("oci-archive", {})), ("b.tar", Fake("oci-archive", {}))]).parallel_reads == 1
