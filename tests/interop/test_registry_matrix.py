"""Registry pull and push over a matrix: images x containerd lines (1.6, 1.7, 2.x).

Images: every archive of the fixture set (Docker schema 2, zstd, uncompressed, OCI, a
multi-platform index, the sparse index), seeded by ``skopeo copy --all``, and shapes built
byte for byte (``support.registry_images``): an index with a buildx attestation manifest
(``unknown/unknown``), an empty layer listed twice, 20 layers, a Docker manifest list, an OCI
artifact. One registry for the module.

For each containerd line, one pass (module fixture ``line_run``): that line's daemon pulls every
image in turn with ``ctr images pull --plain-http`` into one root; ``ctrconv import -i
docker://… --containerd-version L`` pulls the same images in the same order into another
root; then that line's daemon is started on ctrconv's root: ``ctr images check`` and the runs.
The tests then judge each image of that pass: records equal to ctr's (timestamps aside: the
records compared carry none), the same ``images check`` rows, the run. The push side pushes
each image from the root ctr pulled into (``export --to docker://``): the registry serves the
manifest digest the root holds, skopeo copies it back (digests verified), and a second push
sends only ``HEAD`` requests.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from support.daemon import PrivateContainerd
from support.registry import PrivateRegistry
from support.registry_checks import ARCHIVE_REF, needs_registry, raw_digest, records, seed, skopeo
from support.registry_images import BUILDERS, BaseImage, RawPusher

pytestmark = [needs_registry, pytest.mark.interop]

LINES = ("1.6", "1.7", "2.x")
#: every image of the matrix, in the order each pass pulls them (shared blobs: order matters)
KEYS = (*ARCHIVE_REF, *BUILDERS, "all-platforms", "attestations-all", "arm64", "by-digest", "tag-and-digest")
#: images pulled with other flags (the same for ctr and ctrconv, and for the push): key ->
#: (image it is, flags); each under a tag of its own
PULLED_AS = {"all-platforms": ("docker-list", ("--all-platforms",)), "arm64": ("bbx-multi", ("--platform", "linux/arm64")),
             "attestations-all": ("attestations", ("--all-platforms",))}
#: images that are not images (no root filesystem)
ARTIFACTS = {"artifact"}
#: images this host does not run
NOT_RUNNABLE = ARTIFACTS | {"arm64", "no-layers"}
#: (image, line) whose ``ctr images pull`` records the image and then fails to unpack
#: something: an artifact, an attestation manifest's in-toto layer (``--all-platforms``);
#: ctrconv records the same and exits 0 (docs/registry.md)
CTR_FAILS = {("artifact", "1.6"), ("attestations-all", "1.6")}
GC_CONTENT = "containerd.io/gc.ref.content."


@dataclass
class Outcome:
    """Exit code and output of one command of a pass."""

    code: int
    out: str = ""
    err: str = ""


@dataclass
class LinePass:
    """What one containerd line's pass found (see the module docstring)."""

    line: str
    bin_dir: str | None
    ctr_root: Path
    mine: Path
    refs: dict[str, str]
    ctr_pull: dict[str, Outcome] = field(default_factory=dict)
    ctr_check: dict[str, tuple[str, bool]] = field(default_factory=dict)
    imports: dict[str, Outcome] = field(default_factory=dict)
    mine_check: dict[str, tuple[str, bool]] = field(default_factory=dict)
    runs: dict[str, Outcome] = field(default_factory=dict)
    start_error: str | None = None


def ctrconv(*args: str) -> Outcome:
    """``ctrconv ARGS`` in this process (no interpreter start per call)."""
    from ctrconv.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            code = int(exc.code or 0)
    return Outcome(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRegistry]:
    with PrivateRegistry(workdir=tmp_path_factory.mktemp("registry"), access_log=True) as reg:
        yield reg


