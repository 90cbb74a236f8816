#!/usr/bin/env python3
"""Benchmark ``ctrconv ls`` on a root with many images against ``ctr images ls``.

Writes a containerd root with ``--images`` (default 1,000) images straight from ctrconv's own
record writer (``sinks/containerd_root/records.py`` into a ``BucketTree``, ``bolt.writer.write_bolt``)
plus the small blobs ``ls`` reads (index, manifest, config, and tiny gzip layers, every blob
with the GC labels containerd sets, so the daemon's start-up GC keeps everything). Every tenth
image is a two-platform index; the others are plain manifests; layers are partly shared.

Then, for several rounds (warm page cache for everyone), times:

* ``ctrconv ls --root R -A`` and ``ctrconv ls --root R -A --json`` (offline),
* ``ctrconv --help``: interpreter + CLI start-up, the floor of any ctrconv command,
* ``containerd`` start-up on the same root (until ``ctr version`` answers),
* ``ctr images ls`` against that daemon (client time only; the daemon does the reading).

Peak RSS of every command comes from ``/usr/bin/time``; for the daemon it is ``VmHWM`` after
the listing. Not a test; results go in ``benchmarks/README.md``.

Usage: ``python3 benchmarks/bench_ls.py [--images 1000] [--rounds 5] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import (MT_CONFIG, MT_INDEX, MT_LAYER_GZIP, MT_MANIFEST, PrivateContainerd, Results, Run,
                     config_json, ctrconv, ctrconv_env, machine_facts, put_blob, scratch, timed, tiny_layer,
                     vm_hwm_kib)

from ctrconv.bolt.tree import BucketTree
from ctrconv.bolt.writer import write_bolt
from ctrconv.containerd import schema as K
from ctrconv.containerd.codec import encode_varint
from ctrconv.sinks.containerd_root.records import (LABEL_UNCOMPRESSED, ImageSpec, children_labels, merge_blob,
                                               merge_image, namespace_bucket)

NAMESPACE = "default"
BASE_LAYERS = 50
PLATFORMS = ("amd64", "arm64")


class RootBuilder:
    """Blobs on disk and their records in a meta.db tree, for one namespace."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / K.CONTENT_PLUGIN_DIR / "blobs" / "sha256"
        self.blobs.mkdir(parents=True)
        self.tree = BucketTree()
        v1 = self.tree.bucket(K.V1, create=True)
        assert v1 is not None
        v1.put(K.VERSION, encode_varint(K.DB_VERSION_1X))
        self.ns = namespace_bucket(self.tree, NAMESPACE)
        self.now = time.time_ns()

    def blob(self, data: bytes, media_type: str, children: list[dict] = (), labels: dict | None = None) -> dict:
        desc = {"mediaType": media_type, **put_blob(self.blobs, data)}
        merge_blob(self.ns, desc["digest"], desc["size"], {**children_labels(children), **(labels or {})}, self.now)
        return desc

    def layer(self, seed: str) -> tuple[dict, str]:
        data, diff_id = tiny_layer(seed)
        return self.blob(data, MT_LAYER_GZIP, labels={LABEL_UNCOMPRESSED: diff_id}), diff_id

    def manifest(self, layers: list[tuple[dict, str]], arch: str, seed: str) -> dict:
        config = self.blob(config_json([d for _, d in layers], arch, {"created": seed}), MT_CONFIG)
        body = {"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": config, "layers": [l for l, _ in layers]}
        return self.blob(json.dumps(body).encode(), MT_MANIFEST, [config] + [l for l, _ in layers])

    def image(self, name: str, target: dict) -> None:
        merge_image(self.ns, ImageSpec(name=name, target=target, annotations={}, labels={}), self.now)

    def write(self) -> None:
        bolt_dir = self.root / K.METADATA_PLUGIN_DIR
        bolt_dir.mkdir(mode=0o711)
        write_bolt(bolt_dir / K.META_DB, self.tree, mode=0o644)


