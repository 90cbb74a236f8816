"""Content is per namespace: a blob another namespace brought is absent here, as containerd sees it.

Two namespaces share the blob files of one multi-platform index; ``other`` pulled only the
foreign platform (its content records name only that platform's blobs), ``default`` pulled both.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.synthetic_root import SyntheticRoot, host_arch, other_arch


def _descendants(root: SyntheticRoot, digest: str) -> set[str]:
    found = {digest}
    doc = json.loads(root.blobs[digest])
    for child in doc.get("manifests", []):
        found |= _descendants(root, child["digest"])
    if "config" in doc:
        found.add(doc["config"]["digest"])
        found |= {layer["digest"] for layer in doc["layers"]}
    return found


@pytest.fixture
def shared(tmp_path: Path) -> tuple[Path, dict]:
    r = SyntheticRoot(tmp_path / "root")
    host_m = r.image_manifest("multi", host_arch())
    other_m = r.image_manifest("multi", other_arch())
    index = r.index([(host_m, {"architecture": host_arch(), "os": "linux"}),
                     (other_m, {"architecture": other_arch(), "os": "linux"})])
    r.name("default", "docker.io/library/multi:1", index)
    r.name("other", "docker.io/library/multi:1", index)
    r.records["other"] = {index["digest"]} | _descendants(r, other_m["digest"])
    r.write()
    return r.path, {"index": index, "host": host_m, "other": other_m}


def test_ls_judges_the_namespace_and_names_the_platform(shared, cli):
    root, _ = shared
    listed = {(i["namespace"], i["name"]): i for i in cli("ls", "--root", str(root), "-A", "--json").json["images"]}
    assert listed[("default", "docker.io/library/multi:1")]["complete"]
    other = listed[("other", "docker.io/library/multi:1")]
    assert not other["complete"]
    assert other["status"] == "platform-absent"
    assert other["present_platforms"] == [f"linux/{other_arch()}"]
    assert other["judged_platform"] == f"linux/{host_arch()}"
    text = cli("ls", "--root", str(root), "-n", "other").stdout
    assert f"COMPLETE (linux/{host_arch()})" in text and "not pulled" in text
    judged_other = cli("ls", "--root", str(root), "-n", "other", "--platform", f"linux/{other_arch()}", "--json")
    assert judged_other.json["images"][0]["complete"]


def test_export_of_a_platform_the_namespace_lacks_fails_like_ctr(shared, cli, tmp_path):
    root, desc = shared
    for extra in ([], ["--all-platforms"], ["--platform", f"linux/{host_arch()}"]):
        out = tmp_path / "out.tar"
        result = cli("export", "--root", str(root), "-n", "other", "--image", "docker.io/library/multi:1",
                     "-o", str(out), "-q", *extra)
        assert result.code == 1, (extra, result.stdout, result.stderr)
        assert f"linux/{host_arch()}" in result.stderr
        assert not out.exists() and not list(tmp_path.glob(".out.tar*"))
    ok = cli("export", "--root", str(root), "-n", "other", "--image", "docker.io/library/multi:1",
             "-o", str(tmp_path / "arm.tar"), "-q", "--platform", f"linux/{other_arch()}")
    assert ok.code == 0, ok.stderr
    same = cli("export", "--root", str(root), "-n", "default", "--image", "docker.io/library/multi:1",
               "-o", str(tmp_path / "all.tar"), "-q", "--all-platforms")
    assert same.code == 0, same.stderr


def _problems(result) -> list[dict]:
    """verify's problems, leaving out the GC labels a synthetic root does not write."""
    return [p for p in result.json["problems"] if p["kind"] != "missing-gc-label"]


def test_verify_calls_the_unpulled_platform_information(shared, cli):
    root, desc = shared
    result = cli("verify", "--root", str(root), "-A", "-q", "--json")
    assert not _problems(result), result.json["problems"]
    info = [p for p in result.json["info"] if p["kind"] == "absent-platform"]
    assert any(desc["host"]["digest"] in p["message"] and "other" in p["object"] for p in info)


