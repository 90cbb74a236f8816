"""A ``docker save``-style tar (``manifest.json`` + config + layer files) as an ImageSource.

Reproduces containerd 1.6's importer (``images/archive/importer.go`` ``ImportIndex`` and
``resolveLayers``) byte for byte, so the synthesised manifest and index have the digests ctr
would store for the same tar:

* every file named in ``manifest.json`` is hashed once when the source is opened (file names
  are never trusted as digests); symlinks are followed (classic ``docker save`` and skopeo
  link ``<id>/layer.tar`` to a shared file);
* config media type: Docker config; layer media type by sniffing the first bytes: gzip or zstd
  (frame or skippable frame) -> ``application/vnd.docker.image.rootfs.diff.tar.gzip`` (yes,
  zstd too, as ctr 1.6 does), anything else -> ``...rootfs.diff.tar``. Before sniffing, ctr
  reuses a blob of the *destination* namespace labelled ``containerd.io/uncompressed`` with the
  layer's digest (the compressed form a pull or an OCI import left, once unpacked); give
  ``reuse_compressed`` (a lookup into the destination,
  :func:`ctrconv.sinks.containerd_root.reuse.compressed_layer_lookup`) to get the same manifest
  then: the layer is that blob, served from the destination's own file. Without it the source
  behaves like an import into a fresh namespace (checked against ``ctr images import`` of 1.6 and
  2.x: a docker archive imported onto a root holding the image's gzip layers records the gzip
  manifest there, the plain one on an empty root);
* manifest ``{"schemaVersion":2,"mediaType":<docker manifest v2>,"config":…,"layers":[…]}``
  written as Go's ``json.Marshal`` writes the importer's struct;
* index ``{"schemaVersion":2,"manifests":[…]}``: one entry per RepoTag, annotated with
  ``io.containerd.image.name`` = the normalised tag (``docker.io/library/`` added) and
  ``org.opencontainers.image.ref.name`` = its tag part; an image without RepoTags gets one
  entry without annotations (an unnamed entry). Each entry carries the platform containerd
  derives from the config (``Normalize({os, architecture})``, no variant).

``manifest.json`` keys match case-insensitively and unknown keys are ignored, as Go's decoder
does. A list without images is refused (ctr would create nothing from it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from dataclasses import dataclass
from datetime import date
from typing import Any

from ctrconv.digest import Digest
from ctrconv.errors import CtrconvError, FormatError, UsageError
from ctrconv.oci import mediatypes as mt
from ctrconv.oci.gojson import marshal_go
from ctrconv.oci.platform import Platform, normalize
from ctrconv.oci.reference import (
    ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME,
    normalize as normalize_reference,
    oci_ref_name,
)
from ctrconv.oci.validate import MAX_DOCUMENT_SIZE, parse_json_bytes
from ctrconv.image.protocols import NamedEntry, ReuseCompressed
from ctrconv.sources.archive import TarArchive, TarMember
from ctrconv.sources.base import BlobSourceBase, Locator, named_entries
from ctrconv.streams import CHUNK

MANIFEST_FILE = "manifest.json"

_GZIP_MAGIC = b"\x1f\x8b\x08"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_SKIPPABLE_START = 0x184D2A50
_ZSTD_SKIPPABLE_MASK = 0xFFFFFFF0


def is_compressed(head: bytes) -> bool:
    """containerd 1.6 ``compression.DetectCompression`` finds gzip or zstd in these first bytes."""
    if head.startswith(_GZIP_MAGIC) or head.startswith(_ZSTD_MAGIC):
        return True
    if len(head) >= 8:
        (magic,) = struct.unpack_from("<I", head)
        return magic & _ZSTD_SKIPPABLE_MASK == _ZSTD_SKIPPABLE_START
    return False


def layer_media_type(head: bytes) -> str:
    """The media type ctr 1.6 gives a docker-archive layer whose data starts with ``head``."""
    return mt.DOCKER_LAYER_GZIP if is_compressed(head) else mt.DOCKER_LAYER


@dataclass(frozen=True)
class DockerImage:
    """One ``manifest.json`` element: raw paths as written, RepoTags as written."""

    config: str
    repo_tags: tuple[str, ...]
    layers: tuple[str, ...]


def _string_list(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FormatError(f"{what} is not an array of strings")
    return tuple(value)


def parse_manifest_json(data: bytes, *, what: str = MANIFEST_FILE) -> list[DockerImage]:
    """Decode ``manifest.json`` like Go decodes it into ctr's ``[]struct{Config; RepoTags; Layers}``."""
    doc = parse_json_bytes(data, what=what)
    if doc is None:
        raise UsageError(f"{what}: unrecognized image format (manifest.json is null)")
    if not isinstance(doc, list):
        raise FormatError(f"{what}: not a JSON array")
    images = []
    for i, item in enumerate(doc):
        if not isinstance(item, dict):
            raise FormatError(f"{what}: element {i} is not an object")
        fields: dict[str, Any] = {}
        for key, value in item.items():
            folded = key.lower()
            if folded in ("config", "repotags", "layers"):
                fields[folded] = value  # later keys win, as in Go
        config = fields.get("config")
        if config is None:
            config = ""
        if not isinstance(config, str):
            raise FormatError(f"{what}: element {i}: Config is not a string")
        images.append(
            DockerImage(
                config=config,
                repo_tags=_string_list(fields.get("repotags"), f"{what}: element {i}: RepoTags"),
                layers=_string_list(fields.get("layers"), f"{what}: element {i}: Layers"),
            )
        )
    if not images:
        raise FormatError(f"{what}: lists no images")
    return images


