"""Push images of a containerd root to a registry (``export --to docker://HOST/REPO[:TAG]``).

Straight from the content store, by the OCI distribution spec:

1. Everything is planned first, under the root's shared lock (names resolved, platforms
   selected, every index/manifest/config read verified and validated, missing content named);
   nothing is sent before the whole push is known to be possible.
2. **Blobs** (configs and layers) go first: ``HEAD`` skips what the repository holds; a blob
   whose ``containerd.io/distribution.source.<host>`` label names another repository of the
   same registry is **mounted** from it (``POST ...?mount=<digest>&from=<repo>``, with a pull
   scope on that repository); anything else is uploaded: one ``PUT`` for blobs up to the
   threshold (read and verified whole first), larger ones by ``PATCH`` then a committing
   ``PUT``: one streamed ``PATCH`` by default, or ``PATCH`` chunks of ``chunk_size`` (for
   proxies that limit a request's size). Bytes are hashed as they are read from the content
   store and a blob that does not match its digest is never committed (its last bytes are not
   sent). A session that breaks (a dropped connection mid-stream, a lost chunk) starts that
   blob over, a bounded number of times. ``jobs`` blobs move side by side.
3. **Manifests**, then **indexes** (children before parents), by digest, each skipped when
   the repository already has it.
4. **Tags** last, once everything they point at is in the registry: a push that fails part
   way never leaves a tag on a partial image; a re-run sends only what is missing (for an
   image already there, only ``HEAD`` requests).

What is pushed for an image: a manifest as it is. An index whole when every child is
selected (``--all-platforms``, or a ``--platform`` list naming them all); otherwise the one
selected manifest alone, as ``skopeo copy`` does without ``--all`` (a registry refuses an
index whose children it does not hold, and a tag must never point at a partial image).
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from ctrconv.containerd import schema as K
from ctrconv.containerd.content import NamespaceContent
from ctrconv.containerd.root import ContainerdRoot
from ctrconv.digest import Digest
from ctrconv.errors import UsageError
from ctrconv.pipeline.completeness import lookups_in
from ctrconv.oci import mediatypes as mt
from ctrconv.oci.reference import parse_docker_ref
from ctrconv.pipeline.export import ExportOptions, plan_images
from ctrconv.image.plan import platform_string
from ctrconv.pipeline.resolve import resolve_images
from ctrconv.registry.client import RegistryClient, RegistryError, RegistryOptions, StreamInterrupted, registry_message
from ctrconv.registry.reference import RegistryRef, parse_registry_ref
from ctrconv.registry.source import MANIFEST_ACCEPT
from ctrconv.progress import Progress, Stage, stage
from ctrconv.streams import CHUNK, VerifyingReader

#: bytes read, hashed and sent per step of a streamed upload (fewer, larger socket writes)
STREAM_CHUNK = 4 << 20
#: whole-blob restarts after an upload session broke (a chunk lost, the session expired)
UPLOAD_RESTARTS = 3


@dataclass
class PushedImage:
    """One image as pushed."""

    name: str
    digest: str
    media_type: str
    platforms: list[str]
    #: where it went: ``HOST/REPO:TAG`` per tag, or ``HOST/REPO@DIGEST`` when untagged
    destinations: list[str]
    #: set when one manifest of an index was pushed instead of the index
    index: str | None = None


@dataclass
class PushReport:
    """What a push did (the ``--json`` document). Never holds a credential."""

    destination: str
    images: list[PushedImage] = field(default_factory=list)
    blobs_uploaded: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    bytes_uploaded: int = 0
    manifests_pushed: int = 0
    manifests_present: int = 0
    tags_pushed: int = 0
    tags_present: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Blob:
    descriptor: dict[str, Any]
    #: repositories of the same registry that hold it (distribution-source labels)
    mount_from: list[str]


@dataclass
class _Document:
    descriptor: dict[str, Any]
    data: bytes


@dataclass
class _PushPlan:
    blobs: dict[str, _Blob] = field(default_factory=dict)
    #: manifests, then indexes innermost first: children before parents
    documents: dict[str, _Document] = field(default_factory=dict)
    #: (tag, descriptor) pushed last
    tags: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    images: list[PushedImage] = field(default_factory=list)


def _mount_sources(labels: dict[str, str], dest: RegistryRef) -> list[str]:
    value = labels.get(f"{K.LABEL_DISTRIBUTION_SOURCE}.{dest.hostname}", "")
    return [repo for repo in value.split(",") if repo and repo != dest.repository]


#: distribution's tag grammar
_TAG = re.compile(r"[\w][\w.-]{0,127}")


def _tag_of(name: str) -> str | None:
    """The tag an image name gives its push to ``HOST/REPO`` (the repository comes from the
    destination). A name containerd stores but the reference grammar refuses (an upper-case
    repository, ``docker.io/library/UpperCase:Tag``) still has its tag: taken as it reads (it
    was pushed untagged, without a word: a red-team run). A CRI ``sha256:<id>`` name has none."""
    if re.fullmatch(r"sha256:[0-9a-f]{64}", name):
        return None  # (the grammar reads it as ``docker.io/library/sha256`` tagged with the hex)
    try:
        ref = parse_docker_ref(name)
    except Exception:  # anything the grammar refuses
        last = name.rsplit("/", 1)[-1] if "/" in name and "@" not in name else ""
        tag = last.rsplit(":", 1)[1] if ":" in last else ""
        return tag if _TAG.fullmatch(tag) else None
    return ref.tag or None if ref.digest is None else None


def plan_push(root: ContainerdRoot, dest: RegistryRef, namespace: str, refs: Sequence[str] | None,
              platforms: Sequence[str], all_platforms: bool, ignore_lock: bool) -> tuple[_PushPlan, NamespaceContent]:
    """Resolve, select and read everything the push needs (the caller holds the read lock)."""
    options = ExportOptions(namespace=namespace, image=refs, platform=list(platforms), all_platforms=all_platforms,
                            ignore_lock=ignore_lock)
    out = _PushPlan()
    with root.open_metadata(ignore_lock=ignore_lock) as meta:
        records = resolve_images(meta, root.content, namespace, refs)
        content = NamespaceContent.of(meta, root.content, namespace)
        planned = plan_images(content, records, options, False, lookups_in(meta, namespace), push=True)
        groups: dict[str, list[Any]] = {}
        for p in planned:
            groups.setdefault(p.record.target.digest, []).append(p)
        if (dest.tag or dest.digest) and len(groups) > 1:
            raise UsageError(
                f"{len(groups)} different images ({', '.join(g[0].record.name for g in groups.values())}) cannot all "
                f"go to {dest}: give a destination without a tag, and each goes under its own tag")
        tag_owner: dict[str, str] = {}
        for target_digest, group in groups.items():
            plan = group[0].plan
            pushed_desc, manifests, indexes = _what_to_push(group[0], all_platforms)
            tags = [dest.tag] if dest.tag else ([] if dest.digest else
                                                list(dict.fromkeys(t for t in (_tag_of(p.record.name) for p in group) if t)))
            if dest.digest is not None and str(dest.digest) != pushed_desc["digest"]:
                raise UsageError(f"{dest} names digest {dest.digest}, but {group[0].record.name} is {pushed_desc['digest']}")
            for tag in tags:
                if tag_owner.setdefault(tag, pushed_desc["digest"]) != pushed_desc["digest"]:
                    raise UsageError(f"two different images would be tagged {dest.domain}/{dest.repository}:{tag}")
                out.tags.append((tag, pushed_desc))
            for m in manifests:
                for desc in (m.config, *m.layers):
                    key = str(Digest.parse(desc["digest"]))
                    if key not in out.blobs:
                        record = meta.blob(namespace, key)
                        out.blobs[key] = _Blob(desc, _mount_sources(record.labels if record else {}, dest))
            for desc in [m.descriptor for m in manifests] + list(reversed(indexes)):
                key = str(Digest.parse(desc["digest"]))
                if key not in out.documents:
                    out.documents[key] = _Document(desc, content.read_small(key, int(desc["size"])))
            base = f"{dest.domain}/{dest.repository}"
            out.images.append(PushedImage(
                name=", ".join(p.record.name for p in group), digest=pushed_desc["digest"],
                media_type=pushed_desc.get("mediaType", ""), platforms=plan.platforms(),
                destinations=[f"{base}:{t}" for t in tags] or [f"{base}@{pushed_desc['digest']}"],
                index=target_digest if pushed_desc["digest"] != target_digest else None,
            ))
    return out, content


def _what_to_push(planned: Any, all_platforms: bool) -> tuple[dict[str, Any], list[Any], list[dict[str, Any]]]:
    """(top descriptor, manifests, indexes) of one image (see the module docs)."""
    plan = planned.plan
    target = {k: plan.target[k] for k in ("mediaType", "digest", "size") if k in plan.target}
    if not plan.indexes or not plan.skipped:
        return target, plan.manifests, plan.indexes
    if len(plan.manifests) == 1:
        m = plan.manifests[0]
        return {k: m.descriptor[k] for k in ("mediaType", "digest", "size") if k in m.descriptor}, [m], []
    skipped = sorted({platform_string(d.get("platform")) or "unknown" for d in plan.skipped})
    raise UsageError(
        f"image {planned.record.name}: an index whose platforms {', '.join(skipped)} are not pushed cannot be pushed "
        "(a registry refuses an index without its children)",
        hint="push one platform, or --all-platforms with all of them present",
    )


class _Pusher:
    def __init__(self, client: RegistryClient, dest: RegistryRef, content: NamespaceContent, report: PushReport,
                 step: Stage) -> None:
        self.client = client
        self.dest = dest
        self.content = content
        self.report = report
        self.step = step
        self.scopes = (f"repository:{dest.repository}:pull,push",)
        self._lock = threading.Lock()

    def _count(self, **fields: int) -> None:
        with self._lock:
            for name, n in fields.items():
                setattr(self.report, name, getattr(self.report, name) + n)

    def _tick(self, n: int) -> None:
        if n:
            self.step.advance(n)

    def _fail(self, what: str, resp: Any) -> RegistryError:
        return RegistryError(f"{self.dest.domain}/{self.dest.repository}: {what}: {registry_message(resp.status, resp.body)}")

    # -- blobs ----------------------------------------------------------------------------

    def blob(self, blob: _Blob) -> None:
        desc = blob.descriptor
        digest, size = Digest.parse(desc["digest"]), int(desc["size"])
        repo = self.dest.repository
        resp = self.client.request("HEAD", f"/v2/{repo}/blobs/{digest}", scopes=self.scopes)
        if resp.status == 200:
            self._count(blobs_present=1)
            self._tick(size)
            return
        if resp.status != 404:
            raise self._fail(f"HEAD blob {digest}", resp)
        location = None
        for source in blob.mount_from:
            resp = self.client.request(
                "POST", f"/v2/{repo}/blobs/uploads/?mount={digest}&from={source}",
                scopes=self.scopes + (f"repository:{source}:pull",), headers={"Content-Length": "0"}, body=b"")
            if resp.status == 201:
                self._count(blobs_mounted=1)
                self._tick(size)
                return
            if resp.status == 202 and resp.header("Location"):
                # not mountable: an upload session instead
                location = self.client.resolve_location(resp.header("Location") or "", f"/v2/{repo}/blobs/uploads/")
                break
        for restart in range(UPLOAD_RESTARTS + 1):
            if location is None:
                resp = self.client.request("POST", f"/v2/{repo}/blobs/uploads/", scopes=self.scopes,
                                           headers={"Content-Length": "0"}, body=b"")
                if resp.status != 202 or not resp.header("Location"):
                    raise self._fail(f"start upload of {digest}", resp)
                location = self.client.resolve_location(resp.header("Location") or "", f"/v2/{repo}/blobs/uploads/")
            try:
                self._upload(location, digest, size)
                break
            except (_SessionLost, StreamInterrupted) as lost:
                if restart == UPLOAD_RESTARTS:
                    raise RegistryError(f"{self.dest.domain}/{repo}: upload of {digest} failed {restart + 1} times: {lost}") from None
                self.client.options.sleep(min(self.client.options.backoff * (2 ** restart), 10.0))
                location = None
        self._count(blobs_uploaded=1, bytes_uploaded=size)

    def _read(self, reader: VerifyingReader, n: int) -> bytes:
        parts = []
        while n > 0:
            data = reader.read(min(n, CHUNK))
            if not data:
                break
            parts.append(data)
            n -= len(data)
        return b"".join(parts)

    def _upload(self, location: str, digest: Digest, size: int) -> None:
        options = self.client.options
        sent = 0
        try:
            with self.content.open(digest) as stream:
                reader = VerifyingReader(stream, digest, size, what=f"blob {digest}")
                if size <= options.chunk_threshold:
                    data = self._read(reader, size)  # verified before a byte is sent
                    self._commit(location, digest, data)
                    sent = size
                    self._tick(size)
                    return
                if options.chunk_size is None:
                    location = self._stream(location, digest, size, reader)
                    sent = size
                    self._commit(location, digest, b"")
                    return
                while sent < size:
                    # the last chunk is read (and the whole blob verified) before it is sent
                    chunk = self._read(reader, min(options.chunk_size, size - sent))
                    resp = self.client.request(
                        "PATCH", location, scopes=self.scopes, body=chunk,
                        headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(chunk)),
                                 "Content-Range": f"{sent}-{sent + len(chunk) - 1}"})
                    if resp.status in (404, 416) or (resp.status >= 500):
                        raise _SessionLost(registry_message(resp.status, resp.body))
                    if resp.status != 202 or not resp.header("Location"):
                        raise self._fail(f"upload chunk of {digest}", resp)
                    location = self.client.resolve_location(resp.header("Location") or "", location)
                    sent += len(chunk)
                    self._tick(len(chunk))
                self._commit(location, digest, b"")
        except (_SessionLost, StreamInterrupted):
            self._tick(-sent)
            raise

    def _stream(self, location: str, digest: Digest, size: int, reader: VerifyingReader) -> str:
        """The whole blob in one streamed ``PATCH`` (read, hashed and sent 4 MiB at a time, as
        ``skopeo`` does); returns the session's next ``Location``. The read that completes the
        blob verifies it, so a mismatch stops the request before its last bytes go out."""

        def chunks() -> Any:
            while data := reader.read(STREAM_CHUNK):
                yield data
                self._tick(len(data))

        resp = self.client.request("PATCH", location, scopes=self.scopes, body=chunks(),
                                   headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
        if resp.status in (404, 416):
            raise _SessionLost(registry_message(resp.status, resp.body))
        if resp.status != 202 or not resp.header("Location"):
            raise self._fail(f"upload of {digest}", resp)
        return self.client.resolve_location(resp.header("Location") or "", location)

    def _commit(self, location: str, digest: Digest, data: bytes) -> None:
        url = location + ("&" if "?" in location else "?") + f"digest={digest}"
        resp = self.client.request("PUT", url, scopes=self.scopes, body=data,
                                   headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))})
        if resp.status in (404, 416) or resp.status >= 500:
            raise _SessionLost(registry_message(resp.status, resp.body))
        if resp.status != 201:
            raise self._fail(f"commit blob {digest}", resp)

    # -- manifests and tags ---------------------------------------------------------------

    def _has_manifest(self, reference: str) -> str | None:
        """The digest the repository holds under ``reference`` (None: nothing)."""
        resp = self.client.request("HEAD", f"/v2/{self.dest.repository}/manifests/{reference}", scopes=self.scopes,
                                   headers={"Accept": MANIFEST_ACCEPT})
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise self._fail(f"HEAD manifest {reference}", resp)
        return resp.header("Docker-Content-Digest") or ""

    def _put_manifest(self, reference: str, doc: _Document) -> None:
        resp = self.client.request(
            "PUT", f"/v2/{self.dest.repository}/manifests/{reference}", scopes=self.scopes, body=doc.data,
            headers={"Content-Type": doc.descriptor.get("mediaType", mt.OCI_MANIFEST), "Content-Length": str(len(doc.data))})
        if resp.status != 201:
            raise self._fail(f"PUT manifest {reference}", resp)

    def document(self, doc: _Document) -> None:
        digest = str(Digest.parse(doc.descriptor["digest"]))
        if self._has_manifest(digest) is not None:
            self._count(manifests_present=1)
            return
        self._put_manifest(digest, doc)
        self._count(manifests_pushed=1)

    def tag(self, tag: str, doc: _Document) -> None:
        if self._has_manifest(tag) == doc.descriptor["digest"]:
            self._count(tags_present=1)
            return
        self._put_manifest(tag, doc)
        self._count(tags_pushed=1)


class _SessionLost(Exception):
    """An upload session the registry no longer accepts: the blob is uploaded again."""


def push_images(
    root: str, destination: str, *, namespace: str = "default", images: Sequence[str] | None = None,
    platforms: Sequence[str] = (), all_platforms: bool = False, options: RegistryOptions | None = None,
    ignore_lock: bool = False, progress: Progress | None = None,
) -> PushReport:
    """Push ``images`` (all of ``namespace`` when None) of ``root`` to ``destination``
    (``docker://HOST[:PORT]/REPO[:TAG|@DIGEST]``). The caller holds the root's read lock."""
    options = options or RegistryOptions()
    dest = parse_registry_ref(destination, default_tag=False)
    if options.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    plan, content = plan_push(ContainerdRoot(root), dest, namespace, images, platforms, all_platforms, ignore_lock)
    report = PushReport(destination=str(dest), images=plan.images)
    client = RegistryClient(dest.domain, dest.api_host, dest.repository, options)
    total = sum(int(b.descriptor["size"]) for b in plan.blobs.values())
    try:
        with stage(progress, "push", total) as step:
            _push_plan(client, _Pusher(client, dest, content, report, step), plan, options)
    finally:
        client.close()
    return report


def _push_plan(client: RegistryClient, pusher: "_Pusher", plan: _PushPlan, options: RegistryOptions) -> None:
    """Blobs (side by side with ``options.jobs``), then manifests and indexes, then tags."""
    blobs = sorted(plan.blobs.values(), key=lambda b: -int(b.descriptor["size"]))  # big ones start first
    if options.jobs == 1 or len(blobs) < 2:
        for blob in blobs:
            pusher.blob(blob)
    else:
        pool = ThreadPoolExecutor(max_workers=options.jobs, thread_name_prefix="push")
        try:
            for future in [pool.submit(pusher.blob, blob) for blob in blobs]:
                future.result()
        except BaseException:
            client.abort()  # an error or a signal: the other transfers stop too
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    for doc in plan.documents.values():
        pusher.document(doc)
    for tag, desc in plan.tags:
        pusher.tag(tag, plan.documents[str(Digest.parse(desc["digest"]))])


def report_lines(report: PushReport) -> list[str]:
    """Human summary: one line per image, one for the transfer."""
    lines = []
    for image in report.images:
        via = f" (platform {', '.join(image.platforms)} of index {image.index[:19]})" if image.index else ""
        lines.append(f"{image.name}: pushed {image.digest[:19]} to {', '.join(image.destinations)}{via}")
    lines.append(
        f"blobs: {report.blobs_uploaded} uploaded ({report.bytes_uploaded} bytes), {report.blobs_mounted} mounted, "
        f"{report.blobs_present} already there; manifests: {report.manifests_pushed} pushed, "
        f"{report.manifests_present} already there; tags: {report.tags_pushed} set, {report.tags_present} already set")
    return lines
