"""Usage the contract refuses in one line (exit 2), or takes, found by a red-team run: empty
paths that meant the current directory, options silently ignored, one input given twice by
another spelling, ``dump`` of a directory or a FIFO (which blocked), and outputs named ``.`` or
near the file-name limit that failed on their temp names."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.small_root import small_root  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[3]


def _one_usage_line(result, text: str) -> None:
    assert result.code == 2, (result.code, result.stderr)
    assert result.stderr.count("\n") == 1 and text in result.stderr, result.stderr


@pytest.fixture(scope="module")
def archive(small_root: Path, tmp_path_factory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("archive") / "x.tar"
    subprocess.run([sys.executable, "-m", "ctrconv", "export", "--root", str(small_root), "--all", "-q", "-o", str(out)],
                   cwd=REPO, check=True)
    return out


def test_empty_paths_name_nothing(cli, small_root: Path, archive: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    monkeypatch.chdir(tmp_path)
    _one_usage_line(cli("import", "--root", "", "-i", str(archive)), "an empty path names nothing")
    _one_usage_line(cli("ls", "--root", ""), "an empty path names nothing")
    _one_usage_line(cli("export", "--root", str(small_root), "--all", "-o", ""), "an empty path names no output")
    assert list(tmp_path.iterdir()) == []  # the current directory was not made a root


def test_options_that_would_be_ignored_are_refused(cli, small_root: Path, archive: Path, tmp_path: Path) -> None:  # noqa: F811
    out = str(tmp_path / "o.tar")
    for option in (["--retries", "3"], ["--retry-delay", "1"], ["-j", "2"], ["--chunk-threshold", "1M"],
                   ["--chunk-size", "1M"]):
        _one_usage_line(cli("export", "--root", str(small_root), "--all", "-o", out, *option), "only for a push")
    _one_usage_line(cli("export", "--root", str(small_root), "--all", "-o", out, "--target-namespace", "k8s.io"),
                    "--target-namespace applies to --format containerd-root only")
    root = str(tmp_path / "root")
    _one_usage_line(cli("import", "--root", root, "-i", str(archive), "--max-layer-size="), "invalid size ''")
    _one_usage_line(cli("import", "--root", root, "-i", str(archive), "--name", ""), "--name: an empty name")
    assert not os.path.exists(out) and not os.path.exists(root)


def test_one_input_by_two_spellings_is_given_twice(cli, archive: Path, tmp_path: Path, monkeypatch) -> None:
    link = tmp_path / "link.tar"
    link.symlink_to(archive)
    monkeypatch.chdir(archive.parent)
    root = str(tmp_path / "root")
    for second in (f"./{archive.name}", f"../{archive.parent.name}/{archive.name}", str(link)):
        _one_usage_line(cli("import", "--root", root, "-i", str(archive), "-i", second), "the same input is given twice")


def test_dump_reads_regular_files_only(cli, tmp_path: Path) -> None:
    _one_usage_line(cli("dump", str(tmp_path)), "is a directory")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = subprocess.run([sys.executable, "-m", "ctrconv", "dump", str(fifo)], cwd=REPO, capture_output=True,
                            text=True, timeout=60)  # (it blocked in open())
    assert result.returncode == 2 and "is not a regular file" in result.stderr, result.stderr
    _one_usage_line(cli("dump", str(tmp_path / "absent.db")), "no such file")
    plain = tmp_path / "plain"
    plain.write_text("x")
    _one_usage_line(cli("ls", "--root", str(plain)), "is not a directory")


def test_outputs_named_dot_or_near_the_name_limit(cli, small_root: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    here = tmp_path / "empty"
    here.mkdir()
    monkeypatch.chdir(here)
    assert cli("export", "--root", str(small_root), "--all", "-q", "--format", "oci-dir", "-o", ".").code == 0
    assert (here / "index.json").is_file()
    long_name = tmp_path / ("a" * 250 + ".tar")
    result = cli("export", "--root", str(small_root), "--all", "-q", "-o", str(long_name))
    assert result.code == 0, result.stderr
    assert long_name.stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir() if "ctrconv-tmp" in p.name] == []


@pytest.mark.parametrize("damage", ["[]", '"x"', "", '{"schemaVersion": 3, "manifests": []}', "nan-size",
                                    "layout-version"])
def test_verify_of_a_layout_with_a_broken_index_reports_a_problem(cli, small_root: Path, tmp_path: Path,  # noqa: F811
                                                                   damage: str) -> None:
    """``verify -i --json`` printed no document when the layout's own index.json or oci-layout
    was broken (one error line, exit 1): it is a problem of the layout, reported as one."""
    layout = tmp_path / "l"
    assert cli("export", "--root", str(small_root), "--all", "-q", "-o", str(layout)).code == 0
    if damage == "layout-version":
        (layout / "oci-layout").write_text('{"imageLayoutVersion":"2.0.0"}')
    elif damage == "nan-size":
        index = (layout / "index.json").read_text()
        (layout / "index.json").write_text(index.replace('"size":', '"size":NaN,"x":', 1))
    else:
        (layout / "index.json").write_text(damage)
    result = cli("verify", "-i", str(layout), "--json")
    assert result.code == 1, result.stderr
    assert result.json["ok"] is False
    assert [p["kind"] for p in result.json["problems"]] == ["invalid-layout"]
    _one_usage_line(cli("verify", "-i", str(tmp_path / "absent")), "no such file")


def test_an_archive_whose_index_names_no_image_says_where_names_come_from(cli, archive: Path, tmp_path: Path) -> None:
    """A docker 25 archive whose index.json entries carry no name while its manifest.json has
    RepoTags: ctr reads it as an OCI layout and imports nothing; the line said "no ... RepoTags"
    as if the RepoTags were missing (found by a red-team run)."""
    import json

    from support.archives import with_index

    def unnamed_entries(index: dict) -> None:
        for entry in index["manifests"]:
            entry.pop("annotations", None)

    manifest_json = json.dumps([{"Config": "x", "RepoTags": ["a:1"], "Layers": []}]).encode()
    unnamed = with_index(archive, tmp_path / "unnamed.tar", unnamed_entries, {"manifest.json": manifest_json})
    result = cli("import", "--root", str(tmp_path / "root"), "-i", str(unnamed), "-q")
    _one_usage_line(result, "an archive with an index.json is an OCI layout")


def test_an_empty_input_or_root_variable_names_nothing(cli, small_root: Path, archive: Path, tmp_path: Path,  # noqa: F811
                                                       monkeypatch) -> None:
    """``-i ""`` read the current directory (``import -i "$ARCHIVES"`` imported every archive
    there), and ``CTRCONV_ROOT=""`` meant the default root, ``/var/lib/containerd`` (click takes
    an empty variable for an unset one); found by a red-team run."""
    monkeypatch.chdir(archive.parent)  # (a directory holding an archive: what "" used to import)
    for args in (("import", "--root", str(tmp_path / "root"), "-i", ""), ("convert", "-i", "", "-o", str(tmp_path / "o.tar")),
                 ("verify", "-i", "")):
        _one_usage_line(cli(*args), "-i: an empty path names nothing")
    assert not (tmp_path / "root").exists()
    monkeypatch.setenv("CTRCONV_ROOT", "")
    for args in (("ls",), ("import", "-i", str(archive)), ("verify",)):
        _one_usage_line(cli(*args), "CTRCONV_ROOT is set but empty")
    assert cli("ls", "--root", str(small_root), "-q").code == 0
    # (a command told to read something else reads no root: a second red-team run)
    assert cli("verify", "-i", str(archive), "-q").code == 0
    assert cli("dump", str(small_root / "io.containerd.metadata.v1.bolt" / "meta.db")).code == 0


def test_json_is_refused_with_an_output_that_leads_to_stdout(cli, small_root: Path, tmp_path: Path) -> None:  # noqa: F811
    """``-o`` a symlink to ``/dev/stdout`` with ``--json``: the tar and the report went to stdout
    together, exit 0 (found by a red-team run). Refused as ``-o -`` is."""
    link = tmp_path / "stdout"
    link.symlink_to("/dev/stdout")
    out = tmp_path / "captured"
    run = subprocess.run([sys.executable, "-m", "ctrconv", "export", "--root", str(small_root), "--all", "--json",
                          "-o", str(link)], cwd=REPO, stdout=open(out, "wb"), stderr=subprocess.PIPE, text=True)
    assert run.returncode == 2 and "--json cannot be combined with -o -" in run.stderr, run.stderr
    assert out.stat().st_size == 0
    assert cli("export", "--root", str(small_root), "--all", "--json", "-q", "-o", os.devnull).code == 0


def test_empty_option_values_and_bad_job_counts_are_usage_errors(cli, small_root: Path, archive: Path,  # noqa: F811
                                                                  tmp_path: Path) -> None:
    """``ls --platform ""`` judged the host platform, ``--authfile ""`` / ``--cert-dir ""`` were
    ignored, ``--target-namespace ""`` meant the source namespace, ``verify -j 0`` and ``-j -3``
    ran (found by a red-team run): one usage line each, as their siblings are."""
    _one_usage_line(cli("ls", "--root", str(small_root), "--platform", ""), "an empty platform names none")
    for flag in ("--authfile", "--cert-dir", "--ca-file"):
        _one_usage_line(cli("import", "--root", str(tmp_path / "r"), "-i", "docker://127.0.0.1:1/x:1", flag, ""),
                        f"{flag}: an empty path names nothing")
    result = cli("export", "--root", str(small_root), "--all", "-f", "containerd-root", "--target-namespace", "",
                 "-o", str(tmp_path / "new"))
    assert result.code == 2 and not (tmp_path / "new").exists(), result.stderr
    for jobs in ("0", "-3"):
        assert cli("verify", "--root", str(small_root), "-j", jobs).code == 2
