"""The library's entry points: one function per user-facing operation.

The CLI only parses options, calls one of these and renders the result.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, BinaryIO, Iterator, Sequence

# the one progress protocol of every operation (stdlib only, light): the CLI implements it
from ctrconv.progress import Progress, Stage, Unit  # noqa: F401  (Stage, Unit: for implementers)

if TYPE_CHECKING:
    from ctrconv.bolt.reader import Bucket
    from ctrconv.recovery.options import RebuildOptions
    from ctrconv.sinks.containerd_root import ImportOptions, ImportReport
    from ctrconv.inventory import ImageSummary
    from ctrconv.verify import Report

#: What the CLI needs besides the operations below (validation, lock waiting, report
#: rendering, format names), served from here so the CLI depends on this module only
#: (``tests/unit/test_layers_contract.py``). Resolved on first use: ``ctrconv --help`` and
#: ``--version`` import none of them.
_FOR_THE_CLI: dict[str, tuple[str, str | None]] = {
    "check_namespace": ("ctrconv.containerd.root", "check_namespace"),
    "waiting": ("ctrconv.containerd.rootlock", "waiting"),
    "import_report_lines": ("ctrconv.sinks.containerd_root", "report_lines"),
    "push_report_lines": ("ctrconv.registry.push", "report_lines"),
    "human_size": ("ctrconv.sizes", "human_size"),
    "EXPORT_FORMATS": ("ctrconv.sinks", "FORMATS"),
    "is_stdout": ("ctrconv.outputs", "is_stdout"),
    "leads_to_stdout": ("ctrconv.outputs", "leads_to_stdout"),
    "RegistryOptions": ("ctrconv.registry", "RegistryOptions"),
    "ExportReport": ("ctrconv.pipeline.export", "ExportReport"),
    "ConvertOptions": ("ctrconv.pipeline.export_report", "ConvertOptions"),
    "ExportOptions": ("ctrconv.pipeline.export_report", "ExportOptions"),
    "RebuildOptions": ("ctrconv.recovery.options", "RebuildOptions"),
    "ImportOptions": ("ctrconv.sinks.containerd_root", "ImportOptions"),
    "containerd_schema": ("ctrconv.containerd.schema", None),
}


def __getattr__(name: str) -> Any:
    """PEP 562: the CLI helpers of :data:`_FOR_THE_CLI`, imported when first asked for."""
    try:
        module_name, attribute = _FOR_THE_CLI[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    import importlib

    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def _reading(root: str | os.PathLike[str], ignore_lock: bool) -> AbstractContextManager[Any]:
    """One consistent view of a root: ``LOCK_SH`` on it, so no ctrconv writer changes it
    meanwhile (a writer holding it: refused naming it, or waited for with ``waiting``).
    ``ignore_lock`` reads without it; locked bolt files are then read from private copies."""
    from ctrconv.containerd.rootlock import read_lock

    return nullcontext() if ignore_lock else read_lock(root)


@contextmanager
def _reading_and_writing(source: str | os.PathLike[str], target: str | os.PathLike[str],
                         ignore_lock: bool) -> Iterator[None]:
    """The source root's shared lock and the target root's writers' lock, taken in the order of
    their real paths: two copies A->B and B->A with ``--wait`` each held its source and waited
    for the other's forever (a red-team run). Taken in one order by everyone, one of them gets
    both. (The sink takes the target's lock again itself: it is re-entrant.)"""
    from ctrconv.containerd.rootlock import write_lock

    with ExitStack() as stack:
        # (a target that does not exist yet is held by nobody: the sink makes and locks it, and
        # a root it made is one it may remove again if the write fails)
        if os.path.realpath(target) < os.path.realpath(source) and os.path.isdir(target):
            stack.enter_context(write_lock(target, create=False))
        stack.enter_context(_reading(source, ignore_lock))
        yield


def dump_bolt(path: str | os.PathLike[str], *, ignore_lock: bool = False) -> dict[str, Any]:
    """The whole bolt file as a JSON-friendly tree: every bucket (with its sequence), key and value.

    Each entry keeps the exact bytes (``key_hex``/``value_hex``) beside a decoded form, so the
    dump can be compared byte for byte with what Go bbolt reads. A file that a running
    containerd (or a ctrconv writer) holds is refused unless ``ignore_lock``: then a consistent
    private copy is read, never the live file.
    """
    import stat
    import tempfile

    from ctrconv.containerd.locking import is_locked, private_copy, shared_lock
    from ctrconv.errors import NotFoundError, UsageError

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise NotFoundError(f"{path}: no such file") from None
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):  # (a FIFO would block the read forever; a directory is no bolt file)
        raise UsageError(f"{path} is {'a directory' if stat.S_ISDIR(mode) else 'not a regular file'}: "
                         "dump reads a bolt file")
    with ExitStack() as stack:
        readable: str | os.PathLike[str] = path
        if os.path.isfile(path) and is_locked(path) and ignore_lock:
            work = stack.enter_context(tempfile.TemporaryDirectory(prefix="ctrconv-dump-"))
            readable = private_copy(path, work)
        elif os.path.isfile(path):
            stack.enter_context(shared_lock(path))
        return _dump_file(path, readable)


