"""``--image`` resolution: names, image IDs (full, ``sha256:``, 12+ hex prefixes), ``repo@sha256:``."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from ctrconv.containerd.content import ContentStore
from ctrconv.containerd.root import ContainerdRoot
from ctrconv.errors import NotFoundError, UsageError
from ctrconv.oci import mediatypes as mt
from ctrconv.pipeline.resolve import image_ids, resolve_images
from support.synthetic_root import SyntheticRoot, _json, host_arch, other_arch
from support.image_ids import COLLIDING, SHARED_PREFIX

def _config_only(r: SyntheticRoot, config: bytes) -> tuple[dict, dict]:
    """(manifest descriptor, config descriptor) of a zero-layer image."""
    cdesc = r.add_blob(config, mt.OCI_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": cdesc, "layers": []}
    return r.add_blob(_json(manifest), mt.OCI_MANIFEST), cdesc


def _config_of(r: SyntheticRoot, manifest_digest: str) -> str:
    return json.loads(r.blobs[manifest_digest])["config"]["digest"]


@pytest.fixture
def synth(tmp_path: Path) -> SyntheticRoot:
    """``default``:

    * ``app:1`` (manifest) with CRI's other two names of it: ``app@sha256:<manifest>`` and
      ``sha256:<config>``;
    * ``multi:1`` (index, both platforms present) and ``other/multi:2`` (the same index);
    * ``foreign:1`` (index whose only present platform is not the host's);
    * ``coll:a`` / ``coll:b`` (config-only images whose IDs share 12 hex digits).
    """
    r = SyntheticRoot(tmp_path / "root")
    app = r.image_manifest("app", host_arch())
    app_id = _config_of(r, app["digest"])
    r.name("default", "docker.io/library/app:1", app)
    r.name("default", f"docker.io/library/app@{app['digest']}", app)
    r.name("default", app_id, app)
    host_p = {"architecture": host_arch(), "os": "linux"}
    other_p = {"architecture": other_arch(), "os": "linux"}
    multi = r.index([(r.image_manifest("multi", other_arch()), other_p), (r.image_manifest("multi", host_arch()), host_p)])
    r.name("default", "docker.io/library/multi:1", multi)
    r.name("default", "docker.io/other/multi:2", multi)
    foreign = r.index([(r.image_manifest("foreign", other_arch()), other_p),
                       (r.image_manifest("foreign", host_arch(), store=False), host_p)])
    r.name("default", "docker.io/library/foreign:1", foreign)
    for tag, config in zip("ab", COLLIDING):
        manifest, _ = _config_only(r, config)
        r.name("default", f"docker.io/library/coll:{tag}", manifest)
    r.write()
    return r


def _resolve(synth: SyntheticRoot, *refs: str) -> list[str]:
    root = ContainerdRoot(synth.path)
    with root.open_metadata() as meta:
        return [rec.name for rec in resolve_images(meta, root.content, "default", list(refs))]


def _ids(synth: SyntheticRoot, name: str) -> list[str]:
    root = ContainerdRoot(synth.path)
    with root.open_metadata() as meta:
        record = meta.image("default", name)
        assert record is not None
        return image_ids(ContentStore(root.content_dir), record)


def _target(synth: SyntheticRoot, name: str) -> dict:
    return synth.images["default"][name][0]


def _index_config(synth: SyntheticRoot, name: str, arch: str) -> str:
    index = json.loads(synth.blobs[_target(synth, name)["digest"]])
    child = next(m for m in index["manifests"] if m["platform"]["architecture"] == arch)
    return _config_of(synth, child["digest"])


def _app_names(synth: SyntheticRoot) -> list[str]:
    return [n for n in synth.images["default"] if n.startswith("docker.io/library/app") or n.startswith("sha256:")]


# -- image IDs ----------------------------------------------------------------------------------


def test_image_id_is_the_config_digest_of_the_host_platform(synth):
    app = _target(synth, "docker.io/library/app:1")
    assert _ids(synth, "docker.io/library/app:1") == [_config_of(synth, app["digest"])]
    # an index: the host platform's config, though the other platform comes first
    assert _ids(synth, "docker.io/library/multi:1") == [_index_config(synth, "docker.io/library/multi:1", host_arch())]
    # no host platform present (imported with --platform of another one): what is present
    assert _ids(synth, "docker.io/library/foreign:1") == [
        _index_config(synth, "docker.io/library/foreign:1", other_arch())]


# -- names --------------------------------------------------------------------------------------


def test_names_exact_and_normalised(synth):
    assert _resolve(synth, "docker.io/library/app:1") == ["docker.io/library/app:1"]
    assert _resolve(synth, "app:1") == ["docker.io/library/app:1"]
    assert _resolve(synth, "multi:1", "docker.io/library/multi:1") == ["docker.io/library/multi:1"]


def test_exact_stored_name_wins_over_an_id_prefix(tmp_path):
    """A name that looks like an ID prefix is a name first."""
    r = SyntheticRoot(tmp_path / "root")
    manifest, _ = _config_only(r, COLLIDING[0])
    other = r.image_manifest("x", host_arch())
    r.name("default", SHARED_PREFIX, other)
    r.name("default", "docker.io/library/coll:a", manifest)
    r.write()
    assert _resolve(r, SHARED_PREFIX) == [SHARED_PREFIX]
    assert _resolve(r, f"sha256:{SHARED_PREFIX}") == ["docker.io/library/coll:a"]


# -- IDs ----------------------------------------------------------------------------------------


def test_full_id_bare_prefixed_and_12_hex_prefix(synth):
    app = _target(synth, "docker.io/library/app:1")
    app_id = _config_of(synth, app["digest"])
    names = sorted(_app_names(synth))
    assert len(names) == 3
    hexid = app_id[7:]
    for ref in (hexid, app_id, hexid[:12], "sha256:" + hexid[:12], hexid[:30]):
        got = _resolve(synth, ref)
        # app_id itself is a stored name (CRI's alias): exact name first
        assert got == ([app_id] if ref == app_id else names), ref


def test_index_id_resolves_every_name_of_that_image(synth):
    host_config = _index_config(synth, "docker.io/library/multi:1", host_arch())
    assert _resolve(synth, host_config[7:19]) == ["docker.io/library/multi:1", "docker.io/other/multi:2"]
    # the other platform's config is not the image's ID (crictl would not show it)
    other_config = _index_config(synth, "docker.io/library/multi:1", other_arch())
    with pytest.raises(NotFoundError):
        _resolve(synth, other_config[7:19])


def test_target_digest_prefix_matches_like_nerdctl(synth):
    multi = _target(synth, "docker.io/library/multi:1")
    assert _resolve(synth, multi["digest"][7:21]) == ["docker.io/library/multi:1", "docker.io/other/multi:2"]


def test_ambiguous_prefix_is_a_usage_error_listing_the_candidates(synth):
    with pytest.raises(UsageError) as err:
        _resolve(synth, SHARED_PREFIX)
    message = str(err.value)
    assert "ambiguous" in message and "docker.io/library/coll:a" in message and "docker.io/library/coll:b" in message
    assert "\n" not in message
    # one more digit tells them apart
    ids = {hashlib.sha256(c).hexdigest(): c for c in COLLIDING}
    for hexid in ids:
        (name,) = _resolve(synth, hexid[:13])
        assert _ids(synth, name) == ["sha256:" + hexid]


def test_too_short_or_unknown_ids_are_not_found(synth):
    app_id = _config_of(synth, _target(synth, "docker.io/library/app:1")["digest"])
    with pytest.raises(NotFoundError) as err:
        _resolve(synth, app_id[7:18])  # 11 hex digits
    assert "12 hex digits" in (err.value.hint or "")
    for ref in ("0" * 64, "sha256:" + "0" * 64, "000000000000"):
        with pytest.raises(NotFoundError):
            _resolve(synth, ref)


# -- repo@sha256: -------------------------------------------------------------------------------


def test_repo_at_digest_matches_the_tagged_name(synth):
    multi = _target(synth, "docker.io/library/multi:1")["digest"]
    assert _resolve(synth, f"multi@{multi}") == ["docker.io/library/multi:1"]
    assert _resolve(synth, f"docker.io/other/multi@{multi}") == ["docker.io/other/multi:2"]
    assert _resolve(synth, f"multi:9@{multi}") == ["docker.io/library/multi:1"]  # the tag is dropped, as docker does
    # the repository must match
    with pytest.raises(NotFoundError):
        _resolve(synth, f"app@{multi}")
    # a stored digest name is exact
    app = _target(synth, "docker.io/library/app:1")["digest"]
    assert _resolve(synth, f"app@{app}") == [f"docker.io/library/app@{app}"]


def test_request_order_and_each_name_once(synth):
    app_id = _config_of(synth, _target(synth, "docker.io/library/app:1")["digest"])
    got = _resolve(synth, "multi:1", app_id[7:20], "app:1")
    assert got[0] == "docker.io/library/multi:1"
    assert sorted(got[1:]) == sorted(_app_names(synth))


# -- CLI ----------------------------------------------------------------------------------------


def _index_names(path: Path) -> list[str]:
    with tarfile.open(path) as tf:
        index = json.loads(tf.extractfile("index.json").read())  # type: ignore[union-attr]
    return sorted(m["annotations"]["io.containerd.image.name"] for m in index["manifests"])


def test_cli_export_by_id_prefix_and_repo_digest(synth, tmp_path, cli):
    app = _target(synth, "docker.io/library/app:1")
    app_id = _config_of(synth, app["digest"])
    out = tmp_path / "app.tar"
    res = cli("export", "--root", str(synth.path), "--image", app_id[7:19], "-o", str(out), "-q")
    assert res.code == 0, res.stderr
    assert _index_names(out) == sorted(_app_names(synth))
    multi = _target(synth, "docker.io/library/multi:1")["digest"]
    out2 = tmp_path / "multi.tar"
    res = cli("export", "--root", str(synth.path), f"multi@{multi}", "-o", str(out2), "--json")
    assert res.code == 0, res.stderr
    assert [i["name"] for i in res.json["images"]] == ["docker.io/library/multi:1"]


def test_cli_ambiguous_and_unknown_ids_exit_2_with_one_line(synth, tmp_path, cli):
    out = tmp_path / "x.tar"
    res = cli("export", "--root", str(synth.path), "--image", SHARED_PREFIX, "-o", str(out))
    assert res.code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctrconv: error: ")
    assert "ambiguous" in lines[0] and "coll:a" in lines[0] and "coll:b" in lines[0]
    res = cli("export", "--root", str(synth.path), "--image", "0123456789abcdef", "-o", str(out))
    assert res.code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_export_to_root_by_id(synth, tmp_path, cli):
    """``--format containerd-root`` resolves through the same function."""
    host_config = _index_config(synth, "docker.io/library/multi:1", host_arch())
    target = tmp_path / "target"
    res = cli("export", "--root", str(synth.path), "--image", host_config[7:19], "-o", str(target),
              "--format", "containerd-root", "--no-unpack", "--json", "-q")
    assert res.code == 0, res.stderr
    assert sorted(i["name"] for i in res.json["images"]) == ["docker.io/library/multi:1", "docker.io/other/multi:2"]
    res = cli("export", "--root", str(synth.path), "--image", SHARED_PREFIX, "-o", str(tmp_path / "t2"),
              "--format", "containerd-root", "--no-unpack")
    assert res.code == 2 and "ambiguous" in res.stderr
    assert not (tmp_path / "t2").exists()


def test_images_with_missing_or_invalid_documents_do_not_break_id_lookups(tmp_path):
    """A damaged image has no known ID; looking up other images' IDs still works, and its
    target digest prefix still finds it (for export to report what is missing)."""
    r = SyntheticRoot(tmp_path / "root")
    good = r.image_manifest("good", host_arch())
    gone = r.image_manifest("gone", host_arch(), store=False)
    garbage = r.add_blob(b"not json", mt.OCI_MANIFEST)
    r.name("default", "docker.io/library/good:1", good)
    r.name("default", "docker.io/library/gone:1", gone)
    r.name("default", "docker.io/library/garbage:1", garbage)
    r.write()
    assert _ids(r, "docker.io/library/gone:1") == [] and _ids(r, "docker.io/library/garbage:1") == []
    assert _resolve(r, _config_of(r, good["digest"])[7:19]) == ["docker.io/library/good:1"]
    assert _resolve(r, gone["digest"][7:19]) == ["docker.io/library/gone:1"]
    assert _resolve(r, garbage["digest"]) == ["docker.io/library/garbage:1"]


def test_one_id_under_different_targets_is_one_image(synth):
    """An index and its host manifest stored under another name have one ID (CRI lists them as
    one image): a prefix of it is not ambiguous and selects both names."""
    index = json.loads(synth.blobs[_target(synth, "docker.io/library/multi:1")["digest"]])
    child = next(m for m in index["manifests"] if m["platform"]["architecture"] == host_arch())
    synth.name("default", "docker.io/library/multi-host:1",
               {"mediaType": child["mediaType"], "digest": child["digest"], "size": child["size"]})
    synth.write()
    host_config = _config_of(synth, child["digest"])
    assert _ids(synth, "docker.io/library/multi-host:1") == [host_config]
    assert _resolve(synth, host_config[7:19]) == [
        "docker.io/library/multi-host:1", "docker.io/library/multi:1", "docker.io/other/multi:2"]