def config_platform(data: bytes, *, what: str) -> dict[str, Any]:
    """containerd ``images.Platforms`` on a config: ``Normalize({OS, Architecture})`` as JSON."""
    doc = parse_json_bytes(data, what=what)
    if not isinstance(doc, dict):
        raise FormatError(f"{what}: image config is not a JSON object")
    values = []
    for key in ("os", "architecture"):
        value = doc.get(key)
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise FormatError(f"{what}: image config {key} is not a string")
        values.append(value)
    return normalize(Platform(values[0], values[1])).to_json()




def _descriptor(media_type: str, digest: Digest, size: int) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": str(digest), "size": size}


class DockerArchiveSource(BlobSourceBase):
    """ImageSource over a docker-archive tar. Owns ``archive`` (closed by :meth:`close`)."""

    kind = "docker-archive"

    def __init__(
        self,
        archive: TarArchive,
        *,
        base_name: str | None = None,
        today: date | None = None,
        reuse_compressed: ReuseCompressed | None = None,
    ) -> None:
        super().__init__()
        self.archive = archive
        self._reuse = reuse_compressed
        self.what = archive.what
        self.base_name = base_name
        self._today = today
        self._blobs: dict[Digest, TarMember] = {}
        self._reused: dict[Digest, tuple[int, str]] = {}  # destination blobs standing for layers
        self._hashed: dict[str, tuple[Digest, str]] = {}  # member name -> (digest, layer type)
        try:
            self._build()
        except BaseException:
            archive.close()
            raise

    def _build(self) -> None:
        data = self.archive.read_file(MANIFEST_FILE, MAX_DOCUMENT_SIZE)
        if data is None:
            raise UsageError(f"{self.what}: unrecognized image format (no {MANIFEST_FILE})")
        self.images = parse_manifest_json(data, what=f"{self.what}: {MANIFEST_FILE}")
        #: one synthesised manifest descriptor (with platform) per manifest.json element
        self.manifests: list[dict[str, Any]] = []
        index_entries: list[dict[str, Any]] = []
        for image in self.images:
            desc = self._synthesise(image)
            self.manifests.append(desc)
            if not image.repo_tags:
                index_entries.append(desc)
            for tag in image.repo_tags:
                index_entries.append(self._tagged(desc, tag))
        self.index_entries = index_entries
        self.index_bytes = marshal_go({"schemaVersion": 2, "manifests": index_entries})
        self.index_digest = self.add_memory_blob(self.index_bytes)

    def _tagged(self, desc: dict[str, Any], tag: str) -> dict[str, Any]:
        try:
            name = normalize_reference(tag)
        except CtrconvError as exc:
            raise FormatError(f"{self.what}: {MANIFEST_FILE}: invalid RepoTag {tag[:200]!r}: {exc}") from None
        entry = {k: desc[k] for k in ("mediaType", "digest", "size")}
        entry["annotations"] = {ANNOTATION_IMAGE_NAME: name, ANNOTATION_REF_NAME: oci_ref_name(name)}
        if "platform" in desc:
            entry["platform"] = desc["platform"]
        return entry

    def _member(self, name: str, kind: str) -> TarMember:
        member = self.archive.resolve(name)
        if member is None:
            raise FormatError(f"{self.what}: {kind} {name[:200]!r} not found")
        return member

    def _synthesise(self, image: DockerImage) -> dict[str, Any]:
        config_member = self._member(image.config, "image config")
        config_bytes = self.archive.read_member(config_member, MAX_DOCUMENT_SIZE)
        config_digest = Digest.from_bytes(config_bytes)
        self._blobs[config_digest] = config_member
        layers = [self._layer(name) for name in image.layers]
        self._reuse_compressed_forms(layers)
        manifest = {
            "schemaVersion": 2,
            "mediaType": mt.DOCKER_MANIFEST,
            "config": _descriptor(mt.DOCKER_CONFIG, config_digest, config_member.size),
            "layers": layers,
        }
        raw = marshal_go(manifest)
        digest = self.add_memory_blob(raw)
        desc = _descriptor(mt.DOCKER_MANIFEST, digest, len(raw))
        desc["platform"] = config_platform(config_bytes, what=f"{self.what}: config {image.config[:200]!r}")
        return desc

    def _layer(self, name: str) -> dict[str, Any]:
        member = self._member(name, "layer")
        if member.name not in self._hashed:
            self._hashed[member.name] = self._hash_layer(member)
        digest, media_type = self._hashed[member.name]
        self._blobs[digest] = member
        return _descriptor(media_type, digest, member.size)

    def _reuse_compressed_forms(self, layers: list[dict[str, Any]]) -> None:
        """containerd's ``resolveLayers``: a layer the destination holds in compressed form
        (labelled ``containerd.io/uncompressed`` with its digest) becomes that blob, typed by
        its first 10 bytes (``detectLayerMediaType``: gzip or zstd -> the gzip Docker type,
        anything else or fewer bytes -> the plain one). Its map holds one pointer per digest,
        the last layer's, so of a layer listed twice only the last entry is replaced."""
        if self._reuse is None:
            return
        last = {layer["digest"]: i for i, layer in enumerate(layers)}
        for digest_text, i in last.items():
            reused = self._reuse(Digest.parse(digest_text))
            if reused is None:
                continue
            digest, size, where = reused
            with (open(where, "rb") if isinstance(where, str) else where()) as blob:
                head = blob.read(10)
            media_type = layer_media_type(head) if len(head) == 10 else mt.DOCKER_LAYER
            if isinstance(where, str):  # (an earlier input of the run serves the other kind)
                self._reused[digest] = (size, where)
            layers[i] = _descriptor(media_type, digest, size)

    def _hash_layer(self, member: TarMember) -> tuple[Digest, str]:
        h = hashlib.sha256()
        head = b""
        read = 0
        with self.archive.open_member(member) as stream:
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                if len(head) < 8:
                    head += chunk[: 8 - len(head)]
                read += len(chunk)
                h.update(chunk)
        if read != member.size:
            raise FormatError(f"{self.what}: {member.name}: short read (file changed?)")
        return Digest("sha256", h.hexdigest()), layer_media_type(head)

    @property
    def index_descriptor(self) -> dict[str, Any]:
        """The synthesised OCI index, as ctr writes it (target of ``--index-name``)."""
        return _descriptor(mt.OCI_INDEX, self.index_digest, len(self.index_bytes))

    def entries(self) -> list[NamedEntry]:
        return [dataclasses.replace(entry, synthesised=True)
                for entry in named_entries(self.index_entries, self.base_name, today=self._today)]

    def _locate(self, digest: Digest) -> Locator | None:
        member = self._blobs.get(digest)
        if member is None:
            reused = self._reused.get(digest)
            if reused is None:
                return None
            size, path = reused
            return Locator(size, lambda: open(path, "rb"))
        return Locator(member.size, lambda: self.archive.open_member(member))

    def close(self) -> None:
        super().close()
        self.archive.close()
