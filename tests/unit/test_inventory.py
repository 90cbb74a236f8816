"""``ls``'s summaries (:mod:`ctrconv.inventory`): the pieces written by hand for speed say what
the generic ones they replace say."""

from __future__ import annotations

from dataclasses import asdict, fields

import pytest

from ctrconv.inventory import ImageSummary, RecentDocuments


def test_to_json_is_asdict_for_every_field() -> None:
    """``to_json`` spells out ``asdict`` (its deep copy was the slowest part of ``ls --json``):
    a field added to the summary and not to ``to_json`` fails here."""
    summary = ImageSummary(**{f.name: f"value-{f.name}" for f in fields(ImageSummary)})
    summary.platforms, summary.missing, summary.present_platforms = ["linux/amd64"], ["sha256:x"], ["linux/arm64"]
    as_json = summary.to_json()
    assert as_json == asdict(summary) and list(as_json) == list(asdict(summary))
    as_json["platforms"].append("changed")  # a copy, as asdict's
    assert summary.platforms == ["linux/amd64"]


def test_recent_documents_keeps_the_last_read() -> None:
    cache = RecentDocuments(limit=3)
    for key in "abcd":
        cache[key] = {"doc": key}
    assert list(cache) == ["b", "c", "d"] and cache["d"] == {"doc": "d"}
    cache["c"] = {"doc": "c2"}  # a key already held evicts nothing
    assert list(cache) == ["b", "c", "d"] and cache["c"] == {"doc": "c2"}
    cache["e"] = {"doc": "e"}
    assert list(cache) == ["c", "d", "e"] and len(cache) == 3


def _manifest(r, label: str, config: dict, *, config_type: str = "", layers: int = 1, drop: str = "",
              config_desc_extra: dict | None = None) -> dict:
    import json

    from ctrconv.oci import mediatypes as mt

    layer_descs = [r.add_blob(f"{label} layer {i}".encode(), mt.OCI_LAYER_GZIP) for i in range(layers)]
    layer_descs += layer_descs[:1] if layers > 1 else []  # a layer listed twice counts twice in ctr's size
    if not config_type:
        config = {"rootfs": {"type": "layers", "diff_ids": []}, "author": label, **config}
    config_desc = {**r.add_blob(json.dumps(config).encode(), config_type or mt.OCI_CONFIG), **(config_desc_extra or {})}
    if drop == "config":
        r.blobs.pop(config_desc["digest"])
    if drop == "layer":
        r.blobs.pop(layer_descs[0]["digest"])
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config_desc, "layers": layer_descs}
    return r.add_blob(json.dumps(doc).encode(), mt.OCI_MANIFEST)