def _dump_file(path: str | os.PathLike[str], readable: str | os.PathLike[str]) -> dict[str, Any]:
    from ctrconv.bolt.reader import BoltFile  # imported here: --help and --version need no bolt

    with BoltFile(readable) as db:
        meta = db.meta
        return {
            "file": str(path),
            "page_size": db.page_size,
            "meta": {
                "page": meta.page,
                "txid": meta.txid,
                "root": meta.root,
                "freelist": None if not meta.freelist_synced else meta.freelist,
                "high_water_mark": meta.pgid,
            },
            "root": _dump_bucket(db.root, ()),
        }


def _dump_bucket(bucket: Bucket, path: tuple[bytes, ...]) -> dict[str, Any]:
    from ctrconv.bolt.reader import Bucket
    from ctrconv.containerd.records import decode_key, decode_value

    entries = []
    for key, value in bucket.items():
        entry: dict[str, Any] = {"key": decode_key(path, key), "key_hex": key.hex()}
        if isinstance(value, Bucket):
            entry["bucket"] = _dump_bucket(value, path + (key,))
        else:
            entry["value_hex"] = value.hex()
            entry["value"] = decode_value(path, key, value)
        entries.append(entry)
    return {"sequence": bucket.sequence, "entries": entries}


def list_images(
    root: str | os.PathLike[str],
    namespaces: list[str] | None = None,
    *,
    ignore_lock: bool = False,
    platform: str | None = None,
) -> list["ImageSummary"]:
    """Images of ``namespaces`` (all when ``None``) with ctr-compatible sizes and platforms.

    Completeness is judged for ``platform`` (default: the host, as ``ctr`` does).
    """
    from ctrconv.containerd.root import ContainerdRoot
    from ctrconv.inventory import list_images as _list
    from ctrconv.oci import platform as plat

    matcher = plat.only(plat.parse_platform(platform)) if platform else plat.default_matcher()
    croot = ContainerdRoot(root)
    with _reading(root, ignore_lock), croot.open_metadata(ignore_lock=ignore_lock) as meta:
        selected = meta.namespaces() if namespaces is None else namespaces
        return _list(meta, croot.content, selected, matcher)


