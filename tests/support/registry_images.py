"""Images of shapes the fixture archives do not have, pushed to a test registry byte for byte.

Built from the blobs of an OCI archive (the fixture set's ``bbx-oci.tar``: busybox + two small
layers, so what is built still runs) and pushed with plain distribution API calls (``requests``,
monolithic uploads, ``PUT`` of manifests with their own media type), so every document reaches
the registry exactly as written here: an index with buildx's attestation manifests
(``unknown/unknown``), a manifest with an empty layer listed twice, one with 20 layers, a
Docker manifest list of Docker schema 2 manifests, an OCI artifact with its own config media
type, and a config-only image (no layers). skopeo would convert some of them; the tests need
them as registries serve them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
IN_TOTO = "application/vnd.in-toto+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=False).encode()


def gzip_tar(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A gzip layer of regular files (fixed mtimes) and its diff ID."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1700000000, 0o644
            tf.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0), sha256(raw)


@dataclass
class BaseImage:
    """The manifest, config and layers of one image of an OCI archive (all in memory: small)."""

    config: dict[str, Any]
    layers: list[tuple[dict[str, Any], bytes]]  # (descriptor, bytes)

    @classmethod
    def from_oci_archive(cls, archive: Path, ref_name: str) -> "BaseImage":
        with tarfile.open(archive) as tf:
            def blob(digest: str) -> bytes:
                member = tf.extractfile(f"blobs/sha256/{digest.split(':', 1)[1]}")
                assert member is not None
                return member.read()

            index = json.loads(tf.extractfile("index.json").read())  # type: ignore[union-attr]
            entry = next(m for m in index["manifests"]
                         if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref_name)
            manifest = json.loads(blob(entry["digest"]))
            config = json.loads(blob(manifest["config"]["digest"]))
            layers = [(dict(d), blob(d["digest"])) for d in manifest["layers"]]
        return cls(config, layers)


@dataclass
class RawPusher:
    """Blobs and manifests into a plain-HTTP registry, as given (no conversion)."""

    host: str
    pushed: dict[str, set[str]] = field(default_factory=dict)  # repo -> blob digests

    def __post_init__(self) -> None:
        import requests

        self.http = requests.Session()
        self.http.trust_env = False
        self.base = f"http://{self.host}"

    def blob(self, repo: str, data: bytes, media_type: str, **extra: Any) -> dict[str, Any]:
        digest = sha256(data)
        if digest not in self.pushed.setdefault(repo, set()):
            started = self.http.post(f"{self.base}/v2/{repo}/blobs/uploads/", timeout=60)
            assert started.status_code == 202, started.text
            location = started.headers["Location"]
            url = location if location.startswith("http") else self.base + location
            done = self.http.put(url, params={"digest": digest}, data=data, timeout=60,
                                 headers={"Content-Type": "application/octet-stream"})
            assert done.status_code == 201, done.text
            self.pushed[repo].add(digest)
        return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}

    def manifest(self, repo: str, ref: str, doc: dict[str, Any], **extra: Any) -> dict[str, Any]:
        body = canonical(doc)
        put = self.http.put(f"{self.base}/v2/{repo}/manifests/{ref}", data=body, timeout=60,
                            headers={"Content-Type": doc["mediaType"]})
        assert put.status_code == 201, put.text
        assert put.headers.get("Docker-Content-Digest") in (None, sha256(body))
        return {"mediaType": doc["mediaType"], "digest": sha256(body), "size": len(body), **extra}

    def oci_archive(self, repo: str, tag: str, archive: Path, ref_name: str) -> dict[str, Any]:
        """The image ``ref_name`` of an OCI archive, every blob and document as the archive
        holds it (skopeo would compress uncompressed layers on the way)."""
        with tarfile.open(archive) as tf:
            def blob(digest: str) -> bytes:
                member = tf.extractfile(f"blobs/sha256/{digest.split(':', 1)[1]}")
                assert member is not None
                return member.read()

            def push(desc: dict[str, Any], ref: str) -> None:
                data = blob(desc["digest"])
                doc = json.loads(data)
                for child in doc.get("manifests", []):
                    push(child, child["digest"])
                for child in [doc["config"], *doc["layers"]] if "config" in doc else []:
                    self.blob(repo, blob(child["digest"]), child["mediaType"])
                put = self.http.put(f"{self.base}/v2/{repo}/manifests/{ref}", data=data, timeout=60,
                                    headers={"Content-Type": desc["mediaType"]})
                assert put.status_code == 201, put.text

            index = json.loads(tf.extractfile("index.json").read())  # type: ignore[union-attr]
            entry = next(m for m in index["manifests"]
                         if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref_name)
            push(entry, tag)
        return {k: entry[k] for k in ("mediaType", "digest", "size")}

    def image(self, repo: str, base: BaseImage, *, extra_layers: Sequence[tuple[bytes, str]] = (),
              docker: bool = False, architecture: str = "amd64", tag: str | None = None,
              **desc_extra: Any) -> dict[str, Any]:
        """A manifest of ``base``'s layers plus ``extra_layers`` ((gzip bytes, diff ID)),
        OCI or Docker schema 2; pushed by digest, or under ``tag``."""
        layer_type, config_type, manifest_type = (
            (DOCKER_LAYER_GZIP, DOCKER_CONFIG, DOCKER_MANIFEST) if docker else (OCI_LAYER_GZIP, OCI_CONFIG, OCI_MANIFEST))
        layers = [self.blob(repo, data, layer_type) for _desc, data in base.layers]
        layers += [self.blob(repo, data, layer_type) for data, _diff in extra_layers]
        config = json.loads(json.dumps(base.config))
        config["architecture"] = architecture
        config["rootfs"]["diff_ids"] = list(config["rootfs"]["diff_ids"]) + [diff for _d, diff in extra_layers]
        config.setdefault("history", [])
        config["history"] = list(config["history"]) + [{"created_by": f"layer {n}"} for n in range(len(extra_layers))]
        cdesc = self.blob(repo, canonical(config), config_type)
        doc = {"schemaVersion": 2, "mediaType": manifest_type, "config": cdesc, "layers": layers}
        return self.manifest(repo, tag or sha256(canonical(doc)), doc, **desc_extra)


# -- the shapes -------------------------------------------------------------------------------


def attestation_index(p: RawPusher, repo: str, tag: str, base: BaseImage) -> dict[str, Any]:
    """An index as ``docker buildx build --push`` (provenance on) writes it: the image for
    linux/amd64, and an attestation manifest for it with platform ``unknown/unknown``."""
    image = p.image(repo, base, platform={"architecture": "amd64", "os": "linux"})
    statement = canonical({"_type": "https://in-toto.io/Statement/v0.1", "predicateType": "https://slsa.dev/provenance/v0.2",
                           "subject": [{"name": "bbx", "digest": {"sha256": image["digest"][7:]}}], "predicate": {}})
    layer = p.blob(repo, statement, IN_TOTO, annotations={"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"})
    config = p.blob(repo, canonical({"architecture": "unknown", "os": "unknown", "config": {},
                                     "rootfs": {"type": "layers", "diff_ids": [sha256(statement)]}}), OCI_CONFIG)
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]}
    att = p.manifest(repo, sha256(canonical(doc)), doc, platform={"architecture": "unknown", "os": "unknown"},
                     annotations={"vnd.docker.reference.digest": image["digest"],
                                  "vnd.docker.reference.type": "attestation-manifest"})
    return p.manifest(repo, tag, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [image, att]})


def empty_layer_image(p: RawPusher, repo: str, tag: str, base: BaseImage) -> dict[str, Any]:
    """An empty layer (a tar of no entries), listed twice, as Dockerfiles with ``ENV``-only
    steps under older builders produce."""
    empty = gzip_tar({})
    return p.image(repo, base, extra_layers=[empty, empty], tag=tag)


def many_layers_image(p: RawPusher, repo: str, tag: str, base: BaseImage, total: int = 20) -> dict[str, Any]:
    """``total`` layers: the base's, then one small file each (``/layers/NN``)."""
    extra = [gzip_tar({f"layers/{n:02d}": f"layer {n}\n".encode()}) for n in range(total - len(base.layers))]
    return p.image(repo, base, extra_layers=extra, tag=tag)