def test_whole_manifest_summaries_are_what_the_walks_say(tmp_path, monkeypatch) -> None:
    """``ls`` summarises a manifest image whose blobs are all present without the generic walks;
    for every kind of image, with and without that shortcut, the listing is the same, and the
    shortcut is taken exactly for the whole manifests (else this would compare the walks with
    themselves)."""
    import json

    from ctrconv import api, inventory
    from ctrconv.oci import mediatypes as mt
    from support.document_reads import count_document_reads
    from support.synthetic_root import SyntheticRoot, host_arch, other_arch

    r = SyntheticRoot(tmp_path / "root")
    whole = {
        "whole": _manifest(r, "whole", {"architecture": host_arch(), "os": "linux"}),
        "foreign arch, three layers": _manifest(r, "arm", {"architecture": other_arch(), "os": "linux",
                                                           "variant": "v8"}, layers=3),
        "no os": _manifest(r, "no-os", {"architecture": "amd64", "os": "", "rootfs": {"type": "layers", "diff_ids": []}}),
    }
    walked = {
        "missing config": _manifest(r, "m-config", {"architecture": "amd64", "os": "linux"}, drop="config"),
        "missing layer": _manifest(r, "m-layer", {"architecture": "amd64", "os": "linux"}, drop="layer"),
        "artifact config": _manifest(r, "artifact", {"x": 1}, config_type="application/vnd.example.thing+json"),
        "config with platform": _manifest(r, "cfg-p", {"architecture": "amd64", "os": "linux"},
                                          config_desc_extra={"platform": {"architecture": "s390x", "os": "linux"}}),
        "invalid config": _manifest(r, "bad", {"architecture": 1, "os": "linux"}),
        "index": r.index([(r.image_manifest("multi", host_arch()), {"architecture": host_arch(), "os": "linux"})]),
        "absent manifest": r.image_manifest("gone", host_arch(), store=False),
        "not json": r.add_blob(b"not json", mt.OCI_MANIFEST),
        "docker manifest of a missing config": r.add_blob(json.dumps({
            "schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST,
            "config": {"mediaType": mt.DOCKER_CONFIG, "digest": "sha256:" + "c" * 64, "size": 2},
            "layers": []}).encode(), mt.DOCKER_MANIFEST),
    }
    # blobs whose bytes are not what their digest says: the walks word the problem
    corrupt_config = json.loads(r.blobs[walked.setdefault("corrupt config", _manifest(
        r, "corrupt", {"architecture": "amd64", "os": "linux"}))["digest"]])["config"]["digest"]
    r.blobs[corrupt_config] = bytes(reversed(r.blobs[corrupt_config]))
    truncated = walked.setdefault("truncated manifest", _manifest(r, "short", {"architecture": "amd64", "os": "linux"}))
    r.blobs[truncated["digest"]] = r.blobs[truncated["digest"]][:-1]
    for name, target in {**whole, **walked}.items():
        r.name("default", name, target)
    root = r.write()

    taken: list[str] = []
    shortcut = inventory.whole_manifest

    def recording(image, *args):
        found = shortcut(image, *args)
        if found is not None:
            taken.append(image.name)
        return found

    monkeypatch.setattr(inventory, "whole_manifest", recording)
    for platform in (None, f"linux/{other_arch()}"):
        fast = [i.to_json() for i in api.list_images(root, None, platform=platform)]
        assert sorted(taken) == sorted(whole), taken
        taken.clear()
        monkeypatch.setattr(inventory, "whole_manifest", lambda *args: None)
        slow = [i.to_json() for i in api.list_images(root, None, platform=platform)]
        monkeypatch.setattr(inventory, "whole_manifest", recording)
        assert fast == slow
    assert {i["name"]: i["status"] for i in fast}["missing layer"] == "incomplete"
    assert {i["name"]: i["problem"] for i in fast}["invalid config"]
    problems = {i["name"]: (i["status"], i["problem"] or "") for i in fast}
    assert problems["corrupt config"][0] == "error" and "digest mismatch" in problems["corrupt config"][1]
    assert problems["truncated manifest"][0] == "error" and "truncated" in problems["truncated manifest"][1]


def test_a_split_listing_is_the_same_listing(tmp_path, monkeypatch) -> None:
    """A large namespace is listed by two processes (``SPLIT_FROM``, lowered here): the same
    summaries in the same order as one process gives."""
    from ctrconv import api, forked, inventory
    from support.synthetic_root import standard_root

    r = standard_root(tmp_path / "root")
    for i in range(5):
        r.name("default", f"example.com/more:{i}", r.image_manifest(f"more{i}", "amd64"))
    root = r.write()
    monkeypatch.setattr(inventory, "SPLIT_FROM", 10**9)
    whole = [i.to_json() for i in api.list_images(root, None)]
    splits: list[int] = []

    def recording(fn, items):
        splits.append(sum(len(part) for part in items))  # the runs of records shared out
        return forked.map_balanced(fn, items)

    monkeypatch.setattr(inventory, "SPLIT_FROM", 2)
    monkeypatch.setattr(inventory, "_run_length", lambda records: 1)  # every record its own run
    monkeypatch.setattr(inventory, "map_balanced", recording)
    monkeypatch.setattr(inventory, "can_split", lambda: True)
    assert [i.to_json() for i in api.list_images(root, None)] == whole
    assert splits == [len(whole)] and len(whole) >= 8


