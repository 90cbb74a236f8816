#!/usr/bin/env python3
"""What does ``ctrconv commit`` cost against the floors of writing the same layer with ``tar``?

Builds a one-layer image (``/bin/busybox``) as an OCI archive, imports it into a private
containerd, and runs a container that copies ``--size-mb`` of this machine's files (``--source``,
bind-mounted read-only) into its root filesystem; the daemon is stopped. Then, per round, with
the page cache warm (the case is the layer writer, not the disk):

* ``ctrconv commit`` (gzip, the default) and ``ctrconv commit --compression none`` to oci-tar,
* floors over the container's overlayfs upper directory: ``tar cf - | pigz -6`` (parallel
  gzip, as ctrconv's), ``tar cf - | gzip -6`` (one core) and ``tar cf`` (no compression).

No daemon-side command exists to compare with (``nerdctl commit`` needs the daemon running and
is not installed here); the floors are what the work itself costs.

Usage: ``python3 benchmarks/bench_commit.py [--size-mb 200] [--rounds 2] [--source /usr/share] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from _common import (MT_LAYER_GZIP, PrivateContainerd, Results, ctrconv, ctrconv_env, file_lists, gzip_layer,
                     machine_facts, oci_archive, remove, scratch, settle, shell, timed)

IMAGE = "docker.io/library/bench-commit:v1"
CONTAINER = "bench-commit"


def make_container(work: Path, source: Path, size_mb: int) -> tuple[Path, Path, int]:
    """A stopped containerd root whose container copied ~``size_mb`` MiB into ``/data``:
    (root, the container's upper directory, bytes copied)."""
    diff_id, _ = gzip_layer(["bin/busybox"], work / "busybox.tar.gz")
    archive = oci_archive(work, IMAGE, [(work / "busybox.tar.gz", MT_LAYER_GZIP, diff_id)])
    files = file_lists(source, [size_mb << 20])[0]
    listing = work / "files.txt"
    listing.write_text("".join(f"/src/{Path(f).relative_to(source.relative_to('/'))}\n" for f in files))
    size = sum((Path("/") / f).stat().st_size for f in files)
    root = work / "root"
    with PrivateContainerd(root=root, workdir=work) as daemon:
        daemon.ctr("images", "import", str(archive), timeout=600)
        mount = f"type=bind,src={source},dst=/src,options=rbind:ro"
        listing_mount = f"type=bind,src={listing},dst=/files.txt,options=rbind:ro"
        daemon.ctr("run", "--mount", mount, "--mount", listing_mount, IMAGE, CONTAINER, "/bin/busybox", "sh", "-c",
                   "mkdir /data && while read f; do /bin/busybox mkdir -p \"/data$(dirname \"$f\")\" && "
                   "/bin/busybox cp -p \"$f\" \"/data$f\"; done < /files.txt", timeout=3600)
        daemon.stop()
    uppers = [p.parent for p in (root / "io.containerd.snapshotter.v1.overlayfs" / "snapshots").glob("*/fs/data")]
    if len(uppers) != 1:
        raise SystemExit(f"expected one container upper directory, found {uppers}")
    return root, uppers[0], size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--source", type=Path, default=Path("/usr/share"))
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = scratch("bench-commit-", args.workdir)
    try:
        root, upper, size = make_container(work, args.source.resolve(), args.size_mb)
        out = work / "out.tar"
        env = ctrconv_env()
        cases = {
            "ctrconv commit (gzip)": (ctrconv("commit", "--root", str(root), CONTAINER, "-o", str(out), "-q"), env),
            "ctrconv commit --compression none": (
                ctrconv("commit", "--root", str(root), CONTAINER, "-o", str(out), "-q", "--compression", "none"), env),
            "pigz floor: tar | pigz -6": (shell(f"tar cf - -C {upper} . | pigz -6 > {out}"), None),
            "gzip one core: tar | gzip -6": (shell(f"tar cf - -C {upper} . | gzip -6 > {out}"), None),
            "tar floor: tar cf": (["tar", "cf", str(out), "-C", str(upper), "."], None),
        }
        refs = {"ctrconv commit (gzip)": "pigz floor: tar | pigz -6",
                "ctrconv commit --compression none": "tar floor: tar cf"}
        results = Results(runs={c: [] for c in cases})
        subprocess.run(["tar", "cf", "/dev/null", "-C", str(upper), "."], check=True)  # warm the cache
        for _ in range(args.rounds):
            for case, (cmd, case_env) in cases.items():
                remove(out)
                settle(False)
                results.add(case, timed(cmd, case_env))
        print(machine_facts(work))
        print(f"container diff: {size / 2**20:.0f} MiB of {args.source} in {upper}, {args.rounds} rounds, warm cache")
        print(results.table(ref=refs, size_bytes=size))
    finally:
        remove(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