def docker_manifest_list(p: RawPusher, repo: str, tag: str, base: BaseImage) -> dict[str, Any]:
    """A Docker manifest list of two Docker schema 2 manifests (amd64, arm64)."""
    children = [p.image(repo, base, docker=True, architecture=arch, platform={"architecture": arch, "os": "linux"})
                for arch in ("amd64", "arm64")]
    return p.manifest(repo, tag, {"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": children})


def oci_artifact(p: RawPusher, repo: str, tag: str, base: BaseImage) -> dict[str, Any]:
    """An OCI artifact (not an image): its own config media type and a non-layer blob."""
    config = p.blob(repo, canonical({"kind": "sbom", "tool": "test"}), "application/vnd.example.sbom.config.v1+json")
    data = p.blob(repo, canonical({"packages": ["busybox"]}), "application/vnd.example.sbom.v1+json")
    return p.manifest(repo, tag, {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                  "artifactType": "application/vnd.example.sbom.v1", "config": config, "layers": [data]})


def config_only_image(p: RawPusher, repo: str, tag: str, base: BaseImage) -> dict[str, Any]:
    """No layers at all (``"layers": []``, no diff IDs): a config-only image."""
    config = json.loads(json.dumps(base.config))
    config["rootfs"] = {"type": "layers", "diff_ids": []}
    return p.image(repo, BaseImage(config, []), tag=tag)


def amd64_variants(p: RawPusher, repo: str, tag: str, base: BaseImage) -> dict[str, Any]:
    """An index with ``linux/amd64/v3`` first and plain ``linux/amd64`` second (two different
    images: which one a line unpacks on this host is its platform matcher's choice)."""
    v3 = p.image(repo, base, extra_layers=[gzip_tar({"variant": b"v3\n"})],
                 platform={"architecture": "amd64", "os": "linux", "variant": "v3"})
    plain = p.image(repo, base, extra_layers=[gzip_tar({"variant": b"v1\n"})],
                    platform={"architecture": "amd64", "os": "linux"})
    return p.manifest(repo, tag, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [v3, plain]})


#: key -> builder(pusher, repo, tag, base)
BUILDERS: dict[str, Callable[[RawPusher, str, str, BaseImage], dict[str, Any]]] = {
    "attestations": attestation_index,
    "empty-layer": empty_layer_image,
    "many-layers": many_layers_image,
    "docker-list": docker_manifest_list,
    "artifact": oci_artifact,
    "no-layers": config_only_image,
    "amd64-variants": amd64_variants,
}
