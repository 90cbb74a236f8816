"""The tag an image name gives a push to ``docker://HOST/REPO`` (the repository is the destination's)."""

from __future__ import annotations

import pytest

from ctrconv.registry.push import _tag_of


@pytest.mark.parametrize("name, tag", [
    ("docker.io/library/busybox:1.36", "1.36"),
    ("busybox", "latest"),
    # a name containerd stores though the reference grammar refuses it (upper case): its tag still
    # tags the push (it went untagged, without a word, and the registry's GC may take it: a red-team run)
    ("docker.io/library/UpperCase:Tag", "Tag"),
    ("registry.local:5000/Team/App:v2", "v2"),
    ("docker.io/library/busybox@sha256:" + "a" * 64, None),  # pushed by digest
    ("sha256:" + "a" * 64, None),  # CRI's image-ID name: no tag (not the hex)
    ("docker.io/library/UpperCase", None),
    ("docker.io/library/UpperCase:bad/tag", None),
])
def test_the_tag_a_name_gives(name: str, tag: str | None) -> None:
    assert _tag_of(name) == tag
