"""Bucket and key names of containerd's bolt files (``core/metadata/buckets.go``).

meta.db::

    v1/
      version                       zigzag varint: 3 (1.6, 1.7) or 4 (2.x)
      <namespace>/
        labels/                     namespace labels
        images/<name>/              createdat, updatedat, labels/, annotations/,
                                    target/{digest, mediatype, size}
        containers/<id>/            image, snapshotter, snapshotKey, labels/, spec, runtime/,
                                    createdat, updatedat (read by commit; writers pass it through)
        snapshots/<snapshotter>/<key>/   name, parent, createdat, updatedat, children/, labels/
                                    (bucket sequence numbers the backend names ns/<seq>/<key>)
        content/blob/<digest>/      createdat, updatedat, size, labels/
        content/ingests/<ref>/      ref, expireat, expected
        leases/<id>/                createdat, labels/, content/, snapshots/<sn>/, ingests/, images/
        sandboxes/<id>/             2.x

snapshotter metadata.db::

    v1/
      parents/                      uvarint(parent id) 0x00 uvarint(child id) = child key
      snapshots/<key>/              id (uvarint), kind (1 byte), parent, createdat, updatedat,
                                    labels/, inodes, size (zigzag varints)
                                    (bucket sequence = last id issued)
"""

from __future__ import annotations

import re

V1 = b"v1"
VERSION = b"version"
LABELS = b"labels"
ANNOTATIONS = b"annotations"
IMAGES = b"images"
CONTAINERS = b"containers"
SNAPSHOTS = b"snapshots"
CONTENT = b"content"
BLOB = b"blob"
INGESTS = b"ingests"
LEASES = b"leases"
SANDBOXES = b"sandboxes"
TARGET = b"target"
DIGEST = b"digest"
MEDIATYPE = b"mediatype"
SIZE = b"size"
CREATED_AT = b"createdat"
UPDATED_AT = b"updatedat"
EXPIRE_AT = b"expireat"
EXPECTED = b"expected"
REF = b"ref"
NAME = b"name"
PARENT = b"parent"
CHILDREN = b"children"
PARENTS = b"parents"
ID = b"id"
KIND = b"kind"
INODES = b"inodes"
IMAGE = b"image"
SNAPSHOTTER = b"snapshotter"
SNAPSHOT_KEY = b"snapshotKey"

#: dbVersion per containerd major line
DB_VERSION_1X = 3
DB_VERSION_2X = 4

SNAPSHOT_KINDS = {0: "unknown", 1: "view", 2: "active", 3: "committed"}
#: the snapshotters whose store is in the root as plain directory trees: what ctrconv reads,
#: compares, copies and unpacks into (another one keeps block devices, images, or lives outside
#: the root, as a proxy snapshotter: stargz, nydus, soci)
TREE_SNAPSHOTTERS = ("overlayfs", "native")
#: the meta.db key of an image layer's snapshot: its chain ID (containerd unpacks under
#: ``extract-...`` keys and commits to the chain ID)
CHAIN_KEY = re.compile(r"sha256:[0-9a-f]{64}")

#: content label names (strings in ``labels`` buckets, not bolt keys)
LABEL_GC_CONTENT = "containerd.io/gc.ref.content"
LABEL_GC_SNAPSHOT = "containerd.io/gc.ref.snapshot."  # + snapshotter plugin id
LABEL_UNCOMPRESSED = "containerd.io/uncompressed"
LABEL_DISTRIBUTION_SOURCE = "containerd.io/distribution.source"  # + "." + registry host

CONTENT_PLUGIN_DIR = "io.containerd.content.v1.content"
METADATA_PLUGIN_DIR = "io.containerd.metadata.v1.bolt"
META_DB = "meta.db"


def snapshotter_dir(name: str) -> str:
    return f"io.containerd.snapshotter.v1.{name}"