def build_root(root: Path, count: int) -> int:
    """A root with ``count`` images; returns the number of blob files."""
    b = RootBuilder(root)
    bases = [b.layer(f"base{i}") for i in range(BASE_LAYERS)]
    for i in range(count):
        name = f"registry.example.com/team{i % 20}/app{i:04d}:1.{i % 7}"
        if i % 10 == 9:
            manifests = []
            for arch in PLATFORMS:
                m = b.manifest([bases[i % BASE_LAYERS], b.layer(f"app{i}-{arch}")], arch, f"2024-01-01T00:00:{i % 60:02d}Z")
                manifests.append({**m, "platform": {"architecture": arch, "os": "linux"}})
            index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": manifests}
            b.image(name, b.blob(json.dumps(index).encode(), MT_INDEX, manifests))
        else:
            layers = [bases[i % BASE_LAYERS], bases[(i * 7 + 3) % BASE_LAYERS], b.layer(f"app{i}")]
            b.image(name, b.manifest(layers, PLATFORMS[0], f"2024-01-01T00:00:{i % 60:02d}Z"))
    b.write()
    return len(list(b.blobs.iterdir()))


def _check_ctrconv(root: Path, count: int) -> None:
    out = subprocess.run(ctrconv("ls", "--root", str(root), "-A", "--json"), env=ctrconv_env(),
                         capture_output=True, text=True, check=True).stdout
    images = json.loads(out)["images"]
    incomplete = [i["name"] for i in images if not i.get("complete")]
    if len(images) != count or incomplete:
        raise SystemExit(f"ctrconv ls saw {len(images)} images, incomplete: {incomplete[:5]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the scratch dir (default: /var/tmp)")
    args = parser.parse_args()

    work = scratch("bench-ls-", args.workdir)
    results = Results()
    try:
        root = work / "root"
        t0 = time.perf_counter()
        blob_count = build_root(root, args.images)
        meta_size = (root / K.METADATA_PLUGIN_DIR / K.META_DB).stat().st_size
        print(f"built root: {args.images} images, {blob_count} blobs, meta.db {meta_size / 2**20:.1f} MiB "
              f"in {time.perf_counter() - t0:.1f}s", flush=True)
        _check_ctrconv(root, args.images)
        env = ctrconv_env()
        cases = {
            "ctrconv ls -A": ctrconv("ls", "--root", str(root), "-A"),
            "ctrconv ls -A --json": ctrconv("ls", "--root", str(root), "-A", "--json"),
            "ctrconv --help (start-up floor)": ctrconv("--help"),
        }
        for _ in range(args.rounds):
            for case, cmd in cases.items():
                results.add(case, timed(cmd, env))
        for _ in range(args.rounds):
            daemon = PrivateContainerd(root=root, workdir=work)
            t0 = time.perf_counter()
            with daemon:
                started = time.perf_counter() - t0
                ls_cmd = [str(daemon.ctr_bin), "--address", daemon.address, "-n", NAMESPACE, "images", "ls"]
                results.add("ctr images ls (daemon up)", timed(ls_cmd))
                results.add("containerd start-up on the root", Run(started, vm_hwm_kib(daemon.pid) or 0))
                names = daemon.image_names(NAMESPACE)
                if len(names) != args.images:
                    raise SystemExit(f"ctr images ls saw {len(names)} images, expected {args.images}")
        left = len(list((root / K.CONTENT_PLUGIN_DIR / "blobs" / "sha256").iterdir()))
        if left != blob_count:
            raise SystemExit(f"containerd's GC removed {blob_count - left} blobs: GC labels are wrong")
        _check_ctrconv(root, args.images)  # still readable after containerd opened it
    finally:
        shutil.rmtree(work, ignore_errors=True)

    results.notes["containerd start-up on the root"] = "wall until `ctr version` answers; RSS = daemon VmHWM"
    results.notes["ctr images ls (daemon up)"] = "client only; daemon does the reading"
    print(f"\n{machine_facts(work.parent)}")
    print(f"{args.images} images ({args.images // 10} of them 2-platform indexes), {blob_count} blobs, "
          f"meta.db {meta_size / 2**20:.1f} MiB, {args.rounds} rounds, warm page cache\n")
    print(results.table(ref="ctr images ls (daemon up)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
