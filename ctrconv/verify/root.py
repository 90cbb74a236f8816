"""Verify a containerd root: bolt structure, metadata consistency, content, snapshots.

An index whose other platforms were never pulled is the normal state of a node: absent
platforms are reported as information, not as problems.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from sys import intern
from dataclasses import dataclass
import time
from typing import Callable, Iterable, Iterator, Mapping, NamedTuple, TypeVar

from ctrconv.bolt.check import check_bolt
from ctrconv.containerd import schema as K
from ctrconv.containerd.content import ContentStore, NamespaceContent, StatedContent
from ctrconv.containerd.metadata import MetadataDB
from ctrconv.containerd.imagerecords import Element
from ctrconv.containerd.records import BackendSnapshot, BlobRecord, ImageRecord
from ctrconv.containerd.locking import is_locked, private_copy
from ctrconv.containerd.root import (
    REBUILD_JOURNAL,
    ContainerdRoot,
    has_own_directory,
    holds_entries,
    is_namespace,
    real_dir,
)
from ctrconv.digest import Digest, is_canonical
from ctrconv.forked import can_split, map_halves
from ctrconv.errors import ContentError, CtrconvError, InvalidDigestError
from ctrconv.layers import chain_ids
from ctrconv.oci import mediatypes as mt
from ctrconv.oci.validate import parse_json_bytes
from ctrconv.progress import Progress, stage
from ctrconv.pipeline.completeness import Assessment, RecordedLabels, assess, never_recorded, skips_shared_blobs
from ctrconv.image.plan import DocumentCache, PlannedManifest, platform_string, read_json_blob
from ctrconv.verify.blobs import file_size, hashed_blobs
from ctrconv.verify.deep import HostRuns
from ctrconv.verify.prefetch import blob_sizes
from ctrconv.verify.problems import Findings, Report
from ctrconv.verify.split import SPLIT_FROM, SnapshotRecords, image_elements

T = TypeVar("T")
GC_CONTENT = K.LABEL_GC_CONTENT
GC_SNAPSHOT = K.LABEL_GC_SNAPSHOT
GC_CONFIG = K.LABEL_GC_CONTENT + ".config"  # (a manifest labels its config so)


def _safe(report: Report, what: str, location: str, items: Iterable[T]) -> Iterator[T]:
    """Iterate records, turning a decode failure into a problem instead of an abort."""
    try:
        yield from items
    except CtrconvError as exc:
        report.add("unreadable-record", what, location, str(exc))


def verify_root(
    root: str | os.PathLike[str],
    namespaces: list[str] | None = None,
    *,
    ignore_lock: bool = False,
    jobs: int | None = None,
    progress: Progress | None = None,
    deep: bool = False,
    blob_hashes: dict[str, tuple[str | None, int]] | None = None,
    hash_contents: bool = True,
) -> Report:
    """Every problem of ``root``; ``deep`` also re-applies each unpacked layer and compares trees.

    ``blob_hashes``, when given, receives each blob's (actual hex or None, bytes read) from the
    first reading, so a caller that repairs next (``rebuild``) need not hash them again.
    ``hash_contents=False`` (``verify --no-hash``) lists the blob files without reading them:
    records, presence and sizes are checked, digests are not (seconds instead of minutes on a
    large root).

    On a root a running containerd holds (``ignore_lock``), the bolt files and the directories
    are read at different moments while the daemon changes them: every problem is checked
    again against a second private copy, and one that does not hold in both readings is
    reported as information ("changed while reading"), not as damage.
    """
    croot = ContainerdRoot(root)
    lost = _lost_meta_db(croot)
    if lost is not None:
        return lost
    croot.require_meta_db()
    if croot.is_locked() and not ignore_lock:
        from ctrconv.errors import LockedError

        from ctrconv.containerd.rootlock import describe_holders

        raise LockedError(f"{croot.meta_db} is locked by {describe_holders(croot.meta_db)}", hint="stop containerd, or pass --ignore-lock")
    live = ignore_lock and croot.is_locked()
    first = _verify_once(croot, namespaces, ignore_lock, jobs, progress, deep, None, blob_hashes, hash_contents)
    if (croot.path / REBUILD_JOURNAL).exists():
        first.add("interrupted-rebuild", "root", str(croot.path / REBUILD_JOURNAL),
                  "a ctrconv rebuild of this root began changing it and did not finish (killed, or it failed): "
                  "run ctrconv rebuild again, before containerd runs on it (its GC would take what the rebuild "
                  "has not recorded yet)")
    if not live or first.ok:
        return first
    flagged = {p.object.split(" ", 1)[1] for p in first.errors if p.object.startswith("blob ")}
    second = _verify_once(croot, namespaces, ignore_lock, jobs, None, False, flagged, None, hash_contents)
    confirmed = {(p.kind, p.object, p.message) for p in second.errors}
    report = Report(stats=first.stats)
    for problem in first.problems:
        if problem.severity == "error" and (problem.kind, problem.object, problem.message) not in confirmed:
            report.add("changed-while-reading", problem.object, problem.location,
                       f"{problem.kind}: {problem.message} (seen once while the running containerd changed the root; gone on a second reading)",
                       severity="info")
        else:
            report.add(problem.kind, problem.object, problem.location, problem.message, severity=problem.severity)
    return report


def _lost_meta_db(croot: ContainerdRoot) -> Report | None:
    """A root whose content store or snapshotters are there but whose meta.db is not (fsck put
    it in lost+found, a backup missed it): damage ``rebuild`` repairs, reported as such (exit 1);
    it was "not a containerd root" (exit 2), so a script gating rebuild on exit 1 never ran it
    (a red-team run). None when meta.db is there, or nothing says the directory is a root."""
    if not croot.path.is_dir() or croot.meta_db.is_file():
        return None
    if not (croot.content_dir.is_dir() or croot.snapshotters_on_disk()):
        return None
    report = Report()
    what = "is not a file" if croot.meta_db.exists() or croot.meta_db.is_symlink() else "is missing"
    report.add("missing-meta-db", "root", str(croot.meta_db),
               f"the metadata database {what} while the root's content store or snapshotters are there: "
               "every image, content and snapshot record is gone (ctrconv rebuild re-derives them)")
    return report


def _verify_once(
    croot: ContainerdRoot,
    namespaces: list[str] | None,
    ignore_lock: bool,
    jobs: int | None,
    progress: Progress | None,
    deep: bool,
    hash_only: set[str] | None,
    blob_hashes: dict[str, tuple[str | None, int]] | None = None,
    hash_contents: bool = True,
) -> Report:
    """One reading of the root (``hash_only``: hash just these blobs, for a second reading).

    The structure check of the bolt files shares nothing with the rest: with two cores it runs
    in a forked child (:mod:`ctrconv.forked`) while this process reads the records, and its
    problems come first in the report, as when it ran first."""

    def the_rest() -> Report:
        rest = Report()
        _read_once(croot, rest, namespaces, ignore_lock, jobs, progress, deep, hash_only, blob_hashes, hash_contents)
        return rest

    if ignore_lock or not can_split():
        report = Report()
        _check_bolt_files(croot, report, ignore_lock)
        _read_once(croot, report, namespaces, ignore_lock, jobs, progress, deep, hash_only, blob_hashes, hash_contents)
        return report
    rest, report = map_halves(lambda task: task(), [the_rest, lambda: _bolt_report(croot)])
    for problem in rest.problems:
        report.add(problem.kind, problem.object, problem.location, problem.message, severity=problem.severity)
    for name, n in rest.stats.items():
        report.count(name, n)
    return report


def _bolt_report(croot: ContainerdRoot) -> Report:
    report = Report()
    _check_bolt_files(croot, report, False)
    return report


def _read_once(croot: ContainerdRoot, report: Report, namespaces: list[str] | None, ignore_lock: bool,
               jobs: int | None, progress: Progress | None, deep: bool, hash_only: set[str] | None,
               blob_hashes: dict[str, tuple[str | None, int]] | None, hash_contents: bool) -> None:
    """Everything :func:`_verify_once` checks but the bolt files' structure."""
    referenced = _check_records(croot, report, namespaces, ignore_lock, deep)
    if hash_contents:
        _check_blobs(croot, referenced, report, jobs, progress, hash_only, blob_hashes)
    else:
        _list_blobs(croot, referenced, report, hash_only)