def test_a_record_that_does_not_read_fails_the_listing_after_the_images_before_it(tmp_path, monkeypatch) -> None:
    """Each run of a split listing is decoded where it is taken. A record that does not decode
    fails the listing with its own error, wherever it falls (a run this process took, or the
    child's), after every image before it was summarised (here, in order, when not split; by
    one process or the other when split: a run the child failed is redone here, as
    ``map_balanced`` fails); an error of the walk over the records comes after every record it
    read."""
    import os
    import re

    from ctrconv import api, forked, inventory
    from ctrconv.containerd.imagerecords import StoredImages
    from ctrconv.containerd.metadata import MetadataDB
    from ctrconv.errors import CtrconvError, FormatError
    from support.synthetic_root import standard_root

    r = standard_root(tmp_path / "root")
    for i in range(5):
        r.name("default", f"example.com/more:{i}", r.image_manifest(f"more{i}", "amd64"))
    root = r.write()
    names = [i.name for i in api.list_images(root, ["default"])]
    log = tmp_path / "summarised"
    summarize, decode, stored_images = inventory.summarize, StoredImages.decode, MetadataDB.stored_images
    bad = {"name": "", "walk": ""}
    splits: list[int] = []

    def logging(image, *args, **kwargs):  # noqa: ANN001 -- summarize's own arguments
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)  # the child's calls too, by pid
        os.write(fd, f"{os.getpid()} {image.name}\n".encode())
        os.close(fd)
        return summarize(image, *args, **kwargs)

    def failing(self, element):  # noqa: ANN001
        if element[1].decode() == bad["name"]:
            raise FormatError(f"image default/{bad['name']}: bad record")
        return decode(self, element)

    def walk_fails(self, namespace):  # noqa: ANN001
        found = stored_images(self, namespace)
        found.error = CtrconvError(bad["walk"]) if bad["walk"] else None
        return found

    def listed(expected_error: str) -> tuple[list[str], set[str]]:
        """The images summarised here, in order, and by either process."""
        log.write_text("")
        with pytest.raises(CtrconvError, match=f"^{re.escape(expected_error)}$"):
            api.list_images(root, ["default"])
        lines = [line.split(" ", 1) for line in log.read_text().splitlines()]
        return [name for pid, name in lines if pid == str(os.getpid())], {name for _, name in lines}

    monkeypatch.setattr(inventory, "summarize", logging)
    monkeypatch.setattr(StoredImages, "decode", failing)
    monkeypatch.setattr(MetadataDB, "stored_images", walk_fails)
    monkeypatch.setattr(inventory, "can_split", lambda: True)
    monkeypatch.setattr(inventory, "_run_length", lambda records: 2)
    monkeypatch.setattr(inventory, "map_balanced",
                        lambda fn, runs: splits.append(sum(map(len, runs))) or forked.map_balanced(fn, runs))
    assert len(names) >= 8
    for split_from in (2, 10**9):
        monkeypatch.setattr(inventory, "SPLIT_FROM", split_from)
        splits.clear()
        for at in (0, 1, len(names) // 2 + 1, len(names) - 1):  # the first run, later ones, the last
            bad["name"] = names[at]
            here, anywhere = listed(f"image default/{names[at]}: bad record")
            if split_from == 2:
                assert anywhere >= set(names[:at]), at
            else:
                assert here == names[:at], at
        bad["name"], bad["walk"] = "", "the walk stopped"
        here, anywhere = listed("the walk stopped")
        assert anywhere == set(names) and (split_from == 2 or here == names)
        bad["walk"] = ""
        assert splits == ([len(names)] * 5 if split_from == 2 else [])


def test_names_of_one_target_are_summarised_once(tmp_path, monkeypatch) -> None:
    """A CRI node names each image three times (tag, ``repo@digest``, config ID), all with one
    target: ``ls`` summarises each target of a namespace once and renames the summary, and the
    listing is what a summary of every record gives (whole, broken, index, in two namespaces)."""
    import json
    from dataclasses import replace

    from ctrconv import api, inventory
    from ctrconv.containerd.imagerecords import StoredImages
    from ctrconv.containerd.records import Target
    from ctrconv.oci import mediatypes as mt
    from support.document_reads import count_document_reads
    from support.synthetic_root import SyntheticRoot, host_arch, other_arch

    r = SyntheticRoot(tmp_path / "root")
    targets = {
        "whole": _manifest(r, "whole", {"architecture": host_arch(), "os": "linux"}),
        "missing layer": _manifest(r, "m-layer", {"architecture": "amd64", "os": "linux"}, drop="layer"),
        "index": r.index([(r.image_manifest("multi", host_arch()), {"architecture": host_arch(), "os": "linux"}),
                          (r.image_manifest("gone", other_arch(), store=False), {"architecture": other_arch(), "os": "linux"})]),
        "not json": r.add_blob(b"not json", mt.OCI_MANIFEST),
    }
    for namespace in ("default", "k8s.io"):
        for kind, target in targets.items():
            for name in (f"example.com/{kind.replace(' ', '-')}:v1", f"example.com/{kind.replace(' ', '-')}@{target['digest']}",
                         target["digest"]):
                r.name(namespace, name, target)
    r.name("k8s.io", "example.com/same-digest-other-type:v1", {**targets["whole"], "mediaType": mt.DOCKER_MANIFEST})
    root = r.write()

    calls: list[tuple[str, str]] = []
    summarize = inventory.summarize

    def counting(image, *args, **kwargs):  # noqa: ANN001
        calls.append((image.namespace, image.name))
        return summarize(image, *args, **kwargs)

    monkeypatch.setattr(inventory, "summarize", counting)
    listed = api.list_images(root, None)
    assert len(listed) == 3 * 4 * 2 + 1
    assert len(calls) == 4 * 2 + 1  # once per target (media type, digest, size) and namespace

    class Unshared(Target):  # a target equal to no other: every record summarised on its own
        __hash__ = object.__hash__
        __eq__ = object.__eq__

    decode = StoredImages.decode
    monkeypatch.setattr(StoredImages, "decode", lambda self, element: replace(
        image := decode(self, element), target=Unshared(**asdict(image.target))))
    calls.clear()
    each = api.list_images(root, None)
    assert len(calls) == len(each) == len(listed)
    assert [i.to_json() for i in listed] == [i.to_json() for i in each]
    assert len({json.dumps(i.platforms) for i in listed}) >= 3  # whole, index, broken: not all alike
    listed[0].platforms.append("changed")  # each summary holds lists of its own
    assert all("changed" not in i.platforms for i in listed[1:])


def test_flat_index_summaries_are_what_the_walks_say(tmp_path, monkeypatch) -> None:
    """``ls`` summarises an index of platform manifests (each absent or stored whole) from one
    read of each document; for every kind of index, with and without that shortcut, for the
    host and for other platforms, cold and warm with listing facts, the listing is the same,
    and the shortcut is taken exactly for the flat ones."""
    import json

    from ctrconv import api, inventory
    from ctrconv.oci import mediatypes as mt
    from support.document_reads import count_document_reads
    from support.synthetic_root import SyntheticRoot, host_arch, other_arch

    r = SyntheticRoot(tmp_path / "root")
    host, other = {"architecture": host_arch(), "os": "linux"}, {"architecture": other_arch(), "os": "linux"}
    arm_v7 = {"architecture": "arm", "os": "linux", "variant": "v7"}

    def m(label: str, arch: str, *, store: bool = True) -> dict:
        return r.image_manifest(label, arch, store=store)

    flat = {
        "all stored": r.index([(m("a1", host_arch()), host), (m("a2", other_arch()), other)]),
        "others absent": r.index([(m("b1", host_arch()), host), (m("b2", other_arch(), store=False), other),
                                  (m("b3", "arm", store=False), arm_v7)]),
        "host absent": r.index([(m("c1", host_arch(), store=False), host), (m("c2", other_arch()), other)]),
        "all absent": r.index([(m("d1", host_arch(), store=False), host), (m("d2", other_arch(), store=False), other)]),
        "host twice": r.index([(m("e1", host_arch()), host), (m("e2", host_arch()), {**host, "os.version": "1"})]),
        "no children": r.add_blob(json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}).encode(),
                                  mt.OCI_INDEX),
    }
    partly = m("f1", host_arch())
    r.blobs.pop(json.loads(r.blobs[partly["digest"]])["layers"][0]["digest"])
    invalid_child = r.add_blob(b'{"schemaVersion": 2, "config": 1}', mt.OCI_MANIFEST)
    shared = m("g1", host_arch())
    walked = {
        "a child partly stored": r.index([(partly, host), (m("f2", other_arch()), other)]),
        "a child without platform": r.index([(m("h1", host_arch()), None), (m("h2", other_arch()), other)]),
        "nested": r.index([(r.index([(m("i1", host_arch()), host)]), host), (m("i2", other_arch()), other)]),
        "a child listed twice": r.index([(shared, host), (shared, other)]),
        "an invalid child": r.index([(invalid_child, other), (m("j1", host_arch()), host)]),
        "a child of another type": r.index([(r.add_blob(b"{}", "application/vnd.example.thing+json"), other),
                                            (m("k1", host_arch()), host)]),
        "absent index": r.add_blob(b'{"schemaVersion": 2, "manifests": []}', mt.OCI_INDEX, store=False),
        "not json": r.add_blob(b"{", mt.OCI_INDEX),
    }
    for name, target in {**flat, **walked}.items():
        r.name("default", name, target)
    root = r.write()

    taken: list[str] = []
    shortcut = inventory.flat_index

    def recording(image, *args):  # noqa: ANN001
        found = shortcut(image, *args)
        if found is not None:
            taken.append(image.name)
        return found

    monkeypatch.setattr(inventory, "FACTS_FROM", 1)
    monkeypatch.setenv("CTRCONV_CACHE_DIR", str(tmp_path / "facts"))
    for platform in (None, f"linux/{other_arch()}", "linux/arm/v7", "windows/amd64"):
        for _ in ("cold", "warm"):
            monkeypatch.setattr(inventory, "flat_index", recording)
            fast = [i.to_json() for i in api.list_images(root, None, platform=platform)]
            assert sorted(taken) == sorted(flat), (platform, taken)
            taken.clear()
            monkeypatch.setattr(inventory, "flat_index", lambda *args: None)
            monkeypatch.setenv("CTRCONV_NO_CACHE", "1")
            slow = [i.to_json() for i in api.list_images(root, None, platform=platform)]
            monkeypatch.delenv("CTRCONV_NO_CACHE")
            assert fast == slow, platform
    statuses = {i["name"]: i["status"] for i in fast}  # judged for windows/amd64: nothing matches
    assert statuses["all stored"] == "platform-absent" and statuses["all absent"] == "incomplete"
    host_listing = {i.name: i for i in api.list_images(root, None)}
    assert host_listing["others absent"].complete and host_listing["host absent"].status == "platform-absent"
    assert host_listing["all stored"].present_platforms == sorted([f"linux/{host_arch()}", f"linux/{other_arch()}"])


