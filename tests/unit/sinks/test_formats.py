"""Unit tests of the export building blocks: the Go-compatible tar writer and the name documents."""

from __future__ import annotations

import io
import tarfile

import pytest

from ctrconv.oci import mediatypes as mt
from ctrconv.image.plan import PlannedManifest
from ctrconv.sinks import _layout, detect_format
from ctrconv.layers.tarwrite import BLOCK, Header, header_bytes, pax_records, split_ustar_path
from ctrconv.sinks._tar import TarWriter
from ctrconv.sinks.base import ExportedImage, blob_path

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


# -- tar writer ------------------------------------------------------------------------------


def test_directory_header_matches_go_archive_tar_bytes():
    # First header of a real `ctr images export` tar (containerd 1.6.20, Go archive/tar).
    block = header_bytes(Header(b"blobs/", b"5", 0o755))
    assert block[:6] == b"blobs/" and block[6:100] == bytes(94)
    assert block[100:108] == b"0000755\0"
    assert block[108:124] == b"0000000\0" * 2
    assert block[124:136] == b"00000000000\0"
    assert block[136:148] == b"00000000000\0"
    assert block[148:156] == b"010306\0 "
    assert block[156:157] == b"5"
    assert block[257:265] == b"ustar\x0000"
    assert block[265:329] == bytes(64)  # empty uname/gname
    assert block[329:345] == b"0000000\0" * 2
    assert block[345:] == bytes(BLOCK - 345)


def test_stream_reads_back_and_has_no_record_padding():
    out = io.BytesIO()
    tar = TarWriter(out)
    tar.add_dir("blobs/")
    tar.begin_file("blobs/sha256/" + "a" * 64, 700, 0o444)
    tar.write(b"x" * 300)
    tar.write(b"y" * 400)
    tar.end_file()
    tar.add_bytes("index.json", b"{}", 0o644)
    tar.close()
    data = out.getvalue()
    # 4 headers... dir, file (700 -> 1024 bytes of data), small file (1 block), 2 end blocks
    assert len(data) == BLOCK * (1 + 1 + 2 + 1 + 1 + 2)
    assert data[-2 * BLOCK:] == bytes(2 * BLOCK)
    assert tar.bytes_written == len(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = tf.getmembers()
        assert [m.name for m in members] == ["blobs", "blobs/sha256/" + "a" * 64, "index.json"]
        assert [m.mode for m in members] == [0o755, 0o444, 0o644]
        assert all(m.uid == 0 and m.gid == 0 and m.mtime == 0 and m.uname == "" for m in members)
        assert tf.extractfile(members[1]).read() == b"x" * 300 + b"y" * 400


def test_entry_size_is_enforced():
    tar = TarWriter(io.BytesIO())
    tar.begin_file("f", 3, 0o644)
    with pytest.raises(ValueError):
        tar.write(b"toolong")
    tar.write(b"ab")
    with pytest.raises(ValueError, match="short by 1"):
        tar.end_file()


def test_long_names_use_the_ustar_prefix_then_pax():
    name384 = "blobs/sha384/" + "b" * 96  # 109 bytes: splits at the last '/'
    assert split_ustar_path(name384.encode()) == (b"blobs/sha384", b"b" * 96)
    name512 = "blobs/sha512/" + "c" * 128  # file part > 100 bytes: needs PAX
    assert split_ustar_path(name512.encode()) is None
    out = io.BytesIO()
    tar = TarWriter(out)
    tar.add_bytes(name384, b"1", 0o444)
    tar.add_bytes(name512, b"2", 0o444)
    tar.close()
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tf:
        assert tf.getnames() == [name384, name512]
        assert tf.extractfile(name512).read() == b"2"


def test_pax_record_length_counts_itself():
    rec = pax_records({b"size": b"9000000000"})
    assert rec == b"19 size=9000000000\n"
    assert len(rec) == 19
    long = pax_records({b"path": b"p" * 95})  # length crosses from 2 to 3 digits
    assert long.startswith(str(len(long)).encode() + b" path=")


# -- name documents ----------------------------------------------------------------------------


def test_oci_layout_and_index_bytes():
    assert _layout.OCI_LAYOUT == b'{"imageLayoutVersion":"1.0.0"}'
    entry = {"mediaType": mt.OCI_MANIFEST, "digest": D1, "size": 5}
    assert _layout.index_json([entry], media_type=False) == (
        b'{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json",'
        b'"digest":"' + D1.encode() + b'","size":5}]}'
    )
    assert _layout.index_json([], media_type=True) == (
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}'
    )