def test_verify_names_a_blob_that_only_another_namespace_owns(tmp_path, cli):
    """A single-manifest image whose layer record is missing in its namespace is broken there,
    even though the file is on disk for another namespace."""
    r = SyntheticRoot(tmp_path / "root")
    manifest = r.image_manifest("app", host_arch())
    r.name("default", "docker.io/library/app:1", manifest)
    r.name("other", "docker.io/library/app:1", manifest)
    doc = json.loads(r.blobs[manifest["digest"]])
    layer = doc["layers"][0]["digest"]
    r.records["other"] = set(r.blobs) - {layer}
    r.write()
    result = cli("verify", "--root", str(r.path), "-A", "-q", "--json")
    assert result.code == 1
    problems = _problems(result)
    assert len(problems) == 1 and layer in problems[0]["message"], problems
    assert problems[0]["kind"] == "missing-record" and "other" in problems[0]["object"]
    listed = {i["namespace"]: i for i in cli("ls", "--root", str(r.path), "-A", "--json").json["images"]}
    assert listed["default"]["complete"] and not listed["other"]["complete"]


# -- reading and presence checks of many blobs (ls of a large root) -------------------------------


def _store(tmp_path: Path) -> "ContentStore":
    from ctrconv.containerd.content import ContentStore

    (tmp_path / "blobs" / "sha256").mkdir(parents=True)
    return ContentStore(tmp_path)


def _put(store, data: bytes, name: str | None = None) -> str:
    import hashlib

    hexd = hashlib.sha256(data).hexdigest()
    (store.path / "blobs" / "sha256" / (name or hexd)).write_bytes(data)
    return f"sha256:{hexd}"


def test_read_exact_returns_only_the_exact_verified_bytes(tmp_path: Path) -> None:
    """The one-read fast path hands over bytes only when size and digest both match; every other
    case is None, and read_small then words the problem through the verifying reader."""
    from ctrconv.digest import Digest
    from ctrconv.errors import DigestMismatchError, MissingContentError, SizeMismatchError

    store = _store(tmp_path)
    good = _put(store, b'{"a": 1}')
    assert store.read_exact(Digest.parse(good), 8) == b'{"a": 1}'
    assert store.read_small(good, 8) == b'{"a": 1}'
    # longer, shorter, another digest, absent, a directory in its place
    assert store.read_exact(Digest.parse(good), 7) is None
    with pytest.raises(SizeMismatchError, match="longer than its size 7"):
        store.read_small(good, 7)
    assert store.read_exact(Digest.parse(good), 9) is None
    with pytest.raises(SizeMismatchError, match="truncated: got 8 of 9"):
        store.read_small(good, 9)
    (store.path / "blobs" / "sha256" / ("0" * 64)).mkdir()
    assert store.read_exact(Digest.parse("sha256:" + "0" * 64), 8) is None
    assert store.read_exact(Digest.parse("sha256:" + "1" * 64), 8) is None
    with pytest.raises(MissingContentError):
        store.read_small("sha256:" + "1" * 64, 8)
    wrong = store.path / "blobs" / "sha256" / ("2" * 64)
    wrong.write_bytes(b"12345678")
    assert store.read_exact(Digest.parse("sha256:" + "2" * 64), 8) is None
    with pytest.raises(DigestMismatchError, match="digest mismatch"):
        store.read_small("sha256:" + "2" * 64, 8)


@pytest.mark.parametrize("list_from", [0, 10**9])
def test_listing_content_agrees_with_one_stat_per_blob(tmp_path: Path, monkeypatch, list_from: int) -> None:
    """Presence by one listing of the blob directory (a namespace of many records) and by a stat
    per blob say the same for every kind of entry: a file, a symlink to one, a dangling symlink,
    a directory, an absent file, a file the namespace has no record of, a malformed digest."""
    from ctrconv.containerd.content import ListingContent, NamespaceContent

    store = _store(tmp_path)
    blobs = store.path / "blobs" / "sha256"
    present = _put(store, b"present")
    unrecorded = _put(store, b"unrecorded")
    target = _put(store, b"target")
    linked = "sha256:" + "a" * 64
    (blobs / ("a" * 64)).symlink_to(blobs / target[7:])
    dangling = "sha256:" + "b" * 64
    (blobs / ("b" * 64)).symlink_to(blobs / "nowhere")
    directory = "sha256:" + "c" * 64
    (blobs / ("c" * 64)).mkdir()
    absent = "sha256:" + "d" * 64
    sha512 = "sha512:" + "e" * 128  # no sha512 directory at all
    recorded = {present, target, linked, dangling, directory, absent, sha512, "sha256:../../etc"}
    monkeypatch.setattr(ListingContent, "LIST_FROM", list_from)
    listing = ListingContent(store, "default", recorded)
    plain = NamespaceContent(store, "default", recorded)
    for digest in [*recorded, unrecorded]:
        assert listing.exists(digest) == plain.exists(digest), digest
        assert listing.exists(digest) == plain.exists(digest), digest  # remembered
    assert [d for d in sorted(recorded | {unrecorded}) if listing.exists(d)] == sorted([present, target, linked])
    assert bool(listing._files) == (list_from == 0)  # the listing was (or was not) used
    if list_from == 0:  # what the listing answers is not remembered per digest string (ls's peak)
        assert not [d for d in listing._present if d.startswith("sha256:")], listing._present