def test_names_only_are_the_listings_names_without_reading_a_document(tmp_path, monkeypatch) -> None:
    """``ls -q`` (``api.list_image_names``) gives the names ``ls`` lists, in its order, from the
    image records alone; a record that does not read fails both with its error; a bad
    ``--platform`` is refused by both."""
    from ctrconv import api
    from ctrconv.containerd.content import ContentStore, ListingContent
    from ctrconv.containerd.imagerecords import StoredImages
    from ctrconv.errors import CtrconvError, FormatError
    from support.synthetic_root import standard_root

    r = standard_root(tmp_path / "root")
    for i in range(4):
        r.name("other", f"example.com/more:{i}", r.image_manifest(f"more{i}", "amd64"))
    root = r.write()
    for namespaces in (None, ["other"], ["default", "other"], ["missing"]):
        listed = [i.name for i in api.list_images(root, namespaces)]
        monkeypatch.setattr(ContentStore, "read_exact", lambda *args: pytest.fail("a document was read"))
        monkeypatch.setattr(ListingContent, "read_exact", lambda *args: pytest.fail("a document was read"))
        monkeypatch.setattr(ContentStore, "open", lambda *args: pytest.fail("a blob was opened"))
        assert api.list_image_names(root, namespaces) == listed
        monkeypatch.undo()
    assert len(api.list_image_names(root)) >= 6

    decode = StoredImages.decode
    bad = api.list_image_names(root, ["other"])[2]

    def failing(self, element):  # noqa: ANN001
        if element[1].decode() == bad:
            raise FormatError(f"image other/{bad}: bad record")
        return decode(self, element)

    monkeypatch.setattr(StoredImages, "decode", failing)
    for listing in (api.list_images, api.list_image_names):
        with pytest.raises(CtrconvError, match="bad record"):
            listing(root, ["other"])
        with pytest.raises(CtrconvError, match="invalid platform"):
            listing(root, ["default"], platform="linux//x")