@pytest.fixture(scope="module")
def refs(registry: PrivateRegistry, fixture_set: Any) -> dict[str, str]:
    """Every image of the matrix in the registry: key -> ``HOST/REPO:TAG``."""
    found: dict[str, str] = {}
    pusher = RawPusher(registry.host)
    for key, ref_name in ARCHIVE_REF.items():
        if ref_name is None:  # a docker-archive: skopeo makes it a Docker schema 2 image (gzip layers)
            seed(registry.host, fixture_set, key, f"matrix/{key}:v1")
        else:
            pusher.oci_archive(f"matrix/{key}", "v1", fixture_set.inputs / f"{key}.tar", ref_name)
        found[key] = f"{registry.host}/matrix/{key}:v1"
    base = BaseImage.from_oci_archive(fixture_set.inputs / "bbx-oci.tar", "oci")
    for key, build in BUILDERS.items():
        build(pusher, f"matrix/{key}", "v1", base)
        found[key] = f"{registry.host}/matrix/{key}:v1"
    for key, (same, _flags) in PULLED_AS.items():  # another tag of the same image
        skopeo("copy", "--all", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false",
               f"docker://{found[same]}", f"docker://{registry.host}/matrix/{same}:{key}")
        found[key] = f"{registry.host}/matrix/{same}:{key}"
    # the attestation index in a repository of its own: pulled late into ctr's root
    skopeo("copy", "--all", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false",
           f"docker://{found['attestations']}", f"docker://{registry.host}/matrix/late:v1")
    found["by-digest"] = f"{registry.host}/matrix/bbx-oci@{raw_digest('docker://' + found['bbx-oci'])}"
    found["tag-and-digest"] = f"{found['bbx-multi']}@{raw_digest('docker://' + found['bbx-multi'])}"
    return found


def _bin_dir(line: str) -> str | None:
    if line == "1.6":
        from support.daemon import containerd_version

        if not containerd_version(None).startswith("1.6."):
            pytest.skip(f"system containerd is {containerd_version(None)}, not 1.6")
        return None
    from support.versions import bin_dir_for

    return str(bin_dir_for(line))


def _check_rows(daemon: PrivateContainerd) -> dict[str, tuple[str, bool]]:
    return {row.ref: (row.status, row.unpacked) for row in daemon.images_check()}


def _run_images(run: LinePass, workdir: Path) -> None:
    """Start the line's daemon on ctrconv's root: ``images check``, then each runnable image."""
    with PrivateContainerd(run.bin_dir, root=run.mine, workdir=workdir) as daemon:
        run.mine_check = _check_rows(daemon)
        for n, key in enumerate(KEYS):
            if key in NOT_RUNNABLE or run.imports[key].code != 0:
                continue
            cmd = ["cat", "/layers/16"] if key == "many-layers" else ["true"]
            res = daemon.ctr("run", "--rm", run.refs[key], f"matrix-{n}", "/bin/busybox", *cmd, check=False, timeout=120)
            run.runs[key] = Outcome(res.returncode, res.stdout, res.stderr)