def _check_records(croot: ContainerdRoot, report: Report, namespaces: list[str] | None, ignore_lock: bool,
                   deep: bool) -> set[str]:
    """The checks of meta.db and the snapshotters; returns every digest a namespace records.
    What they read (the snapshot records, each namespace's content records) is let go when
    this returns, before the blob directory is listed or hashed."""
    backends = _read_backends(croot, report, ignore_lock)
    backend_names: dict[str, set[str]] = {}
    referenced: set[str] = set()
    try:
        with croot.open_metadata(ignore_lock=ignore_lock) as meta:
            _check_schema_version(meta, report)
            _check_namespace_names(meta, report)
            selected = meta.namespaces() if namespaces is None else namespaces
            _note_absent_namespaces(meta, selected, report)
            snaps = SnapshotRecords(meta)
            checked = {ns: _check_namespace(meta, croot, ns, report, snaps) for ns in selected}
            for ns in meta.namespaces():
                for sn in meta.snapshotters(ns):
                    for rec in snaps(report, f"{ns}/snapshots/{sn}", "meta.db", ns, sn):
                        backend_names.setdefault(sn, set()).add(rec.name)
                if ns in checked:  # its records were read for the namespace check: not again
                    digests, unreadable = checked.pop(ns)
                    referenced.update(digests)
                    if unreadable is not None:
                        report.add("unreadable-record", f"{ns}/content", "meta.db", unreadable)
                    continue
                for blob in _safe(report, f"{ns}/content", "meta.db", meta.blobs(ns)):
                    referenced.add(blob.digest)
            _check_meta_snapshots(meta, selected, report, backends, snaps)
            _check_meta_db_age(croot, meta, backends, backend_names, report)
            if deep:
                _deep(meta, croot, selected, report, backends)
    except CtrconvError as exc:
        report.add("unreadable", "meta.db", str(croot.meta_db), str(exc))

    for sn, backend in backends.items():
        _check_snapshotter(croot, sn, backend, backend_names.get(sn, set()), report)
    return referenced


def _check_meta_db_age(croot: ContainerdRoot, meta: MetadataDB, backends: dict[str, "_Backend"],
                       known: dict[str, set[str]], report: Report) -> None:
    """Snapshots meta.db never issued (:mod:`ctrconv.containerd.snapshotkeys`): it is older than
    the snapshotter's database, put back from a copy, and containerd's next garbage collection
    deletes what was made since (verify called such a root clean, and GC then took a
    container's files: a red-team run). One without files (an empty one being prepared, a
    committed one without its directory) is what a write stopped between the two commits
    leaves: information."""
    from ctrconv.containerd.snapshotkeys import holds_work, issued_after

    for sn, backend in backends.items():
        for s in issued_after(backend.snapshots, lambda ns: meta.snapshot_sequence(ns, sn), known.get(sn, set())):
            namespace = s.key.split("/", 1)[0]
            fs = croot.snapshot_fs(sn, s.id)
            obj = f"backend snapshot {sn}/{s.key}"
            sequence = meta.snapshot_sequence(namespace, sn)
            if holds_work(s.kind, fs):
                report.add("meta-db-older", obj, str(croot.meta_db),
                           f"made after this meta.db (its number is above the namespace's sequence {sequence} in "
                           "meta.db): meta.db was put back from an older copy, and containerd's garbage collection "
                           "deletes what was made since, files and all; run ctrconv rebuild before containerd runs "
                           "(it restores their records)")
            else:
                report.add("meta-db-older", obj, str(croot.meta_db),
                           f"above the namespace's sequence {sequence} in meta.db, with no files: a snapshot being "
                           "prepared, or a write stopped between the snapshotter's commit and meta.db's "
                           "(containerd's GC removes it)", severity="info")


def _note_absent_namespaces(meta: MetadataDB, selected: list[str], report: Report) -> None:
    """A namespace asked for that the root does not have (``default`` on a CRI node: every image
    is ``k8s.io``'s) was checked with nothing in it, and "clean" said of a root whose other
    namespaces were not looked at (a red-team run): named, with the namespaces there are."""
    present = meta.namespaces()
    for ns in selected:
        if ns not in present and present:
            report.add("absent-namespace", f"namespace {ns}", "meta.db v1",
                       f"this root has no namespace {ns}; it has {', '.join(present)}: check them with -n NAME or -A",
                       severity="info")


def _check_namespace_names(meta: MetadataDB, report: Report) -> None:
    """A namespace bucket whose name containerd refuses (``identifiers.Validate``: a damaged
    key, bytes that are no UTF-8): no client can name it, so its images never run, while its
    records keep their content from GC. ``rebuild`` drops it."""
    for ns in meta.namespaces():
        if not is_namespace(ns):
            report.add("invalid-namespace", f"namespace {ns}", f"meta.db v1/{ns}",
                       "a name containerd refuses (identifiers.Validate): no client can reach its images")


def _check_schema_version(meta: MetadataDB, report: Report) -> None:
    """``v1/version``: without it containerd's ``Init`` reads version 0 and runs every schema
    migration again over current data (metadata/db.go)."""
    if meta.v1 is None:
        return
    try:
        version = meta.schema_version
    except CtrconvError as exc:
        report.add("schema-version", "meta.db v1/version", "meta.db v1/version", f"unreadable: {exc}")
        return
    if version is None:
        report.add("schema-version", "meta.db v1/version", "meta.db v1/version",
                   "missing: containerd would take the database for schema 0 and migrate it again")