def test_an_index_left_to_the_walks_is_not_read_twice(tmp_path, monkeypatch) -> None:
    """An index ``flat_index`` leaves to the walks (a child partly stored: CRI's discarded
    layers) hands them the documents it read: each is read once in the listing."""
    import collections
    import json

    from ctrconv import api
    from support.document_reads import count_document_reads
    from support.synthetic_root import SyntheticRoot, host_arch, other_arch

    r = SyntheticRoot(tmp_path / "root")
    partly = r.image_manifest("p1", host_arch())
    r.blobs.pop(json.loads(r.blobs[partly["digest"]])["layers"][0]["digest"])
    index = r.index([(partly, {"architecture": host_arch(), "os": "linux"}),
                     (r.image_manifest("p2", other_arch()), {"architecture": other_arch(), "os": "linux"})])
    r.name("default", "example.com/partly:v1", index)
    root = r.write()
    reads = count_document_reads(monkeypatch)
    [summary] = api.list_images(root, None)
    assert not summary.complete and summary.missing  # the walks' verdict (a layer missing)
    assert reads[index["digest"]] == 1 and reads[partly["digest"]] == 1, reads


def test_a_manifest_left_to_the_walks_is_not_read_twice(tmp_path, monkeypatch) -> None:
    """A single-manifest image ``whole_manifest`` leaves to the walks (a layer missing: CRI's
    discarded layers) hands them the manifest it read; a whole image's manifest does not stay
    in the walks' cache."""
    import collections
    import json

    from ctrconv import api, inventory
    from support.document_reads import count_document_reads
    from support.synthetic_root import SyntheticRoot, host_arch

    r = SyntheticRoot(tmp_path / "root")
    partly = r.image_manifest("p1", host_arch())
    r.blobs.pop(json.loads(r.blobs[partly["digest"]])["layers"][0]["digest"])
    whole = r.image_manifest("w1", host_arch())
    r.name("default", "example.com/partly:v1", partly)
    r.name("default", "example.com/whole:v1", whole)
    root = r.write()
    reads = count_document_reads(monkeypatch)
    caches: list[inventory.RecentDocuments] = []
    real_cache = inventory.RecentDocuments

    def recording_cache(*args, **kwargs):
        caches.append(real_cache(*args, **kwargs))
        return caches[-1]

    monkeypatch.setattr(inventory, "RecentDocuments", recording_cache)
    summaries = {s.name: s for s in api.list_images(root, None)}
    assert not summaries["example.com/partly:v1"].complete and summaries["example.com/partly:v1"].missing
    assert summaries["example.com/whole:v1"].complete
    assert reads[partly["digest"]] == 1 and reads[whole["digest"]] == 1, reads
    [cache] = caches
    assert not any(key[0] == whole["digest"] for key in cache)


