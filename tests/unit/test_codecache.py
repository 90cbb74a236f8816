"""The stored code of dataclass methods (:mod:`ctrconv.codecache`): classes made from it
behave as classes compiled from their text, the file is written once and then read, a bad
file is ignored, and only the CLI process uses it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: makes classes of every shape the package uses and prints what they do, as JSON
_PROGRAM = """
import json, sys
from pathlib import Path
from ctrconv import codecache
if sys.argv[1] == "cached":
    codecache.install(write=True, path=Path(sys.argv[2]))
import dataclasses
from dataclasses import dataclass, field, InitVar

@dataclass(frozen=True)
class Frozen:
    a: int
    b: str = "x"
    c: tuple = field(default_factory=tuple)

@dataclass
class Plain:
    a: int
    seen: InitVar[int] = 0
    d: dict = field(default_factory=dict, repr=False)
    def __post_init__(self, seen):
        self.d["seen"] = seen

@dataclass(order=True, kw_only=True)
class Ordered:
    k: int
    name: str = field(default="n", compare=False)

@dataclass(slots=True, eq=False)
class Slotted:
    v: float = 1.5

f = Frozen(1)
try:
    f.a = 2
    frozen = False
except dataclasses.FrozenInstanceError:
    frozen = True
p = Plain(3, seen=7)
out = {
    "frozen": frozen, "repr": [repr(f), repr(p), repr(Ordered(k=2)), repr(Slotted())],
    "eq": [Frozen(1) == Frozen(1), Frozen(1) == Frozen(2), Plain(3) == Plain(3)],
    "hash": hash(Frozen(1, "y")) == hash(Frozen(1, "y")), "post_init": p.d,
    "order": sorted([Ordered(k=3), Ordered(k=1)]) == [Ordered(k=1), Ordered(k=3)],
    "defaults": Frozen(1).c, "fresh": Plain(1).d is not Plain(1).d, "slots": Slotted.__slots__,
    "added": None if codecache._installed is None else codecache._installed.added,
}
print(json.dumps(out))
"""


def _run(*args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", _PROGRAM, *args], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_classes_from_stored_code_behave_as_compiled_ones_and_the_file_is_read_the_second_time(tmp_path: Path) -> None:
    path = tmp_path / "pycache" / "methods.marshal"
    plain = _run("plain")
    first = _run("cached", str(path))
    assert path.is_file()  # written at exit: every text was new
    second = _run("cached", str(path))
    assert first["added"] is True and second["added"] is False  # nothing compiled the second time
    for out in (first, second):
        assert {k: v for k, v in out.items() if k != "added"} == {k: v for k, v in plain.items() if k != "added"}
    assert plain["frozen"] and plain["eq"] == [True, False, True] and plain["post_init"] == {"seen": 7}


def test_a_bad_file_is_ignored_and_written_again(tmp_path: Path) -> None:
    import importlib.util

    path = tmp_path / "methods.marshal"
    plain = _run("plain")
    for content in (b"", b"garbage", importlib.util.MAGIC_NUMBER + b"\xff\x00", b"\x00\x00\x0d\x0a" + b"x" * 40,
                    importlib.util.MAGIC_NUMBER + __import__("marshal").dumps({"not code": 1})):
        path.write_bytes(content)
        out = _run("cached", str(path))
        assert out["added"] is True
        assert {k: v for k, v in out.items() if k != "added"} == {k: v for k, v in plain.items() if k != "added"}
        assert _run("cached", str(path))["added"] is False  # rewritten whole


def test_only_the_cli_process_installs_it() -> None:
    code = ("import dataclasses, ctrconv.api, ctrconv.entry; "
            "print('exec' in vars(dataclasses))")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_written_on_request_for_every_module(tmp_path: Path) -> None:
    """``python3 -m ctrconv.codecache`` (the install line's step, as ``compileall``) writes the
    file with the classes of every module and the schema checks, so a first ``export``
    compiles none of its own."""
    from ctrconv import codecache

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    target = codecache.cache_path()
    had = target.read_bytes() if target.exists() else None
    try:
        subprocess.run([sys.executable, "-m", "ctrconv.codecache"], check=True, env=env, timeout=120)
        check = ("import sys; from pathlib import Path; from ctrconv import codecache; "
                 "codecache.install(write=False); import ctrconv.pipeline.export, ctrconv.containerd.records; "
                 "from ctrconv.oci import fastschema as f, validate as v; "
                 "[f.compiled_check(v.SCHEMA_DIR, v._SCHEMA_BASE + s) for s in ('image-manifest.json', 'config.json')]; "
                 "print(codecache._installed.added, len(codecache._installed.codes))")
        out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=env, timeout=60)
        added, count = out.stdout.split()
        assert added == "False" and int(count) > 100, out.stderr
    finally:
        if had is not None:
            target.write_bytes(had)