@pytest.fixture(scope="module", params=LINES, ids=[f"containerd-{line}" for line in LINES])
def line_run(request: pytest.FixtureRequest, refs: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> LinePass:
    line = request.param
    workdir = tmp_path_factory.mktemp(f"line-{line}")
    run = LinePass(line, _bin_dir(line), workdir / "ctr-root", workdir / "mine", refs)
    with PrivateContainerd(run.bin_dir, root=run.ctr_root, workdir=workdir) as daemon:
        for key in KEYS:
            flags = PULLED_AS.get(key, ("", ()))[1]
            res = daemon.ctr("images", "pull", "--plain-http", *flags, refs[key], check=False, timeout=300)
            run.ctr_pull[key] = Outcome(res.returncode, res.stdout, res.stderr)
        run.ctr_check = _check_rows(daemon)
    for key in KEYS:
        run.imports[key] = ctrconv("import", "--root", str(run.mine), "-i", f"docker://{refs[key]}", "--plain-http",
                                   "--containerd-version", line, "--no-backup", "--json", *PULLED_AS.get(key, ("", ()))[1])
    _run_images(run, workdir)
    return run


def skipped_layers(ctr_blobs: dict[str, Any], my_blobs: dict[str, Any]) -> set[str]:
    """Layers in ctrconv's root that ctr's root lacks: containerd 2.x's pull fetches no layer
    whose snapshot already exists (its ``images check`` then says incomplete); ctrconv
    fetches them (docs/registry.md). Each must be a layer of a manifest both roots hold."""
    layers = {v for _size, labels in ctr_blobs.values() for k, v in labels.items() if k.startswith(GC_CONTENT + "l.")}
    return {d for d in my_blobs if d not in ctr_blobs and d in layers}


def reachable(blobs: dict[str, tuple[int, dict[str, str]]], target: str) -> set[str]:
    """Digests the GC keeps for ``target``: its ``gc.ref.content.*`` labels, transitively."""
    seen, todo = set(), [target]
    while todo:
        digest = todo.pop()
        if digest in seen or digest not in blobs:
            continue
        seen.add(digest)
        todo.extend(v for k, v in blobs[digest][1].items() if k.startswith(GC_CONTENT))
    return seen


# -- pull -------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS)
def test_pull_records_equal_ctr_pull(line_run: LinePass, key: str) -> None:
    ctr, mine = line_run.ctr_pull[key], line_run.imports[key]
    assert (ctr.code == 0) is ((key, line_run.line) not in CTR_FAILS), f"ctr images pull: {ctr.err}"
    assert mine.code == 0, mine.err
    name = line_run.refs[key]
    ctr_images, ctr_blobs = records(line_run.ctr_root)
    my_images, my_blobs = records(line_run.mine)
    assert my_images[name] == ctr_images[name]
    keep = reachable(ctr_blobs, ctr_images[name][0].digest)
    extra = skipped_layers(ctr_blobs, my_blobs) if line_run.line == "2.x" else set()
    assert reachable(my_blobs, my_images[name][0].digest) == keep | (extra & reachable(my_blobs, my_images[name][0].digest))
    assert {d: my_blobs.get(d) for d in keep} == {d: ctr_blobs.get(d) for d in keep}


def test_an_artifact_is_recorded_unpacked_none(line_run: LinePass) -> None:
    """An OCI artifact (its own config media type): nothing to unpack, reported as such."""
    for key in ARTIFACTS:
        image = json.loads(line_run.imports[key].out)["images"][0]
        assert image["unpacked"] is None and image["snapshots_created"] == 0, image


def test_whole_roots_equal(line_run: LinePass) -> None:
    """Every image pulled in turn into one root: the same records as ctr's root, nothing more
    (on 2.x, apart from the layers it skips)."""
    ctr_images, ctr_blobs = records(line_run.ctr_root)
    my_images, my_blobs = records(line_run.mine)
    extra = skipped_layers(ctr_blobs, my_blobs) if line_run.line == "2.x" else set()
    assert my_images == ctr_images
    assert {d: r for d, r in my_blobs.items() if d not in extra} == ctr_blobs


@pytest.mark.parametrize("key", KEYS)
def test_containerd_checks_and_runs_the_pulled_image(line_run: LinePass, key: str) -> None:
    name = line_run.refs[key]
    assert line_run.imports[key].code == 0, line_run.imports[key].err
    status, unpacked = line_run.mine_check[name]
    if line_run.line == "2.x" and line_run.ctr_check[name][0].startswith("incomplete"):
        assert (status.startswith("complete"), unpacked) == (True, line_run.ctr_check[name][1])  # see skipped_layers
    else:
        assert line_run.mine_check[name] == line_run.ctr_check[name]
    if key not in NOT_RUNNABLE or key in ARTIFACTS:
        assert status.startswith("complete")
    if key in NOT_RUNNABLE:
        return
    assert unpacked
    run = line_run.runs[key]
    assert run.code == 0, run.err
    if key == "many-layers":
        assert run.out.strip() == "layer 16"


# -- push -------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS)
def test_push_from_a_ctr_pulled_root(line_run: LinePass, registry: PrivateRegistry, key: str, tmp_path: Path) -> None:
    """Pushed from the root ctr pulled into: the registry serves the digest the root holds (the
    whole image, or the host's manifest of an index whose other platforms ctr did not
    fetch), skopeo copies it back, and a second push only asks ``HEAD``."""
    name = line_run.refs[key]
    dest = f"{registry.host}/back-{line_run.line}/{key}"
    push = ("export", "--root", str(line_run.ctr_root), "--image", name, "--to", f"docker://{dest}", "--plain-http",
            "--json", "--retry-delay", "0", *PULLED_AS.get(key, ("", ()))[1])
    first = ctrconv(*push)
    if line_run.ctr_check[name][0].startswith("incomplete"):  # 2.x skipped layers: nothing to push them from
        lines = [line for line in first.err.splitlines() if line.strip()]
        assert first.code == 1 and len(lines) == 1 and lines[0].startswith("ctrconv: error: "), first.err
        assert "its layer blobs are not in the root" in lines[0] and "cannot write them again" in lines[0], lines[0]
        return
    assert first.code == 0, first.err
    pushed = json.loads(first.out)["images"][0]
    expected = records(line_run.ctr_root)[0][name][0].digest
    assert pushed["digest"] == expected or pushed.get("index") == expected, pushed
    if key == "all-platforms":  # every platform is in the root: the index goes whole
        assert pushed["digest"] == expected
    # a name without a tag, or with a digest (tag@digest too), is pushed by digest only (docs)
    at = f"{dest}@{pushed['digest']}" if "@" in name else f"{dest}:{name.rsplit(':', 1)[1]}"
    assert raw_digest(f"docker://{at}") == pushed["digest"]
    skopeo("copy", "--all", "--src-tls-verify=false", f"docker://{at}", f"oci:{tmp_path / 'back'}:x")
    before = len(registry.access_lines())
    again = ctrconv(*push)
    assert again.code == 0, again.err
    report = json.loads(again.out)
    assert report["blobs_uploaded"] == 0 and report["blobs_present"] == first_blobs(first), report
    methods = {line.split()[0] for line in registry.access_lines()[before:]}
    assert methods == {"HEAD"}, registry.access_lines()[before:]


def first_blobs(first: Outcome) -> int:
    report = json.loads(first.out)
    return int(report["blobs_uploaded"]) + int(report["blobs_present"]) + int(report.get("blobs_mounted", 0))


@pytest.mark.parametrize("key", [k for k in KEYS if k not in PULLED_AS])
def test_verify_reads_each_image_from_the_registry(refs: dict[str, str], key: str) -> None:
    """``verify -i docker://``: every platform, every blob hashed, every document validated."""
    checked = ctrconv("verify", "-i", f"docker://{refs[key]}")
    assert checked.code == 0 and "clean" in checked.out, checked.out + checked.err


def test_pull_into_the_root_ctr_pulled_into(line_run: LinePass, refs: dict[str, str], tmp_path: Path) -> None:
    """A pull into a root that line's containerd wrote (its version detected, no flag), of an
    image whose blobs that root already holds from another repository: the records a ctr pull
    into a copy of the same root gives, and the line's daemon runs it."""
    import subprocess

    ref = refs["bbx-oci"].replace("/matrix/bbx-oci:v1", "/matrix/late:v1")
    by_ctr, by_me = tmp_path / "by-ctr", tmp_path / "by-me"
    for dest in (by_ctr, by_me):
        subprocess.run(["cp", "-a", str(line_run.ctr_root), str(dest)], check=True)
    with PrivateContainerd(line_run.bin_dir, root=by_ctr, workdir=tmp_path) as daemon:
        daemon.ctr("images", "pull", "--plain-http", ref, timeout=300)
        ctr_row = _check_rows(daemon)[ref]
    mine = ctrconv("import", "--root", str(by_me), "-i", f"docker://{ref}", "--plain-http", "--no-backup", "-q")
    assert mine.code == 0, mine.err
    ctr_images, ctr_blobs = records(by_ctr)
    my_images, my_blobs = records(by_me)
    assert my_images == ctr_images and my_blobs == ctr_blobs
    with PrivateContainerd(line_run.bin_dir, root=by_me, workdir=tmp_path) as daemon:
        assert _check_rows(daemon)[ref] == ctr_row and ctr_row[0].startswith("complete") and ctr_row[1]
        run = daemon.ctr("run", "--rm", ref, "matrix-late", "/bin/busybox", "true", check=False, timeout=120)
        assert run.returncode == 0, run.stderr


def snapshot_records(root: Path) -> dict[str, tuple[Any, dict[str, str]]]:
    """The namespace's overlayfs snapshot records: chain ID -> (parent, labels)."""
    from ctrconv.bolt.reader import read_tree
    from ctrconv.containerd import schema as K
    from ctrconv.sinks.containerd_root import records as R

    tree = read_tree(root / K.METADATA_PLUGIN_DIR / K.META_DB)
    snaps = tree.bucket(K.V1, b"default", K.SNAPSHOTS, b"overlayfs")
    assert snaps is not None
    return {k.decode(): (b.get(K.PARENT), R.read_map(b.bucket(K.LABELS))) for k, b in snaps.buckets()}


def test_snapshot_records_equal_ctr_pull(line_run: LinePass) -> None:
    """The same chains, parents and labels as ctr's pulls made; apart from 2.x's
    ``containerd.io/snapshot.ref``, which ctrconv does not write (docs/containerd-versions.md)."""
    theirs = snapshot_records(line_run.ctr_root)
    if line_run.line == "2.x":
        assert all(labels == {"containerd.io/snapshot.ref": chain} for chain, (_p, labels) in theirs.items())
        theirs = {chain: (parent, {}) for chain, (parent, _labels) in theirs.items()}
    assert snapshot_records(line_run.mine) == theirs


def test_the_line_pulls_and_runs_what_ctrconv_pushed(line_run: LinePass, registry: PrivateRegistry, tmp_path: Path) -> None:
    """Every image ctrconv can push from the root ctr pulled into, pushed to a repository of
    its own (blobs mounted from the repositories the root's labels name): that line's ``ctr
    images pull`` takes each, ``images check`` says complete, and the runnable ones run."""
    pushed: dict[str, str] = {}
    for key in KEYS:
        name = line_run.refs[key]
        if line_run.ctr_check[name][0].startswith("incomplete"):
            continue  # 2.x skipped its layers: not pushable (test_push_from_a_ctr_pulled_root)
        dest = f"{registry.host}/again-{line_run.line}/{key}"
        result = ctrconv("export", "--root", str(line_run.ctr_root), "--image", name, "--to", f"docker://{dest}",
                         "--plain-http", "--json", "--retry-delay", "0", *PULLED_AS.get(key, ("", ()))[1])
        assert result.code == 0, result.err
        digest = json.loads(result.out)["images"][0]["digest"]
        pushed[key] = f"{dest}@{digest}"
    with PrivateContainerd(line_run.bin_dir, root=tmp_path / "node", workdir=tmp_path) as daemon:
        for n, (key, ref) in enumerate(pushed.items()):
            flags = PULLED_AS.get(key, ("", ()))[1]
            pull = daemon.ctr("images", "pull", "--plain-http", *flags, ref, check=False, timeout=300)
            assert pull.returncode == 0 or (key, line_run.line) in CTR_FAILS, (key, pull.stderr)
            if key in NOT_RUNNABLE:
                continue
            assert _check_rows(daemon)[ref][0].startswith("complete"), key
            run = daemon.ctr("run", "--rm", ref, f"again-{n}", "/bin/busybox", "true", check=False, timeout=120)
            assert run.returncode == 0, (key, run.stderr)
