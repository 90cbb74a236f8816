"""A registry repository as an :class:`~ctrconv.image.protocols.ImageSource` (``import -i docker://``).

The reference is resolved once (``GET /v2/<repo>/manifests/<tag|digest>``, every manifest and
index media type accepted); the document is kept in memory and its digest is the one its bytes
hash to (a digest reference must match it). Documents the pipeline reads (``read_small``) are
kept too, and teach the source what their children are: an index's children are fetched from
``/manifests/``, a manifest's config and layers from ``/blobs/``, so ``exists``/``size`` need no
request for them. Blob streams survive a dropped connection: the download goes on from the
byte it stopped at (``Range``), a bounded number of times. Nothing here verifies; the consumer
wraps every stream in a :class:`~ctrconv.streams.VerifyingReader` as for any source.
"""

from __future__ import annotations

import io
import json
from typing import Any

from ctrconv.digest import Digest
from ctrconv.errors import FormatError, MissingContentError, NotFoundError
from ctrconv.oci import mediatypes as mt
from ctrconv.oci.validate import MAX_DOCUMENT_SIZE
from ctrconv.image.protocols import NamedEntry
from ctrconv.registry.client import RegistryClient, RegistryError, RegistryOptions, Response, is_dropped, registry_message
from ctrconv.registry.reference import RegistryRef, parse_registry_ref
from ctrconv.sources.base import BlobSourceBase, Locator, parse_digest
from ctrconv.streams import ReadIntoByRead

#: what a manifest GET accepts (docker schema 1 is not supported: containerd 2 dropped it too)
MANIFEST_ACCEPT = ", ".join((mt.OCI_INDEX, mt.DOCKER_MANIFEST_LIST, mt.OCI_MANIFEST, mt.DOCKER_MANIFEST))
MANIFEST, BLOB = "manifest", "blob"
#: containerd's ``MaxManifestSize`` (remotes/docker/resolver.go, 1.6 to 2.x: ``4 * 1048 * 1048``):
#: the largest manifest a pull resolves by name; a node's containerd never pulls a larger one
MAX_RESOLVED_MANIFEST_SIZE = 4 * 1048 * 1048


#: Docker schema 1 (signed and not)
SCHEMA1_TYPES = ("application/vnd.docker.distribution.manifest.v1+prettyjws", "application/vnd.docker.distribution.manifest.v1+json")


def _media_type(resp: Response, body: bytes, what: str) -> str:
    """The document's media type: its ``Content-Type``, else its own ``mediaType`` field."""
    content_type = (resp.header("Content-Type") or "").split(";", 1)[0].strip()
    if content_type in mt.INDEX_TYPES or content_type in mt.MANIFEST_TYPES:
        return content_type
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    field = doc.get("mediaType") if isinstance(doc, dict) else None
    if isinstance(field, str) and (field in mt.INDEX_TYPES or field in mt.MANIFEST_TYPES):
        return field
    if isinstance(doc, dict) and isinstance(doc.get("manifests"), list):
        return mt.OCI_INDEX
    if isinstance(doc, dict) and isinstance(doc.get("layers"), list):
        return mt.OCI_MANIFEST
    if content_type in SCHEMA1_TYPES or (isinstance(doc, dict) and doc.get("schemaVersion") == 1):
        raise FormatError(f"{what}: the registry served a Docker schema 1 manifest, which is not supported "
                          "(containerd 2 dropped it too; push the image again with a current tool)")
    raise FormatError(f"{what}: the registry served {content_type or 'an unknown type'}, not an image manifest or index")


