"""``ls``'s summaries (:mod:`ctrconv.inventory`): the pieces written by hand for speed say what
the generic ones they replace say."""

from __future__ import annotations

from dataclasses import asdict, fields

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
