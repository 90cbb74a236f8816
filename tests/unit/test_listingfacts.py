"""The listing facts file (:mod:`ctrconv.listingfacts`): where it lives, what makes it ignored,
when it is written, and that a failure to write it is no error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctrconv import listingfacts
from ctrconv.listingfacts import ListingFacts, cache_directory
from support.sharing import both_take_part

M_KEY = ("sha256:" + "a" * 64, "application/vnd.oci.image.manifest.v1+json", 500)
C_KEY = ("sha256:" + "b" * 64, "application/vnd.oci.image.config.v1+json", 300)
M_FACTS = ("application/vnd.oci.image.config.v1+json", C_KEY[0], 300, False, [("sha256:" + "c" * 64, 1000)])


def _learnt(store: Path, cache: Path) -> ListingFacts:
    facts = ListingFacts.load(store, cache)
    facts.remember_manifest(M_KEY, M_FACTS)
    facts.remember_config(C_KEY, ("linux", "amd64"))
    assert facts.save()
    return facts


def test_cache_directory_from_the_environment(tmp_path: Path) -> None:
    assert cache_directory({"CTRCONV_CACHE_DIR": str(tmp_path)}) == tmp_path
    assert cache_directory({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "ctrconv"
    assert cache_directory({"HOME": "/nonexistent-home"}).name == "ctrconv"
    assert cache_directory({"CTRCONV_NO_CACHE": "1", "CTRCONV_CACHE_DIR": str(tmp_path)}) is None
    assert cache_directory({"CTRCONV_NO_CACHE": "0", "CTRCONV_CACHE_DIR": str(tmp_path)}) == tmp_path


def test_what_was_learnt_is_known_to_the_next_run_of_the_same_store(tmp_path: Path) -> None:
    store, other = tmp_path / "root" / "content", tmp_path / "other" / "content"
    _learnt(store, tmp_path / "cache")
    files = list((tmp_path / "cache" / "ls").iterdir())
    assert len(files) == 1 and files[0].suffix == ".json"
    again = ListingFacts.load(store, tmp_path / "cache")
    assert again.manifest(M_KEY) == M_FACTS
    assert again.config(C_KEY) == ("linux", "amd64")
    assert again.manifest((M_KEY[0], M_KEY[1], 501)) is None  # another size is another document
    assert ListingFacts.load(other, tmp_path / "cache").manifest(M_KEY) is None
    # nothing new, nothing dropped: no write
    assert not again.save()


def test_facts_of_other_rules_or_a_damaged_file_are_ignored_and_replaced(tmp_path: Path, monkeypatch) -> None:
    store, cache = tmp_path / "content", tmp_path / "cache"
    _learnt(store, cache)
    monkeypatch.setattr(listingfacts, "rules_fingerprint", lambda: "other rules")
    assert ListingFacts.load(store, cache).manifest(M_KEY) is None
    monkeypatch.undo()
    path = next((cache / "ls").iterdir())
    written = path.read_bytes()
    body, _, trailer = written.rpartition(b"\n")
    flipped = body.replace(b'"amd64"', b'"arm64"')  # still JSON, still these rules: not what was written
    assert flipped != body and json.loads(flipped)["rules"] == json.loads(body)["rules"]
    for garbage in (b"", b"{not json", b"[]", json.dumps({"format": 1}).encode(), b"\xff\xfe", body,
                    written[:-1], flipped + b"\n" + trailer):
        path.write_bytes(garbage)
        facts = ListingFacts.load(store, cache)
        assert facts.manifest(M_KEY) is None
    facts.remember_config(C_KEY, ("linux", "arm64"))
    assert facts.save()
    assert ListingFacts.load(store, cache).config(C_KEY) == ("linux", "arm64")


def test_unused_facts_drop_out_unless_kept(tmp_path: Path) -> None:
    store, cache = tmp_path / "content", tmp_path / "cache"
    _learnt(store, cache)
    partial = ListingFacts.load(store, cache)
    assert partial.config(C_KEY) is not None  # only the config is used this time
    assert not partial.save(keep_unused=True)  # a partial listing keeps the rest: nothing changed
    whole = ListingFacts.load(store, cache)
    assert whole.config(C_KEY) is not None
    assert whole.save()  # the manifest no image used is dropped
    after = ListingFacts.load(store, cache)
    assert after.manifest(M_KEY) is None and after.config(C_KEY) == ("linux", "amd64")


def test_a_forked_processs_facts_are_absorbed(tmp_path: Path) -> None:
    store, cache = tmp_path / "content", tmp_path / "cache"
    parent = ListingFacts.load(store, cache)
    child = ListingFacts.load(store, cache)
    child.remember_manifest(M_KEY, M_FACTS)
    parent.remember_config(C_KEY, ("linux", "amd64"))
    parent.absorb(child.take_fresh())
    used, learnt = child.take_fresh()  # taken once
    assert not any(used.values()) and all(count == 0 and members == "" for count, members in learnt.values())
    parent.absorb(parent.take_fresh())  # its own share, taken and given back, is kept
    assert parent.learnt == 2 and parent.save()
    assert ListingFacts.load(store, cache).manifest(M_KEY) == M_FACTS


@pytest.mark.parametrize("how", ["disabled", "unwritable"])
def test_no_cache_is_no_error(tmp_path: Path, monkeypatch, how: str) -> None:
    if how == "disabled":
        monkeypatch.setenv("CTRCONV_NO_CACHE", "1")
        facts = ListingFacts.load(tmp_path / "content")
    else:
        blocker = tmp_path / "cache"
        blocker.write_text("a file where the directory should be")
        facts = ListingFacts.load(tmp_path / "content", blocker)
    facts.remember_config(C_KEY, ("linux", "amd64"))
    assert not facts.save()
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if how == "disabled" else ["cache"])


def test_files_no_listing_used_for_a_month_are_removed_at_the_next_save(tmp_path: Path) -> None:
    """The cache does not grow with every store ever listed: a save removes the facts files
    unused for 30 days (another store's; its own never) and temporaries a crash left, and
    keeps recent files and anything it did not write; a listing that uses an old file marks
    it used."""
    import os
    import time

    cache = tmp_path / "cache"
    store = tmp_path / "content"
    facts = _learnt(store, cache)  # writes this store's file
    directory = facts.path.parent
    month, now = listingfacts.UNUSED_FOR, time.time()
    old_own, old_other, recent_other = facts.path, directory / ("a" * 32 + ".json"), directory / ("b" * 32 + ".json")
    old_temp, fresh_temp, foreign = directory / ".ls-crashed", directory / ".ls-writing", directory / "notes.txt"
    for path in (old_other, recent_other, old_temp, fresh_temp, foreign):
        path.write_text("{}")
    for path, age in ((old_own, month + 60), (old_other, month + 60), (recent_other, month - 3600),
                      (old_temp, 2 * listingfacts.ABANDONED_AFTER), (foreign, 10 * month)):
        os.utime(path, (now - age, now - age))
    # loading the own old file marks it used; saving then removes only the unused old ones
    loaded = ListingFacts.load(store, cache)
    assert loaded.config(C_KEY) == ("linux", "amd64")
    assert now - old_own.stat().st_mtime < 60
    loaded.remember_config(("sha256:" + "d" * 64, C_KEY[1], 1), ("linux", "arm64"))
    assert loaded.save()
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [old_own.name, recent_other.name, fresh_temp.name, foreign.name])
    # two months on, only the file kept and what it did not write are left
    assert sorted(listingfacts.prune(directory, keep=old_own, now=now + 2 * month)) == sorted([recent_other.name, fresh_temp.name])
    assert listingfacts.prune(tmp_path / "absent") == []


# -- ls with facts: the same listing, less work, nothing written into the root ------------------


def _zoo(path: Path):
    from support.synthetic_root import standard_root

    r = standard_root(path)  # a single manifest, a whole index, an index missing a platform
    for i in range(6):
        r.name("default", f"example.com/more:{i}", r.image_manifest(f"more{i}", "amd64"))
    r.name("default", "example.com/more:3-again", r.images["default"]["example.com/more:3"][0])  # a second tag
    r.name("other", "example.com/elsewhere:1", r.image_manifest("elsewhere", "amd64"))
    return r, r.write()


def _listing(root: Path) -> list[dict]:
    from ctrconv import api

    return [i.to_json() for i in api.list_images(root, None)]


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("split", [False, True])
def test_a_listing_with_facts_is_the_listing_without_them(tmp_path: Path, monkeypatch, split: bool) -> None:
    """Cold (learning), warm (from the facts) and without a cache, the listing is the same, also
    after a config blob is damaged on disk (the facts of a document whose bytes changed are not
    used: the walks word the damage); a warm listing parses no document of a whole manifest
    image; what the forked half learnt is kept too; the root is never written."""
    from ctrconv import forked, inventory
    from support.document_reads import count_document_reads

    monkeypatch.setattr(inventory, "FACTS_FROM", 1)
    if split:
        monkeypatch.setattr(inventory, "SPLIT_FROM", 2)
        monkeypatch.setattr(inventory, "can_split", lambda: True)
        monkeypatch.setattr(inventory, "_run_length", lambda records: 1)
        monkeypatch.setattr(inventory, "map_balanced",  # both processes learn some
                            lambda fn, runs: forked.map_balanced(both_take_part(fn, tmp_path / "m"), runs))
    r, root = _zoo(tmp_path / "root")
    monkeypatch.setenv("CTRCONV_CACHE_DIR", str(tmp_path / "facts"))
    tree = _tree(root)
    monkeypatch.setenv("CTRCONV_NO_CACHE", "1")
    plain = _listing(root)
    monkeypatch.delenv("CTRCONV_NO_CACHE")
    parsed: list[str] = []
    real_validate = inventory.validate_json

    def counting(media_type: str, data: bytes, *, digest: str | None = None) -> dict:
        parsed.append(media_type)
        return real_validate(media_type, data, digest=digest)

    monkeypatch.setattr(inventory, "validate_json", counting)
    assert _listing(root) == plain  # cold: learns
    facts = json.loads(next((tmp_path / "facts" / "ls").iterdir()).read_bytes().rpartition(b"\n")[0])
    whole = [i for i in plain if i["status"] == "complete" and "manifest" in i["media_type"]]
    assert len(facts["configs"]) == len(whole) - 1 == 8  # both processes' share (a second tag shares one)
    indexes = {i["digest"]: len(i["present_platforms"]) for i in plain if "index" in i["media_type"]}
    assert len(facts["manifests"]) == 8 + sum(indexes.values()) > 8  # and the present children of indexes'
    assert len(facts["indexes"]) == len(indexes) >= 2

    parsed.clear()
    with monkeypatch.context() as counting:
        reads = count_document_reads(counting)
        assert _listing(root) == plain  # warm
    if not split:
        assert parsed == []  # no whole manifest image's document parsed again
        # each document of a whole image read (and its digest checked) once, the shared tag's too
        remembered = [key.split()[0] for kind in ("manifests", "configs", "indexes") for key in facts[kind]]
        assert sorted(d for d in reads.elements() if d in remembered) == sorted(remembered), reads
    assert _tree(root) == tree

    # a config of a whole image damaged on disk: same bytes length, other content
    manifest = json.loads(r.blobs[r.images["default"]["example.com/more:3"][0]["digest"]])
    config_file = root / "io.containerd.content.v1.content" / "blobs" / "sha256" / manifest["config"]["digest"][7:]
    config_file.write_bytes(bytes(reversed(config_file.read_bytes())))
    monkeypatch.setenv("CTRCONV_NO_CACHE", "1")
    damaged = _listing(root)
    monkeypatch.delenv("CTRCONV_NO_CACHE")
    assert _listing(root) == damaged != plain
    status = {i["name"]: (i["status"], i["problem"]) for i in damaged}["example.com/more:3"]
    assert status[0] == "error" and "digest mismatch" in status[1]


#: entries of the wrong shape for each kind, and for parts of a real entry (``path`` into it)
_BAD_VALUES = [1, "x", True, {}, [], [None], [1, 2, 3, 4, 5], ["a", "b", "c"], [[], {}], [{"a": 1}], {"0": 1}]
_BAD_PARTS = {
    "manifests": [((0,), 7), ((1,), "sha256:../../x"), ((1,), "sha256:" + "A" * 64), ((2,), "300"), ((2,), -1),
                  ((2,), 2**60), ((2,), 300.0), ((3,), 0), ((4,), None), ((4,), [["sha256:" + "c" * 64, 1]]),
                  ((4,), "sha256:" + "c" * 64), ((4,), "sha256:" + "c" * 64 + " 1x"), ((4,), "sha256:../x 1"),
                  ((4,), "x 1"), ((4,), "sha256:" + "c" * 64 + " -1"), ((4,), "sha256:" + "c" * 64 + "  1"),
                  ((4,), "sha256:" + "c" * 64 + " \u0661"), ((4,), "sha256:" + "c" * 64 + " " + str(2**60)),
                  ((4,), " "), ((4,), 5)],
    "configs": [((0,), 5), ((1,), ["amd64"]), ((0,), {"os": "linux"})],
    "indexes": [((0,), "x"), ((0, "size"), "1"), ((0, "size"), True), ((0, "digest"), "sha256:../x"),
                ((0, "platform"), 5), ((0, "platform", "os"), 5), ((0, "platform"), {}), ((0, "mediaType"), 1),
                ((0,), {"platform": {"os": "linux", "architecture": "amd64"}})],
}


#: stands for 3,000 nested arrays in a file :func:`_rewrite` writes
_DEEP = "(nested arrays)"


def _rewrite(path: Path, doc: dict) -> None:
    """``doc`` as the facts file, with the trailer this module writes (a hand-made file)."""
    import hashlib

    body = json.dumps(doc).replace(json.dumps(_DEEP), "[" * 3000 + "]" * 3000).encode()
    path.write_bytes(body + b"\n" + hashlib.sha256(body).hexdigest().encode())


def _mutations(facts: dict):
    """(kind, facts file) with every entry of one kind replaced by a bad value, or one part of
    every entry of one kind replaced."""
    import copy

    for kind in listingfacts.KINDS:
        for bad in _BAD_VALUES:
            if not (kind == "indexes" and bad == []):  # (an index of no manifests is a shape it writes)
                yield kind, {**facts, kind: {key: bad for key in facts[kind]}}
        for path, bad in _BAD_PARTS[kind]:
            changed = copy.deepcopy(facts)
            for entry in changed[kind].values():
                target = entry
                for step in path[:-1]:
                    target = target[step]
                if isinstance(target, dict) or len(target) > path[-1]:
                    target[path[-1]] = bad
            yield kind, changed
    # arrays nested deeper than the interpreter's recursion limit (written by :func:`_rewrite`)
    yield "indexes", {**facts, "indexes": {key: [{"platform": _DEEP}] for key in facts["indexes"]}}
    yield "all", {**facts, "configs": _DEEP}
    yield "all", {**facts, **{kind: ["x"] for kind in listingfacts.KINDS}}
    yield "all", {**facts, **{kind: "ab" for kind in listingfacts.KINDS}}


def test_a_hand_made_facts_file_of_any_shape_gives_the_listing_without_facts(tmp_path: Path, monkeypatch) -> None:
    """A facts file whose trailer is right (made or edited by hand, not damaged) but whose
    entries are not what ctrconv writes: each such entry is ignored, the document is read and
    validated as on a first listing, and the listing is the one without facts (no traceback)."""
    from ctrconv import inventory

    monkeypatch.setattr(inventory, "FACTS_FROM", 1)
    _, root = _zoo(tmp_path / "root")
    monkeypatch.setenv("CTRCONV_NO_CACHE", "1")
    plain = _listing(root)
    monkeypatch.delenv("CTRCONV_NO_CACHE")
    monkeypatch.setenv("CTRCONV_CACHE_DIR", str(tmp_path / "facts"))
    assert _listing(root) == plain
    (path,) = (tmp_path / "facts" / "ls").iterdir()
    facts = json.loads(path.read_bytes().rpartition(b"\n")[0])
    assert all(facts[kind] for kind in listingfacts.KINDS)
    tried = 0
    for kind, changed in _mutations(facts):
        _rewrite(path, changed)
        assert _listing(root) == plain, (kind, changed[kind] if kind != "all" else changed)
        tried += 1
    assert tried > 50
    _rewrite(path, facts)  # and the sound file still serves: nothing parsed again
    parsed: list[str] = []
    real_validate = inventory.validate_json
    monkeypatch.setattr(inventory, "validate_json", lambda *a, **k: parsed.append(a[0]) or real_validate(*a, **k))
    assert _listing(root) == plain and parsed == []


@pytest.mark.parametrize("count", [0, 1, 999, 1000, 1001, 2500])
def test_the_facts_are_written_as_json_a_batch_at_a_time(count: int) -> None:
    import io

    from ctrconv.listingfacts import _write_object

    from ctrconv.listingfacts import _members

    mapping = {f"k{i}": [i, "x\"y", None, [["d", i]]] for i in range(count)}
    out = io.StringIO()
    _write_object(out, mapping)
    assert json.loads(out.getvalue()) == mapping
    # with members another process wrote: empty ones, and one repeating a key with its value
    more = {f"m{i}": {"i": i} for i in range(3)}
    out = io.StringIO()
    _write_object(out, mapping, ["", _members(more), _members({}), _members({"m1": {"i": 1}})])
    assert json.loads(out.getvalue()) == {**mapping, **more}


def test_listings_saving_at_once_leave_one_whole_file(tmp_path: Path) -> None:
    """Eight processes save the facts of one store at the same moment, each its own set: the
    file left is one of them, whole (its trailer checks), and no temporary file is left."""
    import subprocess
    import sys
    import textwrap

    store, cache, start = tmp_path / "content", tmp_path / "cache", tmp_path / "start"
    writers = 8
    program = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        from ctrconv.listingfacts import ListingFacts
        n = int(sys.argv[1])
        facts = ListingFacts.load(Path({str(store)!r}), Path({str(cache)!r}))
        for i in range(300):  # a few hundred facts: writes that overlap in time
            facts.remember_config((f"sha256:{{n:02d}}{{i:062d}}", {C_KEY[1]!r}, i), (f"os{{n}}", "amd64"))
        while not os.path.exists({str(start)!r}):  # all ready, then all at once
            time.sleep(0.0005)
        sys.exit(0 if facts.save() else 1)
    """)
    processes = [subprocess.Popen([sys.executable, "-c", program, str(n)]) for n in range(writers)]
    start.touch()
    assert [p.wait(timeout=60) for p in processes] == [0] * writers
    files = list((cache / "ls").iterdir())
    assert [f.suffix for f in files] == [".json"]  # one file, no ".ls-" temporary left
    facts = ListingFacts.load(store, cache)
    known = [facts.config((f"sha256:{n:02d}{0:062d}", C_KEY[1], 0)) for n in range(writers)]
    winners = [n for n, found in enumerate(known) if found is not None]
    assert len(winners) == 1  # whole: one writer's facts, all of them
    n = winners[0]
    assert all(facts.config((f"sha256:{n:02d}{i:062d}", C_KEY[1], i)) == (f"os{n}", "amd64") for i in range(300))
