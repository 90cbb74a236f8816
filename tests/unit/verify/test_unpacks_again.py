"""verify's :class:`_UnpacksAgain` reads the manifests labelling a config to tell a snapshot
removed by hand (layers here: containerd unpacks again) from one lost for good; the manifest
is untrusted bytes (a hostile one nested 100,000 deep made ``json.loads`` raise RecursionError,
a traceback out of verify)."""

from __future__ import annotations

import hashlib
import json

from ctrconv.verify.root import GC_CONFIG, KeptRecord, _UnpacksAgain


class _Blobs:
    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs

    def exists(self, digest: str) -> bool:
        return digest in self.blobs

    def read_small(self, digest: str, size: int) -> bytes:
        return self.blobs[digest]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_layers_here_hostile_and_missing():
    config, layer = b"{}", b"layer"
    good = json.dumps({"schemaVersion": 2, "config": {"digest": _digest(config)},
                       "layers": [{"digest": _digest(layer)}]}).encode()
    hostile = b"[" * 100_000 + b"]" * 100_000
    blobs = {_digest(config): config, _digest(layer): layer, _digest(good): good, _digest(hostile): hostile}
    records = {d: KeptRecord(len(b), {}) for d, b in blobs.items()}
    records[_digest(hostile)] = KeptRecord(len(hostile), {GC_CONFIG: _digest(config)})
    assert _UnpacksAgain(records, _Blobs(blobs))(_digest(config)) is False  # type: ignore[arg-type]
    records[_digest(good)] = KeptRecord(len(good), {GC_CONFIG: _digest(config)})
    assert _UnpacksAgain(records, _Blobs(blobs))(_digest(config)) is True  # type: ignore[arg-type]
    del blobs[_digest(layer)]
    assert _UnpacksAgain(records, _Blobs(blobs))(_digest(config)) is False  # type: ignore[arg-type]