def list_image_names(
    root: str | os.PathLike[str],
    namespaces: list[str] | None = None,
    *,
    ignore_lock: bool = False,
    platform: str | None = None,
) -> list[str]:
    """The names :func:`list_images` would list, in its order, from the image records alone
    (``ls -q``): no document is read. A record that does not read fails it as it fails
    :func:`list_images`; ``platform`` is checked as there and otherwise unused."""
    from ctrconv.containerd.root import ContainerdRoot
    from ctrconv.inventory import image_names
    from ctrconv.oci import platform as plat

    if platform:
        plat.parse_platform(platform)
    croot = ContainerdRoot(root)
    with _reading(root, ignore_lock), croot.open_metadata(ignore_lock=ignore_lock) as meta:
        selected = meta.namespaces() if namespaces is None else namespaces
        return image_names(meta, selected)


def verify_root(
    root: str | os.PathLike[str],
    namespaces: list[str] | None = None,
    *,
    ignore_lock: bool = False,
    jobs: int | None = None,
    progress: Progress | None = None,
    deep: bool = False,
    hash_contents: bool = True,
) -> "Report":
    """Every problem of a containerd root (``namespaces`` None = all), as a report.

    ``deep`` re-applies every unpacked layer into scratch space and compares the trees;
    ``hash_contents=False`` checks records, presence and sizes without reading blob contents.
    """
    from ctrconv.verify.root import verify_root as _verify

    with _reading(root, ignore_lock):
        return _verify(root, namespaces, ignore_lock=ignore_lock, jobs=jobs, progress=progress, deep=deep,
                       hash_contents=hash_contents)


def verify_layout(path: str, *, progress: Progress | None = None) -> "Report":
    """Every problem of an OCI layout / image archive: schemas, digests and sizes of all blobs."""
    from ctrconv.verify.layout import verify_layout as _verify

    return _verify(path, progress=progress)


if TYPE_CHECKING:
    from ctrconv.pipeline.export import ExportReport
    from ctrconv.pipeline.export_report import ConvertOptions, ConvertReport, ExportOptions


def export_images(
    root: str | os.PathLike[str],
    output: str | os.PathLike[str] | BinaryIO,
    options: "ExportOptions | None" = None,
    *,
    progress: Progress | None = None,
    **fields: Any,
) -> ExportReport:
    """Export images of a root's namespace to ``output`` (path, ``-`` or stream).

    ``options`` (:class:`ctrconv.pipeline.export_report.ExportOptions`, its fields named like
    ``ctrconv export``'s options: ``image`` (None: all of the namespace), ``format``
    (``oci-dir``, ``oci-tar``, ``docker-archive``, ``dir``; default from the output name),
    ``platform``, ``containerd_version`` (whose ``ctr images export`` to match; default: the
    line that wrote the root), ``from_snapshots``, ``compression``, ...) say what and how;
    ``fields`` are the same options given by name (``image=["busybox"]``), replacing those of
    ``options``. ``progress`` is told the ``export`` stage (its bytes). The root is read
    through :class:`~ctrconv.sources.containerd_root.ContainerdRootSource`; every blob is
    verified while copied; a failure leaves no output behind.
    """
    import dataclasses
    from pathlib import Path

    from ctrconv.outputs import refuse_output_inside
    from ctrconv.pipeline.export import ExportOptions, export
    from ctrconv.sources.containerd_root import ContainerdRootSource

    options = dataclasses.replace(options or ExportOptions(), **fields)
    namespace, ignore_lock = options.namespace, options.ignore_lock
    out = Path(output) if isinstance(output, os.PathLike) else output
    if isinstance(out, (str, Path)) and str(out) != "-":
        refuse_output_inside(out, root, "export only reads it")
    with _reading(root, ignore_lock), ContainerdRootSource(
            root, namespace, ignore_lock=ignore_lock, namespace_content_only=True, keep_open=True) as source:
        return export(source, out, options, progress)