def _check_bolt_files(croot: ContainerdRoot, report: Report, ignore_lock: bool) -> None:
    """Structure of meta.db and every snapshotter metadata.db; a file a running containerd
    holds (``--ignore-lock``) is checked in a consistent private copy, never read live."""
    bolt_files = [croot.meta_db] + [
        croot.snapshotter_db(sn) for sn in croot.snapshotters_on_disk() if croot.snapshotter_db(sn).is_file()
    ]
    with tempfile.TemporaryDirectory(prefix="ctrconv-verify-") as work:
        for path in bolt_files:
            report.count("bolt files")
            readable = private_copy(path, work) if ignore_lock and is_locked(path) else path
            for problem in check_bolt(str(readable)):
                where = f"{path}" + (f" page {problem.page}" if problem.page is not None else "")
                report.add("bolt", str(path.relative_to(croot.path)), where, problem.message)


@dataclass
class _Backend:
    """One snapshotter's metadata.db, read once for every check that needs it."""

    snapshots: list[BackendSnapshot]
    links: list[tuple[int, int, str]]
    sequence: int


def _read_backends(croot: ContainerdRoot, report: Report, ignore_lock: bool) -> dict[str, _Backend]:
    """Every snapshotter that has a metadata.db; an unreadable one is a problem of its own."""
    backends: dict[str, _Backend] = {}
    for sn in croot.snapshotters_on_disk():
        where = str(croot.snapshotter_db(sn))
        try:
            with croot.open_snapshotter(sn, ignore_lock=ignore_lock) as backend:
                if backend is None:
                    continue
                backends[sn] = _Backend(
                    snapshots=list(_safe(report, f"{sn} snapshots", where, backend.snapshots(times=False))),
                    links=list(_safe(report, f"{sn} parents", where, backend.parent_links())),
                    sequence=backend.sequence,
                )
        except CtrconvError as exc:
            report.add("unreadable", f"{sn}/metadata.db", where, str(exc))
    return backends


class KeptRecord(NamedTuple):
    """What verify keeps of a content record for the whole run: its size and the labels a
    later check reads (containerd's GC references: ``containerd.io/gc.*``)."""

    size: int
    labels: dict[str, str]


#: the labels of a record with no GC reference (most: every layer); shared, never changed
_NO_GC_LABELS: dict[str, str] = {}
_GC_LABEL_PREFIX = "containerd.io/gc."


def _content_records(meta: MetadataDB, ns: str) -> tuple[dict[str, KeptRecord], dict[str, list[str]], str | None]:
    """The namespace's content records as far as they decode, the keys of their labels that are
    not UTF-8 by digest (checked as each record is decoded: :func:`_kept` drops most labels;
    reported where the record's other findings are), and why the rest does not decode. A record
    under an invalid digest has its labels unchecked: containerd skips that record, labels and all."""
    records: dict[str, KeptRecord] = {}
    bad_labels: dict[str, list[str]] = {}
    try:
        for rec in meta.blobs(ns):
            bad = _non_utf8_keys(rec.labels)
            if bad and _parses(rec.digest):
                bad_labels[rec.digest] = bad
            records[intern(rec.digest)] = _kept(rec)
    except CtrconvError as exc:
        return records, bad_labels, str(exc)
    return records, bad_labels, None


def _parses(digest: str) -> bool:
    """``Digest.parse`` succeeds (a canonical text is known at once, without a Digest made)."""
    if is_canonical(digest):
        return True
    try:
        Digest.parse(digest)
    except InvalidDigestError:
        return False
    return True


def _kept(rec: BlobRecord) -> KeptRecord:
    """A record as verify keeps it: the size and the GC labels, keys and values interned
    (every manifest names the same label keys and the shared base layers). The rest (a layer's
    ``containerd.io/uncompressed`` and ``distribution.source`` labels, the timestamps) is
    checked as the record is decoded and dropped: at 167,700 blobs the whole records held
    ~110 MiB, most of it labels no later check reads."""
    labels = {intern(key): intern(value) for key, value in rec.labels.items() if key.startswith(_GC_LABEL_PREFIX)}
    return KeptRecord(rec.size, labels or _NO_GC_LABELS)


#: what containerd keeps in a namespace as buckets (a plain value there hides its records)
_NAMESPACE_BUCKETS = (K.IMAGES, K.CONTENT, K.SNAPSHOTS, K.LEASES, b"containers", b"sandboxes", K.LABELS)


def _check_namespace_buckets(meta: MetadataDB, ns: str, where: str, report: Report) -> None:
    """A namespace's ``images``, ``content``... stored as a plain value (a damaged flag): its
    records are unreadable, to containerd as to ctrconv, and its GC then collects what they held."""
    plain = set(meta.plain_keys(ns))
    for name in _NAMESPACE_BUCKETS:
        if name in plain:
            report.add("unreadable-record", f"{ns}/{name.decode()}", f"{where}/{name.decode()}",
                       "a plain value where containerd keeps a bucket: every record it held is unreadable")


def _check_labels(labels: Mapping[str, str], obj: str, where: str, report: Report) -> None:
    """A label key or value that is not UTF-8 (a flipped bit, a tool that wrote bytes):
    containerd 1.7+ cannot send it over its API (protobuf strings must be UTF-8), so listing the
    namespace's images, ``ctr images check`` and ``ctr run`` fail for every image of it."""
    _report_labels(_non_utf8_keys(labels), obj, where, report)


def _non_utf8_keys(labels: Mapping[str, str]) -> list[str]:
    """The keys of the labels whose key or value is not UTF-8 (none, almost always)."""
    return [key for key, value in labels.items()
            if not (key.isascii() and value.isascii()) and (_not_utf8(key) or _not_utf8(value))]


def _report_labels(keys: Iterable[str], obj: str, where: str, report: Report) -> None:
    for key in keys:
        report.add("invalid-label", obj, f"{where}/labels",
                   f"label {key!r} is not UTF-8 (its key or value): containerd 1.7+ fails to list or use "
                   "anything in this namespace over its API")


def _check_text(value: str, what: str, obj: str, where: str, report: Report) -> None:
    """A name or field containerd sends over its API that is not UTF-8: as with a label, 1.7+
    fails to list (or to use) everything of its kind in the namespace."""
    if not value.isascii() and _not_utf8(value):
        report.add("invalid-text", obj, where, f"its {what} is not UTF-8: containerd 1.7+ fails to list or use "
                   "anything of its kind in this namespace over its API")


def _not_utf8(text_: str) -> bool:
    try:
        text_.encode("utf-8")
    except UnicodeEncodeError:  # (stored bytes kept as surrogates)
        return True
    return False