def test_names_only_on_damaged_meta_db_fail_as_the_records_read(tmp_path) -> None:
    """``ls -q`` on a meta.db with random bytes changed: the names of every record that reads,
    or the error of the first that does not, as reading the records one by one gives them
    (``MetadataDB.images``); it never reads content records, so their damage does not stop it,
    as ``ctr images ls -q`` (containerd's image list) does not read them either."""
    import random

    from ctrconv import api
    from ctrconv.bolt import BoltFile
    from ctrconv.containerd.metadata import MetadataDB
    from ctrconv.errors import CtrconvError
    from support.bolt_records import damaged_files, until_error
    from support.synthetic_root import standard_root

    r = standard_root(tmp_path / "root")
    for i in range(40):
        r.name("other", f"example.com/many-names-to-fill-pages/{i:03d}:v1", r.image_manifest(f"m{i}", "amd64"))
    root = r.write()
    path = root / "io.containerd.metadata.v1.bolt" / "meta.db"
    original = path.read_bytes()
    with BoltFile(path) as db:
        hwm = db.meta.pgid
    rng = random.Random(20261206)
    compared = failed = 0
    for trial, db in damaged_files(tmp_path / "copy.db", original, lambda: rng.randrange(2, hwm), rng, 150):
        expected: list[str] = []
        error = None
        try:
            meta = MetadataDB(db)
            for ns in meta.namespaces():
                names, error = until_error(lambda: (image.name for image in meta.images(ns)))
                expected += names
                if error is not None:
                    break
        except CtrconvError as exc:
            error = (type(exc), str(exc))
        if error is not None:  # (worded with the path of the file read)
            error = (error[0], error[1].replace(str(tmp_path / "copy.db"), str(path)))  # type: ignore[index]
        path.write_bytes((tmp_path / "copy.db").read_bytes())
        try:
            got: object = api.list_image_names(root)
        except CtrconvError as exc:
            got = (type(exc), str(exc))
        assert got == (error if error is not None else expected), trial
        compared += 1
        failed += error is not None
    assert compared >= 50 and 0 < failed < compared, (compared, failed)