def convert_images(
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str] | BinaryIO,
    options: "ConvertOptions | None" = None,
    *,
    progress: Progress | None = None,
) -> "ConvertReport":
    """Convert images between file formats: any file input (OCI layout dir or tar, docker-archive,
    skopeo ``dir:``, compressed tars, ``-`` for stdin) to any layout output (``options.format``:
    oci-dir, oci-tar, docker-archive, dir; ``-`` streams a tar).

    The same pipeline as ``export`` (:mod:`ctrconv.pipeline.export`) with the input as the
    source: images and platforms selected and every document validated before a byte is
    written, every blob verified while it streams, the output renamed into place at the end
    (nothing left behind on failure); zstd layers become plain tars for a docker archive. The
    input is only read. ``progress`` is as for :func:`export_images`.
    """
    from pathlib import Path

    from ctrconv.errors import UsageError
    from ctrconv.pipeline.export import export
    from ctrconv.pipeline.export_report import ConvertOptions, ConvertReport
    from ctrconv.sources import open_source

    options = options or ConvertOptions()
    text = os.fspath(input_path)
    if text.startswith("docker://"):
        raise UsageError("convert reads files; to pull from a registry use import -i docker://... then export")
    out = Path(output) if isinstance(output, os.PathLike) else output
    if isinstance(out, (str, Path)) and text != "-" and str(out) != "-" and _same_file(text, out):
        raise UsageError(f"{out} is the input; write the conversion somewhere else")
    with open_source(text) as source:
        report = export(source, out, options.export_options(), progress)
    return ConvertReport(input=text, export=report)


def _same_file(a: "str | os.PathLike[str]", b: "str | os.PathLike[str]") -> bool:
    """Whether two paths name one file or directory (the output would replace the input)."""
    from pathlib import Path

    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def import_images(
    input_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    root: str | os.PathLike[str],
    namespace: str = "default",
    options: "ImportOptions | None" = None,
    *,
    registry: Any = None,
    progress: Progress | None = None,
    **fields: Any,
) -> "ImportReport":
    """Import OCI layout dirs/tars, docker archives, skopeo ``dir:`` layouts or registry images
    into a stopped containerd root.

    ``input_path`` is one input or several (a directory that is not an OCI layout stands for
    every archive in it): all of them are imported in one transaction, one meta.db commit.
    ``options`` (:class:`ctrconv.sinks.containerd_root.ImportOptions`, its fields named like
    ``ctrconv import``'s options) say how; ``fields`` are the same options given by name
    (``snapshotter="native"``), replacing those of ``options`` (an unknown name is a
    ``TypeError``). ``registry``: the :class:`ctrconv.registry.RegistryOptions` for
    ``docker://`` inputs. ``progress`` (a :class:`ctrconv.progress.Progress`) is told the
    stages ``content``, ``unpack`` and ``records``, each with its total; verify, rebuild,
    export, commit and push take the same kind of object.
    """
    import dataclasses
    from functools import partial

    from ctrconv.sinks.containerd_root import ContainerdRootSink, ImportOptions
    from ctrconv.sinks.containerd_root.importer import unpacked_layer_forms
    from ctrconv.sinks.containerd_root.reuse import compressed_layer_lookup
    from ctrconv.sources import open_source
    from ctrconv.sources.multi import open_inputs

    chosen = dataclasses.replace(options or ImportOptions(), **fields)
    paths = [input_path] if isinstance(input_path, (str, os.PathLike)) else list(input_path)
    # docker archives name the destination's compressed layers where it has them, as ctr does,
    # and those an earlier input of this run unpacks, as after separate imports
    reuse = compressed_layer_lookup(root, namespace)

    def opened(path: str) -> Any:
        source = open_source(path, registry=registry, reuse_compressed=reuse)
        if getattr(source, "kind", None) != "registry":  # (no second round of requests)
            reuse.learn(partial(unpacked_layer_forms, source, chosen, namespace))
        return source

    source = open_inputs(paths, opened)
    try:
        return ContainerdRootSink(root, namespace, chosen, progress=progress).write(source)
    finally:
        source.close()