def _check_namespace(meta: MetadataDB, croot: ContainerdRoot, ns: str, report: Report,
                     snaps: SnapshotRecords) -> tuple[tuple[str, ...], str | None]:
    """Check one namespace; returns its recorded digests and why any record was unreadable."""
    content = croot.content
    where = f"meta.db v1/{ns}"
    _check_namespace_buckets(meta, ns, where, report)
    records, bad_labels, unreadable = _content_records(meta, ns)
    if unreadable is not None:
        report.add("unreadable-record", f"{ns}/content", where, unreadable)
    others = _OtherRecords(meta, ns) if skips_shared_blobs(ns, meta.writer_line) else None
    snapshot_keys = {sn: {r.key for r in snaps(report, f"{ns}/snapshots/{sn}", where, ns, sn)} for sn in meta.snapshotters(ns)}
    report.count("content records", len(records))
    sizes = blob_sizes(content, records, _documents(records))
    # every record's blob stat-ed once: what the image checks ask of presence and size
    visible = StatedContent(content, ns, sizes)

    labelled_by: dict[str, str] = {}  # a blob -> a record whose gc.ref.content label keeps it
    unpacks_again = _UnpacksAgain(records, visible)
    linked: dict[str, set[str]] = {}

    def linked_children(sn: str) -> set[str]:
        """The keys the namespace's snapshot records list as children (read on first need)."""
        if sn not in linked:  # (a record that does not read is reported by the check above)
            linked[sn] = {child for rec in snaps(Report(), "", "", ns, sn) for child in rec.children}
        return linked[sn]

    for digest, rec in records.items():
        obj = f"blob {digest}"
        try:
            d = Digest.parse(digest)
        except InvalidDigestError as exc:
            report.add("invalid-digest", obj, f"{where}/content/blob", str(exc))
            continue
        on_disk = sizes[digest]
        if on_disk is None:
            report.add("missing-blob", obj, str(content.blob_path(d)),
                       f"content record in {ns} but no blob file{_not_a_file(content.blob_path(d))}")
        elif on_disk != rec.size:
            report.add("size-mismatch", obj, str(content.blob_path(d)), f"record says {rec.size} bytes, file has {on_disk}")
        _report_labels(bad_labels.get(digest, ()), obj, f"{where}/content/blob/{digest}", report)
        for key, value in rec.labels.items():
            if _is_content_ref(key):
                labelled_by.setdefault(value, digest)
                if value not in records:
                    # an index lists every platform, a pull fetches one: containerd's GC
                    # (metadata/gc.go) skips references to content it has no record of
                    report.add("dangling-gc-label", obj, f"{where}/content/blob/{digest}/labels",
                               f"{key} points at {value}, which {ns} does not hold (containerd's GC ignores this)",
                               severity="info")
            elif key.startswith(GC_SNAPSHOT):
                sn = key[len(GC_SNAPSHOT):].split("/", 1)[0]
                if value in snapshot_keys.get(sn, set()):
                    continue
                label_at = f"{where}/content/blob/{digest}/labels"
                if not unpacks_again(digest):
                    report.add("dangling-gc-label", obj, label_at,
                               f"{key} points at snapshot {value}, which {sn} does not have in {ns}: the image's "
                               "unpacked snapshot is lost and its layers are not all here to unpack it again (a "
                               "container cannot start from it)")
                elif value in linked_children(sn):
                    # (``ctr snapshots rm`` unlinks it from its parent; damage leaves the link)
                    report.add("dangling-gc-label", obj, label_at,
                               f"{key} points at snapshot {value}, which meta.db does not record in {ns} while its "
                               "parent still lists it as a child: its record was lost (containerd's GC deletes "
                               "what the snapshotter still holds of it; `rebuild` writes the record again)")
                else:
                    # (``ctr snapshots rm`` of an image's top snapshot, a pruning tool)
                    report.add("dangling-gc-label", obj, label_at,
                               f"{key} points at snapshot {value}, which {sn} does not have in {ns}: the image is "
                               "no longer unpacked there (the snapshot was removed); its layers are here, and `ctr "
                               "run` and CRI unpack it again on first use (containerd's GC ignores the label)",
                               severity="info")

    _check_containers(meta, ns, where, snapshot_keys, report)
    runs = HostRuns()

    stored, elements, unreadable_images = image_elements(meta, ns)

    def one(element: Element) -> Findings | str:
        """The findings of one image record, decoded where it is checked; why it does not read
        instead (it and the records after it are not checked: a loop over them stopped there)."""
        try:
            image = stored.decode(element)  # type: ignore[union-attr]  # (no elements without it)
        except CtrconvError as exc:
            return str(exc)
        found = Report()
        _check_image(image, records, visible, snapshot_keys, found, others, runs, labelled_by)
        return tuple(found.problems), tuple(found.stats.items())  # a clean image: two empty tuples

    checked: Iterable[Findings | str]
    if len(elements) >= SPLIT_FROM and can_split():
        checked = map_halves(one, elements)
    else:
        checked = (one(element) for element in elements)
    unreadable = None if unreadable_images is None else str(unreadable_images)
    for result in checked:
        if isinstance(result, str):
            unreadable = result  # (before the walk's error, which comes after every record)
            break
        report.count("images")
        report.merge(*result)
    if unreadable is not None:
        report.add("unreadable-record", f"{ns}/images", where, unreadable)

    now = time.time_ns()
    leases = list(_safe(report, f"{ns}/leases", where, meta.leases(ns)))
    for lease in leases:
        _check_labels(lease.labels, f"lease {ns}/{lease.id}", f"{where}/leases/{lease.id}", report)
        _check_text(lease.id, "name", f"lease {ns}/{lease.id}", f"{where}/leases", report)
    _check_labels(meta.namespace_labels(ns), f"namespace {ns}", where, report)
    leased = {ref for lease in leases for ref in lease.ingests}
    for ingest in _safe(report, f"{ns}/ingests", where, meta.ingests(ns)):
        if ingest.ref in leased:
            continue
        if ingest.expire_at is None or ingest.expire_at.unix_ns < now:
            report.add("stale-ingest", f"ingest {ns}/{ingest.ref}", f"{where}/content/ingests", "unleased ingest with no future expiry (containerd's GC drops it; a pull of the same blob resumes it)", severity="info")
    return tuple(visible.recorded), unreadable  # (not the sizes: they are not needed again)


def _documents(records: dict[str, KeptRecord]) -> set[str]:
    """The blobs the records name as JSON documents: a record that labels content is a
    manifest or an index, and a config is labelled ``gc.ref.content.config``."""
    documents: set[str] = set()
    for digest, rec in records.items():
        for key, value in rec.labels.items():
            if _is_content_ref(key):
                documents.add(digest)
                if key == GC_CONTENT + ".config":
                    documents.add(value)
    return documents


