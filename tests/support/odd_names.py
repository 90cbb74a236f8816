"""A root whose stored names are no UTF-8: a namespace ``ns\\xff\\xfe`` (a name containerd
refuses) beside ``default``, and in both an image named like the first one plus ``\\xff``."""

from __future__ import annotations

from pathlib import Path

from ctrconv.bolt.reader import BoltFile
from ctrconv.bolt.tree import BucketTree
from ctrconv.bolt.writer import write_bolt
from ctrconv.containerd import schema as K

#: the odd namespace, as stored and as ctrconv reads it (``surrogateescape``)
ODD_NAMESPACE = b"ns\xff\xfe"
ODD_NAMESPACE_TEXT = ODD_NAMESPACE.decode("utf-8", "surrogateescape")


def odd_names_root(path: Path) -> tuple[Path, str]:
    """The root (a ``standard_root`` with the odd names) and the odd image's name as text."""
    from support.synthetic_root import standard_root

    root = standard_root(path).write()
    meta_db = root / K.METADATA_PLUGIN_DIR / K.META_DB
    with BoltFile(meta_db) as db:
        tree = BucketTree.load(db.root)
    images = tree.bucket(K.V1, b"default", K.IMAGES)
    assert images is not None
    first = sorted(images.entries)[0]
    with BoltFile(meta_db) as db:
        images.entries[first + b"\xff"] = BucketTree.load(db.root).bucket(K.V1, b"default", K.IMAGES, first)
        tree.bucket(K.V1).entries[ODD_NAMESPACE] = BucketTree.load(db.root).bucket(K.V1, b"default")
    tree.bucket(K.V1, ODD_NAMESPACE, K.IMAGES).entries[first + b"\xff"] = images.entries[first + b"\xff"]
    write_bolt(meta_db, tree)
    return root, (first + b"\xff").decode("utf-8", "surrogateescape")