def test_stated_content_answers_from_the_stat(tmp_path: Path) -> None:
    """verify's view (every recorded blob stat-ed once) says what a plain view says of presence
    and size for every kind of entry, without listing or stat-ing anything again."""
    import os

    from ctrconv.containerd.content import NamespaceContent, StatedContent

    store = _store(tmp_path)
    blobs = store.path / "blobs" / "sha256"
    present = _put(store, b"present")
    unrecorded = _put(store, b"unrecorded")
    linked = "sha256:" + "a" * 64
    (blobs / ("a" * 64)).symlink_to(blobs / present[7:])
    directory = "sha256:" + "c" * 64
    (blobs / ("c" * 64)).mkdir()
    absent = "sha256:" + "d" * 64
    recorded = {present, linked, directory, absent, "sha256:../../etc"}
    stated = StatedContent(store, "default", {d: store.size(d) for d in recorded})
    plain = NamespaceContent(store, "default", recorded)
    for digest in [*recorded, unrecorded]:
        assert (stated.exists(digest), stated.size(digest)) == (plain.exists(digest), plain.size(digest)), digest
    assert set(stated.recorded) == recorded and stated._files == {}


def test_list_now_lists_before_any_lookup(tmp_path: Path, monkeypatch) -> None:
    """``list_now`` (called before ``ls`` forks) lists a large namespace's blob directories at
    once, an absent one as unlistable; a small namespace is left to its stats."""
    from ctrconv.containerd.content import ListingContent

    store = _store(tmp_path)
    present = _put(store, b"present")
    small = ListingContent(store, "default", {present})
    small.list_now()
    assert small._files == {}
    monkeypatch.setattr(ListingContent, "LIST_FROM", 1)
    large = ListingContent(store, "default", {present})
    large.list_now()
    assert large._files == {"sha256": frozenset({present[7:]}), "sha384": None, "sha512": None}
    assert large.exists(present) and not large.exists("sha512:" + "e" * 128)


def test_a_listing_handed_over_is_the_listing(tmp_path: Path, monkeypatch) -> None:
    """``blob_listing`` (made in another process) read back gives ``list_now`` the listing it
    makes itself: regular files and symlinks to them, not directories or dangling links, names
    that are not UTF-8 or hold a newline, an empty directory, an absent one."""
    import os

    from ctrconv.containerd.content import ListingContent, blob_listing, read_blob_listing

    store = _store(tmp_path)
    blobs = store.path / "blobs" / "sha256"
    present = _put(store, b"present")
    (blobs / ("a" * 64)).symlink_to(blobs / present[7:])
    (blobs / ("b" * 64)).symlink_to(blobs / "nowhere")
    (blobs / ("c" * 64)).mkdir()
    (blobs / "line\nbreak").write_bytes(b"")
    os.close(os.open(os.fsencode(blobs) + b"/not-utf8-\xff", os.O_CREAT | os.O_WRONLY, 0o644))
    (store.path / "blobs" / "sha384").mkdir()
    monkeypatch.setattr(ListingContent, "LIST_FROM", 1)
    itself = ListingContent(store, "default", {present})
    itself.list_now()
    handed = ListingContent(store, "default", {present})
    handed.list_now(blob_listing(store))
    assert handed._files == itself._files
    assert itself._files["sha256"] == {present[7:], "a" * 64, "line\nbreak", "not-utf8-\udcff"}
    assert itself._files["sha384"] == frozenset() and itself._files["sha512"] is None
    assert read_blob_listing(blob_listing(store)) == itself._files