class _BlobStream(ReadIntoByRead, io.RawIOBase):
    """A blob download that resumes (``Range: bytes=N-``) after a dropped connection."""

    def __init__(self, source: "RegistrySource", path: str, digest: Digest, size: int) -> None:
        super().__init__()
        self._source = source
        self._path = path
        self._digest = digest
        self._size = size
        self._pos = 0
        self._resumes = 0
        self._resp: Response | None = None
        self._answer_end: int | None = None

    def readable(self) -> bool:
        return True

    def _open(self) -> None:
        headers = {"Range": f"bytes={self._pos}-"} if self._pos else {}
        resp = self._source.client.request("GET", self._path, scopes=self._source.scopes, headers=headers, stream=True)
        if resp.status == 404:
            raise MissingContentError(f"blob {self._digest} not found in {self._source.what}")
        if resp.status not in (200, 206):
            raise RegistryError(f"{self._source.what}: GET blob {self._digest}: {registry_message(resp.status, resp.body)}")
        self._resp = resp
        # where a whole answer ends: a blob shorter than its descriptor ends there cleanly,
        # which is no dropped connection to resume (each resume fetched it again)
        try:
            length = int(resp.header("Content-Length") or "")
        except ValueError:
            self._answer_end = None
        else:
            self._answer_end = (0 if resp.status == 200 else self._pos) + length
        if self._pos and resp.status == 200:  # no range support: skip what was read already
            skip = self._pos
            while skip:
                got = self._raw_read(min(skip, 1 << 20))
                if not got:
                    raise RegistryError(f"{self._source.what}: blob {self._digest} ended early on a resumed download")
                skip -= len(got)

    def _raw_read(self, n: int) -> bytes:
        assert self._resp is not None
        return self._resp.read(n)

    def _drop(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None

    def read(self, n: int | None = -1) -> bytes:
        self._checkClosed()
        if n is None or n < 0:
            n = 1 << 20
        if n == 0:
            return b""
        options = self._source.client.options
        while True:
            try:
                if self._resp is None:
                    self._open()
                data = self._raw_read(n)
            except Exception as exc:  # noqa: BLE001 (urllib3's read errors are not OSErrors)
                if self._pos >= self._size and not isinstance(exc, RegistryError) and is_dropped(exc):
                    # every byte the descriptor names arrived (the digest is checked on them), and
                    # the answer promised more (a Content-Length past the blob): containerd reads
                    # the descriptor's size and succeeds; resuming past the end failed the pull
                    self._drop()
                    return b""
                if isinstance(exc, RegistryError) or not is_dropped(exc) or self._resumes >= options.retries:
                    self._drop()
                    if isinstance(exc, RegistryError) or not is_dropped(exc):
                        raise
                    raise RegistryError(
                        f"{self._source.what}: blob {self._digest}: connection dropped at byte {self._pos} "
                        f"of {self._size} ({options.retries} resumes tried)") from None
                self._drop()
                options.sleep(min(options.backoff * (2 ** self._resumes), 10.0))
                self._resumes += 1
                continue
            if not data and self._pos < self._size:
                if self._answer_end is not None and self._pos >= self._answer_end:
                    self._drop()
                    raise RegistryError(f"{self._source.what}: blob {self._digest}: the registry's answer ends "
                                        f"at byte {self._pos}; its descriptor says {self._size} bytes")
                # the server closed early without an error: resume from where it stopped
                self._drop()
                if self._resumes >= options.retries:
                    raise RegistryError(
                        f"{self._source.what}: blob {self._digest}: connection dropped at byte {self._pos} "
                        f"of {self._size} ({options.retries} resumes tried)")
                self._resumes += 1
                continue
            self._pos += len(data)
            return data

    def close(self) -> None:
        self._drop()
        super().close()


class RegistrySource(BlobSourceBase):
    """One image of a registry repository, read over the distribution API."""

    kind = "registry"

    def __init__(self, ref: RegistryRef, options: RegistryOptions | None = None, *,
                 client: RegistryClient | None = None) -> None:
        super().__init__()
        self.ref = ref
        self.what = str(ref)
        self.client = client or RegistryClient(ref.domain, ref.api_host, ref.repository, options or RegistryOptions())
        self.scopes = (f"repository:{ref.repository}:pull",)
        self._known: dict[Digest, tuple[int, str]] = {}
        try:
            self._entry = self._resolve()
        except BaseException:
            self.client.close()
            raise

    # -- resolving -------------------------------------------------------------------------

    def _manifest_path(self, reference: str) -> str:
        return f"/v2/{self.ref.repository}/manifests/{reference}"

    def _resolve(self) -> NamedEntry:
        resp = self.client.request("GET", self._manifest_path(self.ref.reference), scopes=self.scopes,
                                   headers={"Accept": MANIFEST_ACCEPT})
        if resp.status == 404:
            raise NotFoundError(f"{self.what}: not found in the registry ({registry_message(resp.status, resp.body)})")
        if resp.status != 200:
            raise RegistryError(f"{self.what}: {registry_message(resp.status, resp.body)}")
        body = resp.body
        if len(body) > MAX_RESOLVED_MANIFEST_SIZE:
            raise FormatError(f"{self.what}: the manifest is {len(body)} bytes; containerd resolves none over "
                              f"{MAX_RESOLVED_MANIFEST_SIZE} (it rejects this image too)")
        algorithm = self.ref.digest.algorithm if self.ref.digest is not None else "sha256"
        digest = Digest.from_bytes(body, algorithm)
        if self.ref.digest is not None and digest != self.ref.digest:
            raise FormatError(f"{self.what}: the registry served a manifest that hashes to {digest}")
        served = resp.header("Docker-Content-Digest")
        if served and parse_digest(served) is not None and parse_digest(served).algorithm == algorithm \
                and parse_digest(served) != digest:
            raise FormatError(f"{self.what}: the registry says {served} for a manifest that hashes to {digest}")
        media_type = _media_type(resp, body, self.what)
        self._memory[digest] = body
        self._known[digest] = (len(body), MANIFEST)
        self._learn(media_type, body)
        descriptor = {"mediaType": media_type, "digest": str(digest), "size": len(body)}
        return NamedEntry(descriptor=descriptor, name=self.ref.name, pulled_from=(self.ref.hostname, self.ref.repository))

    def _learn(self, media_type: str, body: bytes) -> None:
        """Remember the children a document names: where to fetch them, and their sizes."""
        try:
            doc = json.loads(body)
        except ValueError:
            return  # the pipeline's validation says what is wrong with it
        if not isinstance(doc, dict):
            return

        def note(desc: Any, kind: str) -> None:
            if isinstance(desc, dict) and isinstance(desc.get("size"), int):
                digest = parse_digest(desc.get("digest"))
                if digest is not None:
                    self._known.setdefault(digest, (desc["size"], kind))

        if media_type in mt.INDEX_TYPES:
            for child in doc.get("manifests") or []:
                kind = MANIFEST if isinstance(child, dict) and (
                    mt.is_index(child.get("mediaType", "")) or mt.is_manifest(child.get("mediaType", ""))) else BLOB
                note(child, kind)
        elif media_type in mt.MANIFEST_TYPES:
            note(doc.get("config"), BLOB)
            for layer in doc.get("layers") or []:
                note(layer, BLOB)

    # -- ImageSource -----------------------------------------------------------------------

    @property
    def parallel_reads(self) -> int:
        """How many blobs may stream at once (``--jobs``): the importer fetches that many side
        by side and unpacks while they arrive (:mod:`ctrconv.sinks.containerd_root.fetch`)."""
        return max(1, self.client.options.pull_jobs)

    def entries(self) -> list[NamedEntry]:
        return [self._entry]

    def _head_blob(self, digest: Digest) -> int | None:
        resp = self.client.request("HEAD", f"/v2/{self.ref.repository}/blobs/{digest}", scopes=self.scopes)
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise RegistryError(f"{self.what}: HEAD blob {digest}: {registry_message(resp.status, resp.body)}")
        try:
            return int(resp.header("Content-Length") or "")
        except ValueError:
            raise RegistryError(f"{self.what}: HEAD blob {digest}: no size given") from None

    def _locate(self, digest: Digest) -> Locator | None:
        known = self._known.get(digest)
        if known is None:
            size = self._head_blob(digest)
            if size is None:
                return None
            known = (size, BLOB)
            self._known[digest] = known
        size, kind = known
        if kind == MANIFEST:
            return Locator(size, lambda: io.BytesIO(self._fetch_manifest(digest)))
        path = f"/v2/{self.ref.repository}/blobs/{digest}"
        return Locator(size, lambda: _BlobStream(self, path, digest, size))

    def _fetch_manifest(self, digest: Digest) -> bytes:
        resp = self.client.request("GET", self._manifest_path(str(digest)), scopes=self.scopes,
                                   headers={"Accept": MANIFEST_ACCEPT})
        if resp.status == 404:
            raise MissingContentError(f"manifest {digest} not found in {self.what}")
        if resp.status != 200:
            raise RegistryError(f"{self.what}: GET manifest {digest}: {registry_message(resp.status, resp.body)}")
        return resp.body

    def read_small(self, digest: Digest | str, size: int, limit: int = MAX_DOCUMENT_SIZE) -> bytes:
        """A document, verified; kept in memory, and its children noted."""
        d = Digest.parse(digest)
        data = super().read_small(d, size, limit)
        self.remember_document(d, data)
        return data

    def remember_document(self, digest: Digest, data: bytes) -> None:
        """Keep a verified document of this image (read here, or found in the target root
        instead of fetched again) and note the children it names, so that their sizes and
        where to fetch them need no request."""
        if digest in self._memory:
            return
        self._memory[digest] = data
        kind = self._known.get(digest, (len(data), BLOB))[1]
        if kind != MANIFEST:
            return
        try:
            doc = json.loads(data)
        except ValueError:
            return  # not JSON: the pipeline's validation says so, naming the document
        media_type = doc.get("mediaType") if isinstance(doc, dict) else None
        if not isinstance(media_type, str) or not media_type:
            media_type = mt.OCI_INDEX if isinstance(doc, dict) and "manifests" in doc else mt.OCI_MANIFEST
        self._learn(media_type, data)

    def abort(self) -> None:
        """Cut every download under way, from any thread (the import failed or was stopped)."""
        self.client.abort()

    def close(self) -> None:
        super().close()
        self.client.close()


def open_registry_source(text: str, options: RegistryOptions | None = None) -> RegistrySource:
    """``docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`` as an image source (resolved at once)."""
    return RegistrySource(parse_registry_ref(text), options)
