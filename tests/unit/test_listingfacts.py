"""The listing facts file (:mod:`ctrconv.listingfacts`): where it lives, what makes it ignored,
when it is written, and that a failure to write it is no error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctrconv import listingfacts
from ctrconv.listingfacts import ListingFacts, cache_directory

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


def test_facts_of_other_rules_or_an_unreadable_file_are_ignored_and_replaced(tmp_path: Path, monkeypatch) -> None:
    store, cache = tmp_path / "content", tmp_path / "cache"
    _learnt(store, cache)
    monkeypatch.setattr(listingfacts, "rules_fingerprint", lambda: "other rules")
    assert ListingFacts.load(store, cache).manifest(M_KEY) is None
    monkeypatch.undo()
    path = next((cache / "ls").iterdir())
    for garbage in (b"", b"{not json", b"[]", json.dumps({"format": 1}).encode(), b"\xff\xfe"):
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


def test_a_forked_halfs_facts_are_absorbed(tmp_path: Path) -> None:
    store, cache = tmp_path / "content", tmp_path / "cache"
    parent = ListingFacts.load(store, cache)
    child = ListingFacts.load(store, cache)
    child.remember_manifest(M_KEY, M_FACTS)
    parent.absorb(child.fresh())
    parent.absorb(parent.fresh())  # its own share changes nothing
    assert parent.learnt == 1 and parent.save()
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