def test_name_entry_keeps_annotations_sorted_and_overrides_names():
    desc = {"mediaType": mt.OCI_INDEX, "digest": D1, "size": 9,
            "annotations": {"z": "1", "io.containerd.image.name": "stale", "a": "<&>"}}
    entry = _layout.name_entry(desc, "docker.io/library/test:v1")
    assert list(entry) == ["mediaType", "digest", "size", "annotations"]
    assert list(entry["annotations"].items()) == [
        ("a", "<&>"), ("io.containerd.image.name", "docker.io/library/test:v1"),
        ("org.opencontainers.image.ref.name", "v1"), ("z", "1"),
    ]
    assert b'"a":"\\u003c\\u0026\\u003e"' in _layout.index_json([entry], media_type=False)
    assert _layout.name_entry(desc, "docker.io/library/test@" + D2)["annotations"][
        "org.opencontainers.image.ref.name"] == "@" + D2


def _image(name: str, manifest_digest: str, layers: list[str]) -> ExportedImage:
    m = PlannedManifest(
        descriptor={"mediaType": mt.OCI_MANIFEST, "digest": manifest_digest, "size": 1},
        platform=None,
        config={"mediaType": mt.OCI_CONFIG, "digest": D3, "size": 1},
        layers=[{"mediaType": mt.OCI_LAYER_GZIP, "digest": d, "size": 1} for d in layers],
        document={},
    )
    return ExportedImage(name=name, entry={}, manifest=m)


def test_ctr_manifest_json_groups_names_by_manifest():
    images = [_image("docker.io/library/a:1", D1, [D2]), _image("quay.io/x/b", D2, []),
              _image("docker.io/library/a:2", D1, [D2])]
    assert _layout.ctr_manifest_json(images) == (
        b'[{"Config":"blobs/sha256/' + D3[7:].encode() + b'","RepoTags":["a:1","a:2"],'
        b'"Layers":["blobs/sha256/' + D2[7:].encode() + b'"]},'
        b'{"Config":"blobs/sha256/' + D3[7:].encode() + b'","RepoTags":["quay.io/x/b:latest"],"Layers":null}]'
    )
    assert _layout.ctr_manifest_json([ExportedImage("n", {}, None)]) is None


def test_docker_tags_exclude_digests_and_cri_ids():
    assert _layout.docker_tag("docker.io/library/busybox:1") == "busybox:1"
    assert _layout.docker_tag("registry.local:5000/team/app") == "registry.local:5000/team/app:latest"
    assert _layout.docker_tag("docker.io/library/busybox@" + D1) is None
    assert _layout.docker_tag("sha256:" + "f" * 64) is None
    assert _layout.docker_tag("Invalid Name") is None
    ok = _layout.docker_manifest_json([_image("sha256:" + "f" * 64, D1, []), _image("docker.io/library/a:1", D1, [])])
    assert b'"RepoTags":["a:1"]' in ok
    assert b'"RepoTags":null' in _layout.docker_manifest_json([_image("docker.io/library/a@" + D2, D1, [])])
    assert _layout.is_unnamed("moby-dangling@" + D1) and _layout.is_unnamed(D1)
    assert not _layout.is_unnamed("docker.io/library/a:1")
    entry = {"mediaType": mt.OCI_MANIFEST, "digest": D1, "size": 1,
             "annotations": {"io.containerd.image.name": "moby-dangling@" + D1, "org.opencontainers.image.ref.name": "x",
                             "containerd.io/distribution.source.docker.io": "library/a"}}
    assert _layout.unnamed_entry(entry)["annotations"] == {"containerd.io/distribution.source.docker.io": "library/a"}


def test_format_detection_and_blob_path():
    assert detect_format("out.tar") == "oci-tar"
    assert detect_format("-") == "oci-tar"
    assert detect_format("out") == "oci-dir"
    assert detect_format("out.tar.d") == "oci-dir"
    assert blob_path(D1) == "blobs/sha256/" + "1" * 64