def _unreferenced_snapshot(snapshot: "BackendSnapshot", fs: "Path | None") -> str:
    """Why a backend snapshot no meta.db record names is information, and what to do when it
    holds a container's files (a removed container's layer awaiting GC, or one whose record an
    older meta.db put back has lost: they cannot be told apart; a red-team run)."""
    message = "no meta.db record names it (containerd's GC removes it)"
    if snapshot.kind != "active" or not holds_entries(fs):
        return message
    return (f"{message}: a writable snapshot holding files, a container's layer (a removed container's, or one "
            f"whose record a meta.db restored from an older copy lacks): save what {fs} holds before containerd "
            "runs, if it is wanted")


def _not_a_file(path: "os.PathLike[str]") -> str:
    """Why a blob path that exists is no blob file (``: it is a directory``), else ``""``."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if os.path.islink(path):
            return (": its path is a symbolic link loop" if exc.errno == errno.ELOOP
                    else f": its path is a symbolic link to nothing ({os.readlink(path)})")
        return ""
    kinds = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket",
             stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}
    kind = kinds.get(stat.S_IFMT(st.st_mode))
    return f": its path is {kind}" if kind else ""


def _is_content_ref(key: str) -> bool:
    return key == GC_CONTENT or key.startswith(GC_CONTENT + ".") or key.startswith(GC_CONTENT + "/")


def _labels_of(records: dict[str, KeptRecord], digest: str) -> set[str]:
    rec = records.get(digest)
    if rec is None:
        return set()
    return {v for k, v in rec.labels.items() if _is_content_ref(k)}


def _absence(content: NamespaceContent, digest: str) -> tuple[str, str]:
    """(kind, reason) for a blob the namespace cannot see."""
    if content.has_record(digest):
        return "missing-blob", "has a content record but no blob file"
    if content.store.exists(digest):
        return "missing-record", (f"is on disk but {content.namespace} has no content record for it "
                                  "(another namespace's blob, or a lost record): containerd treats it as absent")
    return "missing-blob", f"is not in the content store of {content.namespace}"


class _OtherRecords:
    """Whether another namespace of the root records a digest (read once, on the first question:
    only an image missing blobs asks)."""

    def __init__(self, meta: MetadataDB, namespace: str) -> None:
        self._meta = meta
        self._namespace = namespace
        self._digests: frozenset[str] | None = None

    def __call__(self, digest: str) -> bool:
        if self._digests is None:
            found: set[str] = set()
            for other in self._meta.namespaces():
                if other != self._namespace:
                    try:
                        found |= self._meta.content_digests(other)
                    except CtrconvError:
                        continue
            self._digests = frozenset(found)
        return digest in self._digests


class _UnpacksAgain:
    """Whether an image config's snapshot, when gone, is made again on first use: some manifest
    labelling the config (``gc.ref.content.config``) has every layer in the namespace. containerd
    unpacks an image whose snapshot is missing (``ctr run``; CRI's ``WithNewSnapshot`` catches
    NotFound and unpacks), so a config label naming a removed snapshot is then no damage; with
    the layers gone too (CRI ``discard_unpacked_layers``) the snapshot was the only copy."""

    def __init__(self, records: Mapping[str, KeptRecord], content: NamespaceContent) -> None:
        self._records = records
        self._content = content
        self._manifests: dict[str, list[str]] | None = None  # config -> manifests (made on first need)

    def __call__(self, config: str) -> bool:
        if self._manifests is None:
            self._manifests = {}
            for digest, record in self._records.items():
                labelled = record.labels.get(GC_CONFIG)
                if labelled:
                    self._manifests.setdefault(labelled, []).append(digest)
        return any(self._layers_here(manifest) for manifest in self._manifests.get(config, ()))

    def _layers_here(self, manifest: str) -> bool:
        try:  # (untrusted bytes: ctrconv's parser and its limits, as for every document)
            doc = parse_json_bytes(self._content.read_small(manifest, self._records[manifest].size),
                                   what=f"manifest {manifest}")
            layers = [layer["digest"] for layer in doc["layers"]]
        except (CtrconvError, OSError, KeyError, TypeError):
            return False
        return all(isinstance(d, str) and self._content.exists(d) for d in layers)


def _check_image(image: ImageRecord, records: dict[str, KeptRecord], content: NamespaceContent,
                 snapshot_keys: dict[str, set[str]], report: Report,
                 others: Callable[[str], bool] | None = None, runs: HostRuns | None = None,
                 labelled_by: Mapping[str, str] | None = None) -> None:
    """One image as containerd sees it from its namespace.

    An index names every platform; a node pulls one (or a few). A platform child that is
    absent, or only partly present (2.x keeps the manifests of platforms it did not pull), is
    information as long as some platform of the index is whole; everything an image needs
    outside that (its target, children without a platform, a single-manifest image's config
    and layers) must be present.
    """
    obj = f"image {image.namespace}/{image.name}"
    where = f"meta.db v1/{image.namespace}/images/{image.name}"
    _check_labels(image.labels, obj, where, report)
    _check_text(image.name, "name", obj, where, report)
    _check_text(image.target.media_type, "target media type", obj, f"{where}/target", report)
    target = image.target.descriptor()
    try:
        Digest.parse(image.target.digest)
    except InvalidDigestError as exc:
        report.add("invalid-target", obj, where, str(exc))
        return
    if image.target.size <= 0 or not image.target.media_type:
        report.add("invalid-target", obj, where, "target needs a size > 0 and a media type")
    cache: DocumentCache = {}
    empty: dict[str, str] = {}
    labels_of = RecordedLabels(lambda d: records[d].labels if d in records else empty, records.__contains__, others)
    try:
        verdict = assess(
            content, target, cache=cache,
            labels_of=labels_of,
            snapshot_exists=lambda sn, key: key in snapshot_keys.get(sn, set()),
        )
    except ContentError as exc:
        report.add("corrupt-blob", obj, where, str(exc))
        return
    except CtrconvError as exc:
        report.add("invalid-json", obj, where, str(exc))
        return
    _report_verdict(image, verdict, labels_of, content, obj, where, report)
    runs = runs or HostRuns()
    _check_gc_labels(verdict, records, content, cache, obj, where, report, runs, labelled_by or {})
    for manifest in verdict.usable:
        _check_unpacked(image, manifest, records, content, snapshot_keys, report, cache, runs)


def _report_verdict(image: ImageRecord, verdict: Assessment, labels_of: RecordedLabels, content: NamespaceContent,
                    obj: str, where: str, report: Report) -> None:
    """What the completeness rule found: absent or partial platforms and discarded layers as
    information, broken manifests and an index with no usable platform as problems."""
    plan = verdict.plan
    missing = {d["digest"] for d in plan.missing}
    for m in verdict.partial:
        if m.descriptor.get("platform") and verdict.usable:
            gone = {d["digest"] for d in (m.config, *m.layers)} & missing
            report.add("absent-platform", obj, where,
                       f"platform {platform_string(m.descriptor['platform'])} ({m.descriptor['digest']}) was only partly pulled: {len(gone)} of its blobs are not in {image.namespace}",
                       severity="info")
    for desc in verdict.absent:
        report.add("absent-platform", obj, where,
                   f"platform {platform_string(desc['platform'])} ({desc['digest']}) was never pulled into {image.namespace}",
                   severity="info")
    for m in verdict.discarded:
        gone = {d["digest"] for d in m.layers} & missing
        if not never_recorded(labels_of, gone):
            why = "were let go after unpacking (CRI discard_unpacked_layers)"
        elif image.namespace == "moby":
            why = "were never fetched (Docker's containerd store skips a layer whose snapshot exists)"
        else:  # (CRI's discard leaves no record either: the GC removed it with the blob)
            why = "are not stored (let go after unpacking, CRI discard_unpacked_layers, or never fetched)"
        report.add("discarded-layers", obj, where,
                   f"platform {platform_string(m.platform)}: {len(gone)} layer blob(s) {why}; its snapshots run it, "
                   "and export writes those layers again from them (--from-snapshots auto)",
                   severity="info")
    for desc in verdict.broken:
        if plan.indexes and not verdict.usable and desc.get("platform") and not content.has_record(desc["digest"]) \
                and (mt.is_manifest(desc.get("mediaType", "")) or mt.is_index(desc.get("mediaType", ""))):
            # a platform the namespace never pulled is not broken when the one it pulled is
            # (no-platform below says so): it was called a missing record (a red-team run)
            report.add("absent-platform", obj, where,
                       f"platform {platform_string(desc['platform'])} ({desc['digest']}) was never pulled into "
                       f"{image.namespace}", severity="info")
            continue
        kind, reason = _absence(content, desc["digest"])
        report.add(kind, obj, where, f"{desc.get('mediaType')} {desc['digest']} {reason}")
    if plan.indexes and not verdict.usable:
        report.add("no-platform", obj, where,
                   "no platform of this index has a manifest" if not plan.manifests and not missing
                   else f"no platform of this index is whole in {image.namespace}")


def _check_gc_labels(verdict: Assessment, records: dict[str, KeptRecord], content: NamespaceContent,
                     cache: DocumentCache, obj: str, where: str, report: Report, runs: HostRuns,
                     labelled_by: Mapping[str, str]) -> None:
    """Each parent labels its direct children (containerd's ChildGCLabels); only children that
    are present matter (GC keeps what is labelled, and ignores the rest).

    A present child an index does not label is a problem when this host runs it (GC would
    take the image's own platform), and information otherwise: 1.7 and 2.x leave the platforms
    an import did not select, and their configs and layers, for the GC that runs after it (a
    root stopped before it is healthy), and another image may keep them. Likewise a manifest
    of a platform this host does not run may leave its config and layers unlabelled (1.7 and
    2.x keep such manifests, and their GC then removes the rest): information too.

    A manifest's unlabelled child that another record's label keeps is information as well:
    GC keeps it while that record lives. A node with CRI's ``discard_unpacked_layers`` labels
    no layers of the images it pulled; a later image (an import) that shares a base layer
    brings the blob back under its own label, and the node is healthy."""
    missing = {d["digest"] for d in verdict.plan.missing}
    host = {m.descriptor["digest"] for m in verdict.usable if not m.platform or runs(m.platform)}
    for index in verdict.plan.indexes:
        if index["digest"] not in records:
            continue
        labels = _labels_of(records, index["digest"])
        try:
            doc = read_json_blob(content, index, cache)
        except CtrconvError:
            continue
        for child in doc.get("manifests") or []:
            digest = child.get("digest")
            if isinstance(digest, str) and content.exists(digest) and digest not in labels:
                if digest in host:
                    report.add("missing-gc-label", obj, where, f"index {index['digest']} has no gc.ref.content label for its child {digest}: GC would delete it")
                else:
                    report.add("missing-gc-label", obj, where,
                               f"index {index['digest']} has no gc.ref.content label for its child {digest}, a platform "
                               "not selected here: containerd's GC removes it unless another image keeps it",
                               severity="info")
    # a partly pulled platform's manifest (2.x keeps it without labels) protects nothing the
    # whole platforms need: only whole manifests must label their children
    for manifest in verdict.usable:
        mdigest = manifest.descriptor["digest"]
        if mdigest not in records:
            continue
        unselected = bool(verdict.plan.indexes) and mdigest not in host
        labels = _labels_of(records, mdigest)
        for child in [manifest.config, *manifest.layers]:
            if child["digest"] not in missing and child["digest"] not in labels:
                if unselected:
                    report.add("missing-gc-label", obj, where,
                               f"manifest {mdigest} (a platform this host does not run) has no gc.ref.content label "
                               f"for {child['digest']}: containerd's GC removes it unless another image keeps it",
                               severity="info")
                elif labelled_by.get(child["digest"], mdigest) != mdigest:
                    report.add("missing-gc-label", obj, where,
                               f"manifest {mdigest} has no gc.ref.content label for {child['digest']}: "
                               f"{labelled_by[child['digest']]} labels it, so GC keeps it while that record lives",
                               severity="info")
                else:
                    report.add("missing-gc-label", obj, where, f"manifest {mdigest} has no gc.ref.content label for {child['digest']}: GC would delete it")


def _check_unpacked(image: ImageRecord, manifest: PlannedManifest, records: dict[str, KeptRecord],
                    content: NamespaceContent, snapshot_keys: dict[str, set[str]], report: Report,
                    cache: DocumentCache | None = None, runs: HostRuns | None = None) -> None:
    obj = f"image {image.namespace}/{image.name}"
    config = manifest.config
    if manifest.platform and not (runs or HostRuns())(manifest.platform):
        return
    if not mt.is_config(config.get("mediaType", "")):
        return
    try:
        doc = read_json_blob(content, config, cache)
    except CtrconvError:
        return
    diff_ids = (doc.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(manifest.layers):  # (no diff IDs for a manifest with layers too)
        # containerd 1.6 and 1.7 record such an image (``ctr images import``, a pull) and then
        # fail every unpack: "mismatched image rootfs and manifest layers"; a snapshot its
        # config's chain names belongs to another image sharing the base layers
        report.add("rootfs-mismatch", obj, f"config {config['digest']}",
                   f"platform {platform_string(manifest.platform)}: the config lists {len(diff_ids)} diff IDs for the "
                   f"manifest's {len(manifest.layers)} layers: containerd cannot unpack it (mismatched image "
                   "rootfs and manifest layers), and a run gets only the layers the config lists")
        return
    if not diff_ids:
        return
    top = chain_ids(diff_ids)[-1]
    rec = records.get(config["digest"])
    labels = rec.labels if rec else {}
    unpacked_in = [sn for sn, keys in snapshot_keys.items() if top in keys]
    if not unpacked_in:
        report.add("not-unpacked", obj, f"meta.db v1/{image.namespace}/snapshots", f"platform {platform_string(manifest.platform)} is not unpacked in any snapshotter", severity="info")
    for sn in unpacked_in:
        if labels.get(GC_SNAPSHOT + sn) != top:
            report.add("missing-gc-label", obj, f"meta.db v1/{image.namespace}/content/blob/{config['digest']}", f"config has no {GC_SNAPSHOT}{sn} label for {top}: GC would delete the unpacked snapshots")


def _check_meta_snapshots(meta: MetadataDB, namespaces: list[str], report: Report, backends: dict[str, _Backend],
                          snaps: SnapshotRecords) -> None:
    for ns in namespaces:
        writable = _container_snapshots(meta, ns)
        for sn in meta.snapshotters(ns):
            kinds = {b.key: b.kind for b in backends[sn].snapshots} if sn in backends else {}
            backend_keys = set(kinds)
            recs = {r.key: r for r in snaps(report, f"{ns}/snapshots/{sn}", "meta.db", ns, sn)}
            for key, rec in recs.items():
                obj = f"snapshot {ns}/{sn}/{key}"
                where = f"meta.db v1/{ns}/snapshots/{sn}/{key}"
                report.count("snapshots")
                _check_labels(rec.labels, obj, where, report)
                kind = kinds.get(rec.name)
                if kind is not None and kind != "committed" and K.CHAIN_KEY.fullmatch(key):
                    # (containerd unpacks under "extract-..." keys and commits to the chain ID)
                    report.add("snapshot-chain", obj, where, f"an image layer (its key is a chain ID) recorded as {kind}, "
                               "not committed: no container can be made on it (\"not committed snapshot\")")
                if kind is not None and kind not in ("active", "view") and (sn, key) in writable:
                    report.add("snapshot-chain", obj, where, f"a container's writable snapshot recorded as {kind}: "
                               "the container cannot start (\"not active or view\")")
                if rec.parent and rec.parent not in recs:
                    report.add("snapshot-chain", obj, where, f"parent {rec.parent} has no record")
                elif rec.parent and key not in recs[rec.parent].children:
                    report.add("snapshot-chain", obj, where,
                               f"its parent {rec.parent} does not list it among its children: containerd lets that "
                               "parent be removed while this snapshot stands on it")
                if rec.name not in backend_keys and (sn in backends or sn in K.TREE_SNAPSHOTTERS):
                    report.add("missing-backend-snapshot", obj, where, f"backend snapshot {rec.name} is not in {sn}/metadata.db")
                for child in rec.children:
                    if child not in recs:
                        # containerd 1.6's GC removes a snapshot without its parent's link to it
                        report.add("stale-child-link", obj, where, f"child link {child} has no record (left by containerd's GC; containerd ignores it)", severity="info")


def _container_snapshots(meta: MetadataDB, ns: str) -> set[tuple[str, str]]:
    """(snapshotter, key) of the snapshots the namespace's containers write into."""
    found: set[tuple[str, str]] = set()
    try:
        for container_id in meta.containers(ns):
            container = meta.container(ns, container_id)
            if container is not None and container.snapshot_key:
                found.add((container.snapshotter, container.snapshot_key))
    except CtrconvError:
        pass  # (reported by the containers check)
    return found


def _check_snapshotter(croot: ContainerdRoot, sn: str, backend: _Backend, referenced_names: set[str], report: Report) -> None:
    base = croot.snapshotter_dir(sn)
    snaps, links, sequence = backend.snapshots, backend.links, backend.sequence
    by_key = {s.key: s for s in snaps}
    ids = {s.id for s in snaps}
    for s in snaps:
        obj = f"backend snapshot {sn}/{s.key}"
        where = f"{base}/metadata.db"
        fs = croot.snapshot_fs(sn, s.id)
        if fs is not None and not fs.is_dir() and has_own_directory(sn, s.kind, s.parent):
            if s.key in referenced_names:
                report.add("missing-snapshot-dir", obj, str(croot.snapshot_dir(sn, s.id)), f"id {s.id} has no directory")
            else:  # (a write stopped between the snapshotter db and meta.db leaves these: GC's)
                report.add("missing-snapshot-dir", obj, str(croot.snapshot_dir(sn, s.id)),
                           f"id {s.id} has no directory; no meta.db record names it (containerd's GC removes it)",
                           severity="info")
        if s.kind == "committed" and (s.inodes or 0) > 1 and fs is not None and fs.is_dir() and not holds_entries(fs):
            # (a scandir of the tree, not its walk: --deep compares the files themselves)
            report.add("emptied-snapshot", obj, str(fs),
                       f"id {s.id}: its tree is empty, while the snapshotter counted {s.inodes} inodes in it at its "
                       "commit: its files are gone, and every container on it fails to start (ctrconv rebuild "
                       "unpacks it again)")
        _check_labels(s.labels, obj, where, report)
        if s.parent and s.parent not in by_key:
            report.add("snapshot-chain", obj, where, f"parent {s.parent} is not in the snapshotter")
        elif s.parent and by_key[s.parent].kind != "committed":
            report.add("snapshot-chain", obj, where,
                       f"parent {s.parent} is {by_key[s.parent].kind}, not committed: containerd refuses to make or "
                       "mount a snapshot on it (\"parent ... is not committed snapshot\")")
        if sn == "overlayfs" and s.kind == "active" and fs is not None and fs.is_dir() \
                and not real_dir(croot.snapshot_dir(sn, s.id) / "work"):
            report.add("missing-snapshot-dir", obj, str(croot.snapshot_dir(sn, s.id) / "work"),
                       f"active snapshot id {s.id} has no work directory: overlayfs cannot mount it (a container "
                       "on it cannot start)")
        if s.id > sequence:
            report.add("sequence-too-low", obj, where, f"id {s.id} above the bucket sequence {sequence}: new snapshots would collide")
        if s.key not in referenced_names:
            report.add("unreferenced-backend-snapshot", obj, where, _unreferenced_snapshot(s, fs), severity="info")
    child_keys = {(by_key[s.parent].id if s.parent in by_key else None, s.id) for s in snaps if s.parent}
    for pid, cid, key in links:
        if (pid, cid) not in child_keys:
            if pid in ids:  # (it would keep containerd from removing that parent)
                report.add("snapshot-chain", f"parents index {pid}/{cid}", f"{base}/metadata.db", f"v1/parents entry for {key} does not match any parent link")
            else:  # (left by a write stopped and run again: ids are never reused)
                report.add("snapshot-chain", f"parents index {pid}/{cid}", f"{base}/metadata.db",
                           f"v1/parents entry for {key} names no snapshot (id {pid}); containerd ignores it",
                           severity="info")
    indexed = {(l[0], l[1]) for l in links}
    for pid, cid in child_keys:
        if pid is not None and (pid, cid) not in indexed:
            report.add("snapshot-chain", f"parents index {pid}/{cid}", f"{base}/metadata.db", "parent link without its v1/parents entry")
    snapdir = base / "snapshots"
    if snapdir.is_dir():
        for entry in sorted(os.listdir(snapdir)):
            if not entry.isdigit() or int(entry) not in ids or str(int(entry)) != entry:
                if entry.isdigit() and str(int(entry)) == entry and int(entry) > sequence:
                    # a crash between overlay's rename and its commit: the sequence rolled back
                    report.add("orphan-snapshot-dir", f"{sn}/snapshots/{entry}", str(snapdir / entry),
                               f"directory without a snapshot record above the bucket sequence {sequence}: the "
                               "snapshot containerd makes with that id fails (\"file exists\") until a garbage "
                               "collection removes it")
                    continue
                report.add("orphan-snapshot-dir", f"{sn}/snapshots/{entry}", str(snapdir / entry), "directory without a snapshot record (containerd removes it: overlay Cleanup at its next snapshot garbage collection)", severity="info")


def _check_blobs(croot: ContainerdRoot, referenced: set[str], report: Report, jobs: int | None,
                 progress: Progress | None, hash_only: set[str] | None = None,
                 blob_hashes: dict[str, tuple[str | None, int]] | None = None) -> None:
    content = croot.content
    # digests kept as text, each one's Digest and path made as it is hashed: (Digest, path)
    # pairs held for the length of the hashing were ~60 MiB at 167,700 blobs
    digests = [d for d in content.iter_blob_digests() if hash_only is None or d in hash_only]
    report.count("blobs", len(digests))
    # the total is known before hashing starts: the sizes of the files to read
    total = sum(file_size(content.blob_file(d)) for d in digests) if progress is not None else 0
    with stage(progress, "verify", total) as step:
        for digest, actual, size in hashed_blobs(((Digest.parse(d), content.blob_file(d)) for d in digests),
                                                 jobs=jobs, stage=step):
            _judge_blob(content, digest, actual, size, referenced, report, blob_hashes)
    _check_ingest(content, report)


_UNREFERENCED = "no namespace has a content record for it (containerd's GC deletes it)"


def _judge_blob(content: ContentStore, digest: Digest, actual: str | None, size: int, referenced: set[str],
                report: Report, blob_hashes: dict[str, tuple[str | None, int]] | None) -> None:
    """What one hashed blob file says: nothing when it is whole and recorded."""
    report.count("bytes hashed", size)
    if blob_hashes is not None:
        blob_hashes[str(digest)] = (actual, size)
    if actual == digest.hex and str(digest) in referenced:
        return  # nothing to say: no path or message made
    obj = f"blob {digest}"
    path = str(content.blob_path(digest))
    if str(digest) not in referenced:
        # garbage the GC takes whatever its bytes (a file a crash or a full disk left):
        # information, its fault named (a damaged meta.db that lost its record is a
        # problem of its own)
        fault = ("cannot be read; " if actual is None else
                 f"content hashes to {digest.algorithm}:{actual}; " if actual != digest.hex else "")
        report.add("unreferenced-blob", obj, path, fault + _UNREFERENCED, severity="info")
    elif actual is None:
        report.add("unreadable-blob", obj, path, "cannot read the blob file")
    elif actual != digest.hex:
        report.add("digest-mismatch", obj, path, f"content hashes to {digest.algorithm}:{actual}")


def _check_containers(meta: MetadataDB, ns: str, where: str, snapshot_keys: dict[str, set[str]],
                      report: Report) -> None:
    """A container whose snapshot the namespace does not have cannot start (``ctr tasks start``:
    snapshot not found) and its writable layer is lost; containerd's GC never removes a
    container, so nothing else would say so (found by a red-team run: a rebuilt root verified
    clean while its containers could not start)."""
    try:
        ids = meta.containers(ns)
    except CtrconvError as exc:  # (a damaged leaf of ``containers``: that bucket only, not the whole file)
        report.add("unreadable-record", f"{ns}/containers", f"{where}/containers", str(exc))
        return
    for container_id in ids:
        obj = f"container {ns}/{container_id}"
        try:
            container = meta.container(ns, container_id)
        except CtrconvError as exc:
            report.add("unreadable-record", obj, f"{where}/containers/{container_id}", str(exc))
            continue
        if container is not None:
            _check_labels(container.labels, obj, f"{where}/containers/{container_id}", report)
            for what, value in (("id", container.id), ("image", container.image), ("snapshotter", container.snapshotter),
                                ("snapshot key", container.snapshot_key), ("runtime name", container.runtime)):
                _check_text(value, what, obj, f"{where}/containers/{container_id}", report)
        if container is None or not container.snapshot_key:
            continue  # (a container made without a root filesystem)
        if container.snapshot_key not in snapshot_keys.get(container.snapshotter, set()):
            report.add("missing-container-snapshot", obj, f"{where}/containers/{container_id}",
                       f"names snapshot {container.snapshot_key} of {container.snapshotter or '(no snapshotter)'}, "
                       f"which {ns} does not have: the container cannot start (its writable layer is lost)")


def _list_blobs(croot: ContainerdRoot, referenced: set[str], report: Report, only: set[str] | None) -> None:
    """:func:`_check_blobs` without reading a byte (``verify --no-hash``): every blob file is
    listed and matched against the content records (their sizes are checked per namespace)."""
    content = croot.content
    listed = 0
    for digest in content.iter_blob_digests():
        if only is not None and digest not in only:
            continue
        listed += 1
        if digest not in referenced:
            report.add("unreferenced-blob", f"blob {digest}", str(content.blob_path(digest)), _UNREFERENCED, severity="info")
    report.count("blobs", listed)
    _check_ingest(content, report)


def _check_ingest(content: ContentStore, report: Report) -> None:
    ingest = content.path / "ingest"
    if ingest.is_dir():
        for entry in sorted(os.listdir(ingest)):
            report.add("ingest-dir", f"ingest {entry}", str(ingest / entry), "partial upload left in the content store", severity="info")




def _deep(meta: MetadataDB, croot: ContainerdRoot, namespaces: list[str], report: Report, backends: dict[str, _Backend]) -> None:
    """Compare every unpacked snapshot of every image (each platform's) with its layer."""
    from ctrconv.verify.deep import check_snapshot_trees, unpacked_layer_chains

    checked: set[tuple[str, str]] = set()
    for ns in namespaces:
        for sn in meta.snapshotters(ns):
            ids = {b.key: b.id for b in backends[sn].snapshots} if sn in backends else {}
            dirs = {}
            for rec in _safe(report, f"{ns}/snapshots/{sn}", "meta.db", meta.snapshots(ns, sn)):
                fs = croot.snapshot_fs(sn, ids[rec.name]) if rec.name in ids else None
                if fs is not None:
                    dirs[rec.key] = fs
            visible = NamespaceContent.of(meta, croot.content, ns)
            for image in _safe(report, f"{ns}/images", "meta.db", meta.images(ns)):
                for layers, diff_ids, _ in unpacked_layer_chains(visible, image.target.descriptor()):
                    check_snapshot_trees(croot, ns, sn, layers, diff_ids, dirs, report, checked)