def _refuses_hostile_digests_opening_nothing(read_exact, good: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """``read_exact`` is None for digest texts ``Digest.parse`` refuses (a path out of the store
    above all), and opens no file for any of them."""
    import os

    opened: list[str] = []
    real_open = os.open
    with monkeypatch.context() as patched:
        patched.setattr(os, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
        for hostile in ("sha256:../../../secret", "sha256:" + good[7:].upper(), good + "\n", "md5:" + "a" * 32,
                        "sha256:" + good[7:-1], "sha256/" + good[7:], ""):
            assert read_exact(hostile, 8) is None, hostile
    assert opened == []


def test_read_exact_of_a_digest_text_refuses_what_does_not_parse(tmp_path: Path, monkeypatch) -> None:
    """``read_exact`` takes a digest text too (``ls`` hands it the descriptors' own): the same
    bytes as for the parsed digest, and None, with no file opened, for a text ``Digest.parse``
    refuses, a path out of the store above all."""
    import os

    from ctrconv.digest import Digest

    store = _store(tmp_path)
    good = _put(store, b'{"a": 1}')
    assert store.read_exact(good, 8) == store.read_exact(Digest.parse(good), 8) == b'{"a": 1}'
    outside = tmp_path / "secret"
    outside.write_bytes(b"12345678")
    _refuses_hostile_digests_opening_nothing(store.read_exact, good, monkeypatch)


def test_walk_is_every_well_named_regular_file_in_order(tmp_path: Path) -> None:
    """``walk`` (and ``blob_digests``, its digests as text) yield the regular files whose names
    are digests of their directory's algorithm, in order, and symlinks to regular files (as
    containerd's ``os.Stat``/``os.Open`` see them: found by a red-team run, verify hashed none
    and ``rebuild -o`` dropped the images using one); not dangling symlinks, symlinks to
    directories, directories, names of another length, upper-case hex, or files of another
    algorithm's directory; an absent algorithm directory is skipped."""
    store = _store(tmp_path)
    blobs = store.path / "blobs"
    present = [_put(store, bytes([i])) for i in range(5)]
    sha256 = blobs / "sha256"
    (sha256 / ("a" * 64)).symlink_to(sha256 / present[0][7:])
    present.append("sha256:" + "a" * 64)
    (sha256 / ("9" * 64)).symlink_to(tmp_path / "absent")
    (sha256 / ("8" * 64)).symlink_to(tmp_path)
    (sha256 / ("b" * 64)).mkdir()
    (sha256 / ("C" * 64)).write_bytes(b"")
    (sha256 / ("d" * 63)).write_bytes(b"")
    (sha256 / ("e" * 64 + "\n")).write_bytes(b"")
    (sha256 / ("f" * 128)).write_bytes(b"")
    (blobs / "sha512").mkdir()
    (blobs / "sha512" / ("1" * 128)).write_bytes(b"")
    (blobs / "sha512" / ("2" * 64)).write_bytes(b"")
    walked = list(store.walk())
    expected = sorted(present) + ["sha512:" + "1" * 128]
    assert [str(d) for d, _ in walked] == expected == store.blob_digests()
    assert [p for _, p in walked] == [store.blob_path(d) for d in expected]


def test_a_listings_reads_are_the_stores_through_its_open_blob_directory(tmp_path: Path, monkeypatch) -> None:
    """``ListingContent.read_exact`` (``ls``'s document reads, each file opened relative to its
    blob directory held open) answers as the store's does for every case: the exact bytes,
    another length, another digest, absent, a directory, a digest text that does not parse (no
    file opened then); ``close`` closes the directory, and a later read opens it again."""
    import os

    from ctrconv.containerd.content import ListingContent
    from ctrconv.digest import Digest

    store = _store(tmp_path)
    good = _put(store, b'{"a": 1}')
    (store.path / "blobs" / "sha256" / ("0" * 64)).mkdir()
    (store.path / "blobs" / "sha256" / ("2" * 64)).write_bytes(b"12345678")
    (tmp_path / "secret").write_bytes(b"12345678")
    listing = ListingContent(store, "default", {good})
    asked = [(good, 8), (good, 7), (good, 9), (Digest.parse(good), 8), ("sha256:" + "0" * 64, 8),
             ("sha256:" + "1" * 64, 8), ("sha256:" + "2" * 64, 8)]
    before = set(os.listdir("/proc/self/fd"))
    for digest, size in asked * 2:
        assert listing.read_exact(digest, size) == store.read_exact(digest, size), (digest, size)
    assert listing.read_exact(good, 8) == b'{"a": 1}'
    assert len(set(os.listdir("/proc/self/fd")) - before) == 1  # the sha256 directory, once
    _refuses_hostile_digests_opening_nothing(listing.read_exact, good, monkeypatch)
    listing.close()
    assert set(os.listdir("/proc/self/fd")) == before
    assert listing.read_exact(good, 8) == b'{"a": 1}'  # opened again
    with listing:
        pass
    assert set(os.listdir("/proc/self/fd")) == before