def rebuild_root(
    root: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    options: "RebuildOptions | None" = None,
    *,
    progress: Progress | None = None,
    **fields: Any,
) -> Any:
    """Recover a damaged root in place (backups kept) or into ``output``; see :mod:`ctrconv.recovery`.

    ``options`` (:class:`ctrconv.recovery.options.RebuildOptions`, named like ``ctrconv
    rebuild``'s options; ``fields``: the same by name, replacing those of ``options``):
    snapshots are reused only where their tree matches their layer, unless ``trust_snapshots``;
    ``regenerate_layers``: layer blobs lost to damage whose snapshots survive are written again
    from the snapshots (images whose blobs do not come back byte for byte get new digests);
    into ``output`` blobs are copied (reflinked where possible), or hard-linked with ``link``.
    A rebuild in place holds the root's writers' lock; into ``output`` it reads the root under
    the shared lock and holds the output's writers' lock.
    """
    import dataclasses
    from functools import partial
    from pathlib import Path

    from ctrconv.containerd.rootlock import read_lock, write_lock
    from ctrconv.durability import sync_filesystems
    from ctrconv.recovery import rebuild_root as _rebuild
    from ctrconv.recovery.options import RebuildOptions

    o = dataclasses.replace(options or RebuildOptions(), **fields)
    rebuild = partial(_rebuild, root, output, names=o.name, unpack=o.unpack, progress=progress,
                      trust_snapshots=o.trust_snapshots, link=o.link, regenerate_layers=o.regenerate_layers)
    if not Path(root).is_dir():  # rebuild says what is wrong with it
        return rebuild()
    with ExitStack() as stack:
        # in place it is a writer; into a new root the source is read and the output written
        stack.enter_context(write_lock(root, create=False) if output is None else read_lock(root))
        if output is not None:
            out_lock = stack.enter_context(write_lock(output))
            if out_lock.created:
                stack.callback(_remove_if_empty, Path(output))
        report = rebuild()
        # durable before it is reported: the new root's final rename (or the in-place writes)
        sync_filesystems([output if output is not None else root])
        return report


def export_to_root(
    root: str | os.PathLike[str],
    target_root: str | os.PathLike[str],
    namespace: str = "default",
    images: Sequence[str] | None = None,
    *,
    target_namespace: str | None = None,
    ignore_lock: bool = False,
    from_snapshots: str = "auto",
    compression: str | None = None,
    on_regenerated: Any = None,
    options: "ImportOptions | None" = None,
    progress: Progress | None = None,
    **fields: Any,
) -> Any:
    """Copy images of one root's namespace into another root (or namespace), unpacked.

    The same sink as ``import`` (:class:`ctrconv.sinks.containerd_root.ContainerdRootSink`:
    content, records with GC labels, snapshots), fed directly from the source root through
    :class:`~ctrconv.sources.containerd_root.ContainerdRootSource`: no intermediate archive.
    ``options``/``fields`` are :func:`import_images`'s. Layers whose blobs are gone are written
    again from their snapshots first, as :func:`export_images` does (``from_snapshots``,
    ``compression``); ``on_regenerated(image_reports)`` hears of it.
    """
    import dataclasses
    from pathlib import Path

    from ctrconv.outputs import refuse_output_inside
    from ctrconv.containerd.root import ContainerdRoot
    from ctrconv.outputs import resolve_output
    from ctrconv.pipeline.export import RegeneratedSource, regenerate_for_copy
    from ctrconv.pipeline.resolve import resolve_images
    from ctrconv.sinks.containerd_root import ContainerdRootSink, ImportOptions
    from ctrconv.sources.containerd_root import ContainerdRootSource

    chosen = dataclasses.replace(options or ImportOptions(), **fields)
    refuse_output_inside(target_root, root, "the source root is only read")
    # a device, FIFO or socket is refused, a symlink followed: never replaced by a root
    resolved = resolve_output(target_root)
    resolved.require_streaming("containerd-root")
    target_root = resolved.path or target_root
    source_root = ContainerdRoot(root)
    with _reading(root, ignore_lock):
        source: Any = ContainerdRootSource(source_root, namespace, ignore_lock=ignore_lock, namespace_content_only=True)
    spool = None
    try:
        wanted = {r.name for r in resolve_images(source, source.store, namespace, None if images is None else list(images))}
        with _reading(root, ignore_lock):
            regenerated = regenerate_for_copy(
                source_root, namespace, sorted(wanted), Path(target_root).parent if Path(target_root).parent.is_dir() else None,
                platforms=chosen.platform or (), all_platforms=chosen.all_platforms,
                from_snapshots=from_snapshots, compression=compression, ignore_lock=ignore_lock)
        if regenerated is not None:
            extras, renamed, spool, reports = regenerated
            source = RegeneratedSource(source, extras, renamed)
            wanted = {renamed.get(name, (name, None))[0] for name in wanted}
            if on_regenerated is not None:
                on_regenerated(reports)
        entries = [e for e in source.entries() if e.name in wanted]
        sink = ContainerdRootSink(target_root, target_namespace or namespace, chosen, progress=progress)
        with _reading_and_writing(root, target_root, ignore_lock):
            return sink.write(source, entries)
    finally:
        source.close()
        if spool is not None:
            spool.close()