def test_human_size_is_the_division_loop_ctr_runs() -> None:
    """The integer shortcut gives the text of go-units' loop (divide by 1024 while the size is
    1024 or more, ``%02.1f``) at every unit boundary, at exact halves of a tenth, on random
    sizes of every length, and past 2^53."""
    import random

    from ctrconv.inventory import human_size

    def loop(n: int) -> str:
        units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"]
        size, i = float(n), 0
        while size >= 1024 and i < len(units) - 1:
            size /= 1024
            i += 1
        return "%02.1f %s" % (size, units[i])

    rng = random.Random(53)
    sizes = [0, 1, 557, 1023, 1024, 1025, 1994752, 2**53 - 1, 2**53, 2**64, 2**90, 10**30]
    sizes += [1024**k + d for k in range(1, 6) for d in (-1, 0, 1)]
    # sizes whose tenths end in an exact half (1.25 KiB, 1.75 KiB, ...: %.1f rounds to even)
    # and their neighbours, in every unit
    sizes += [(2 * t + 1) << (10 * k - 2) for k in range(1, 6) for t in range(2, 400)]
    sizes += [((2 * t + 1) << (10 * k - 2)) + d for k in range(1, 6) for t in range(2, 60) for d in (-1, 1)]
    sizes += [rng.getrandbits(rng.randint(1, 53)) for _ in range(50000)]
    for n in sizes:
        assert human_size(n) == loop(n), n


@pytest.mark.parametrize("young", [700, 50_000, 0, 10**6])
def test_a_listing_paces_the_collector_and_gives_its_pace_back(tmp_path, monkeypatch, young) -> None:
    """While a listing runs the collector runs at most every ``LISTING_GC_THRESHOLD`` new
    objects (a pace already slower, or no collection at all, is left as it is); afterwards
    the caller's thresholds are back, what the listing kept is not counted against them, and
    cyclic garbage made during the listing is still collectable."""
    import gc

    from ctrconv import api, inventory
    from support.synthetic_root import standard_root

    root = standard_root(tmp_path / "root").write()
    seen: list[tuple[int, int, int]] = []
    kept: list[object] = []
    summarize = inventory.summarize

    def recording(*args, **kwargs):
        seen.append(gc.get_threshold())
        kept.extend([] for _ in range(2000))  # what a listing keeps (summaries, facts)
        cycle: list[object] = []
        cycle.append(cycle)  # garbage in a cycle, as the plan walk's closures leave
        return summarize(*args, **kwargs)

    monkeypatch.setattr(inventory, "summarize", recording)
    before = gc.get_threshold()
    gc.set_threshold(young, before[1], before[2])
    try:
        images = api.list_images(root, None)
        after = gc.get_threshold()
        pending = gc.get_count()[0]
        collected = gc.collect()
    finally:
        gc.set_threshold(*before)
    assert images and seen
    expected = young if young == 0 or young >= inventory.LISTING_GC_THRESHOLD else inventory.LISTING_GC_THRESHOLD
    assert {threshold[0] for threshold in seen} == {expected}
    assert after == (young, before[1], before[2])
    if young:
        assert pending < young
    assert collected >= len(seen)


def test_what_a_listing_keeps_is_not_collected_when_it_ends() -> None:
    """The objects made under ``_fewer_collections`` go to the oldest generation when it ends:
    the caller's (lower) threshold back, the next allocations set off no collection of them."""
    import gc

    from ctrconv import inventory

    before = gc.get_threshold()
    collections: list[int] = []

    def count(phase, info):
        if phase == "start":
            collections.append(info["generation"])

    gc.set_threshold(700, before[1], before[2])
    try:
        with inventory._fewer_collections():
            kept = [[] for _ in range(20_000)]
            gc.callbacks.append(count)
        [[] for _ in range(300)]  # fewer than the threshold
    finally:
        if count in gc.callbacks:
            gc.callbacks.remove(count)
        gc.set_threshold(*before)
    assert len(kept) == 20_000 and collections == []


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("broken", [("records",), ("content",), ("records", "content")])
def test_a_namespace_that_does_not_read_fails_with_the_first_error_in_reading_order(
        tmp_path, monkeypatch, split: bool, broken: tuple[str, ...]) -> None:
    """The image records are read first (to know whether the listing is split) but their error
    comes in its old turn: after the content records' (read first before), whether the listing
    would be split or not."""
    from ctrconv import api, inventory
    from ctrconv.containerd.metadata import MetadataDB
    from ctrconv.errors import FormatError
    from support.synthetic_root import standard_root

    root = standard_root(tmp_path / "root").write()
    if split:
        monkeypatch.setattr(inventory, "SPLIT_FROM", 1)
        monkeypatch.setattr(inventory, "can_split", lambda: True)

    def failing(what: str):
        def read(self, namespace):
            raise FormatError(f"{what} of {namespace} do not read")
        return read

    if "records" in broken:
        monkeypatch.setattr(MetadataDB, "stored_images", failing("image records"))
    if "content" in broken:
        monkeypatch.setattr(MetadataDB, "content_digests", failing("content records"))
    first = "content records" if "content" in broken else "image records"
    with pytest.raises(FormatError, match=first):
        api.list_images(root, None)


