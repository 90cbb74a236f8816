"""The process entry's end (:func:`ctrconv.entry._end_process`) and collector pace.

As a process entry, ``main()`` leaves without the interpreter's teardown once its command has
returned: these tests pin what that must still do (exit code, every line of output through a
pipe, ``atexit`` handlers) and when it must not happen (another thread still running, a caller
that passes ``argv``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ctrconv import entry

REPO = Path(__file__).resolve().parents[3]

#: runs ``main()`` as the console script does; argv[1] names a file the checks below write
_DRIVER = """
import atexit, gc, sys, threading, time
out = sys.argv[1]
mode = sys.argv[2]
def report():
    with open(out, "a") as f:
        f.write("atexit %s %s\\n" % (gc.get_threshold()[0], threading.active_count()))
atexit.register(report)
import os
class Teardown:
    # runs when the interpreter clears this module at its teardown (names bound now: the
    # module's globals may be gone by then)
    def __del__(self, write=os.write, fd=os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT)):
        write(fd, b"teardown\\n")
marker = Teardown()
if mode == "thread":
    def late():
        time.sleep(0.5)
        with open(out, "a") as f:
            f.write("thread finished\\n")
    threading.Thread(target=late).start()
sys.argv = ["ctrconv", *sys.argv[3:]]
from ctrconv.entry import main
main()
"""




def _drive(tmp_path: Path, mode: str, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    out = tmp_path / "report.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("CTRCONV_DEBUG", None)
    result = subprocess.run([sys.executable, "-c", _DRIVER, str(out), mode, *args], capture_output=True,
                            text=True, timeout=120, env=env, cwd=tmp_path)
    return result, out.read_text().splitlines() if out.exists() else []


def test_a_listing_through_a_pipe_is_whole_and_atexit_handlers_run(tmp_path: Path, small_root: Path) -> None:
    expected = subprocess.run([sys.executable, "-c", "import sys; from ctrconv.entry import main; main(sys.argv[1:])",
                               "ls", "--root", str(small_root), "--json"], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=tmp_path)
    result, report = _drive(tmp_path, "plain", "ls", "--root", str(small_root), "--json")
    assert result.returncode == 0, result.stderr
    # the same bytes as the path that tears the interpreter down (argv given: no fast end)
    assert expected.returncode == 0 and result.stdout == expected.stdout and '"images"' in result.stdout
    assert report == [f"atexit {entry.GC_YOUNG_THRESHOLD} 1"]  # and no teardown


def test_the_exit_code_of_a_refused_command_is_kept(tmp_path: Path) -> None:
    result, report = _drive(tmp_path, "plain", "ls", "--root", str(tmp_path / "absent"))
    assert result.returncode == 2 and result.stderr.startswith("ctrconv: error: ")  # a usage error
    assert report == [f"atexit {entry.GC_YOUNG_THRESHOLD} 1"]


def test_another_running_thread_gets_the_normal_exit_which_waits_for_it(tmp_path: Path, small_root: Path) -> None:
    result, report = _drive(tmp_path, "thread", "ls", "--root", str(small_root), "-q")
    assert result.returncode == 0, result.stderr
    assert "docker.io/library/busybox" in result.stdout
    # os._exit would have killed the thread; the interpreter's exit joins it, then runs atexit
    assert report == ["thread finished", f"atexit {entry.GC_YOUNG_THRESHOLD} 1", "teardown"]


def test_a_caller_passing_argv_keeps_its_collector_and_gets_system_exit(small_root: Path) -> None:
    import gc
    import signal

    before = gc.get_threshold()
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as exit_info:
            entry.main(["ls", "--root", str(small_root), "-q"])
    finally:
        # main() leaves both signals ignored (as a process about to exit); the test process
        # goes on, and every child it starts would inherit the ignored SIGINT
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert exit_info.value.code == 0
    assert gc.get_threshold() == before