def commit_container(
    root: str | os.PathLike[str],
    container: str,
    output: str | os.PathLike[str] | BinaryIO,
    *,
    namespace: str = "default",
    ref: str | None = None,
    format: str | None = None,
    compression: str = "gzip",
    message: str | None = None,
    author: str | None = None,
    ignore_lock: bool = False,
    progress: Progress | None = None,
) -> Any:
    """Offline ``nerdctl commit``: the writable layer of ``container`` (its active snapshot)
    as a new top layer on the container's image, named ``ref`` (default
    ``<repository>:commit-<container>``), written to ``output`` in ``format`` (oci-dir,
    oci-tar, docker-archive, dir). Base layers whose blobs are gone come from their snapshots.
    The root is only read (under its shared lock); see :mod:`ctrconv.pipeline.commit`."""
    from pathlib import Path

    from ctrconv.outputs import refuse_output_inside
    from ctrconv.containerd.root import ContainerdRoot
    from ctrconv.pipeline.commit import CommitOptions, commit

    options = CommitOptions(namespace=namespace, container=container, ref=ref, format=format, compression=compression,
                            message=message, author=author, ignore_lock=ignore_lock)
    out = Path(output) if isinstance(output, os.PathLike) else output
    if isinstance(out, (str, Path)) and str(out) != "-":
        refuse_output_inside(out, root, "commit only reads it")
    with _reading(root, ignore_lock):
        return commit(ContainerdRoot(root), out, options, progress)


def _remove_if_empty(path: "os.PathLike[str]") -> None:
    """A new output root left empty by a failed rebuild is not left behind."""
    try:
        os.rmdir(path)
    except OSError:
        pass


def push_images(
    root: str | os.PathLike[str],
    destination: str,
    *,
    namespace: str = "default",
    images: Sequence[str] | None = None,
    platforms: Sequence[str] = (),
    all_platforms: bool = False,
    registry: Any = None,
    ignore_lock: bool = False,
    progress: Progress | None = None,
) -> Any:
    """Push ``images`` (all of ``namespace`` when None) of ``root`` to a registry,
    ``destination`` = ``docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`` (see :mod:`ctrconv.registry.push`):
    blobs first (present ones skipped, mounted when labels name another repository of that
    registry), then manifests and indexes, tags last. ``registry`` is a
    :class:`ctrconv.registry.RegistryOptions`. The root is only read (under its shared lock).
    """
    from ctrconv.registry.push import push_images as _push

    with _reading(root, ignore_lock):
        return _push(str(root), destination, namespace=namespace, images=images, platforms=platforms,
                     all_platforms=all_platforms, options=registry, ignore_lock=ignore_lock, progress=progress)