def test_objects_the_caller_froze_stay_frozen() -> None:
    """A caller that froze its objects (``gc.freeze`` before forking workers) finds them frozen
    after a listing: the listing's own objects are then left to the collector's pace."""
    import gc

    from ctrconv import inventory

    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with inventory._fewer_collections():
            kept = [[] for _ in range(1000)]
        assert gc.get_freeze_count() == frozen and len(kept) == 1000
    finally:
        gc.unfreeze()


def test_a_listing_leaves_no_descriptor_open(tmp_path, monkeypatch) -> None:
    """The blob directories a listing reads its documents through are closed when it ends, and
    when it fails part way."""
    import os

    from ctrconv import api, inventory
    from support.synthetic_root import standard_root

    root = standard_root(tmp_path / "root").write()
    before = set(os.listdir("/proc/self/fd"))
    assert api.list_images(root, None)
    assert set(os.listdir("/proc/self/fd")) == before
    real = inventory.summarize
    seen: list[str] = []

    def failing(image, *args, **kwargs):
        seen.append(image.name)
        if len(seen) == 2:
            raise RuntimeError("stop")
        return real(image, *args, **kwargs)

    monkeypatch.setattr(inventory, "summarize", failing)
    with pytest.raises(RuntimeError, match="stop"):
        api.list_images(root, None)
    assert set(os.listdir("/proc/self/fd")) == before


def test_a_summary_pickles_as_itself_with_every_field() -> None:
    """``ImageSummary`` pickles as its constructor's arguments (a split listing's half comes
    through a pipe): every field comes back, so a field added to the class and not to
    ``__reduce__`` fails here."""
    import dataclasses
    import pickle

    from ctrconv.inventory import ImageSummary

    values = {"str": "text-{}", "int": 7, "bool": True, "list[str]": ["a-{}"], "str | None": "why-{}"}
    summary = ImageSummary(**{f.name: (lambda v: v.format(f.name) if isinstance(v, str) else
                                       [x.format(f.name) for x in v] if isinstance(v, list) else v)(values[f.type])
                              for f in dataclasses.fields(ImageSummary)})
    assert len(summary.__reduce__()[1]) == len(dataclasses.fields(ImageSummary))
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        again = pickle.loads(pickle.dumps(summary, protocol=protocol))
        assert again == summary and again.__dict__ == summary.__dict__ and again is not summary


def test_names_that_are_no_utf8_are_listed_as_stored(tmp_path) -> None:
    """A namespace and an image name whose stored bytes are no UTF-8 (damage, or a writer other
    than containerd) are listed like any other, their bytes kept (``surrogateescape``): found
    by fuzzing, ``ls -A`` failed on such a namespace with an internal error."""
    from ctrconv import api
    from ctrconv.bolt.reader import BoltFile
    from ctrconv.containerd.metadata import MetadataDB
    from support.odd_names import ODD_NAMESPACE_TEXT, odd_names_root

    root, odd = odd_names_root(tmp_path / "root")
    listed = api.list_images(root, None)
    names = {ns: [i.name for i in listed if i.namespace == ns] for ns in ("default", ODD_NAMESPACE_TEXT)}
    assert names["default"] == names[ODD_NAMESPACE_TEXT] and odd in names["default"]
    assert all(i.status == "complete" for i in listed)
    meta = MetadataDB(BoltFile(root / "io.containerd.metadata.v1.bolt" / "meta.db"))
    assert meta.image(ODD_NAMESPACE_TEXT, odd) is not None
    assert meta.snapshot_sequence(ODD_NAMESPACE_TEXT, "overlayfs\udcff") == 0
    assert [s.key for s in meta.snapshots(ODD_NAMESPACE_TEXT, "overlayfs")] == [
        s.key for s in meta.snapshots("default", "overlayfs")]