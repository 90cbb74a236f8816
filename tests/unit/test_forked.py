"""``map_halves`` and ``map_balanced`` give what the sequential loop gives, in order, and fail as it fails."""

from __future__ import annotations

import os
import time

import pytest

from ctrconv import forked as forked_module
from ctrconv.forked import map_balanced, map_halves
from support.sharing import both_take_part


def _children() -> set[int]:
    """This process's children (live or zombie), from /proc: in a whole test session other
    fixtures keep children of their own (daemons, registries), so "no child at all" is no test."""
    found: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                found |= {int(pid) for pid in f.read().split()}
        except OSError:
            continue
    return found


@pytest.fixture(autouse=True)
def no_child_left():
    """Every child ``map_halves`` forks is reaped by the time it returns or raises."""
    before = _children()
    yield
    assert _children() <= before


@pytest.mark.parametrize("n", [1, 2, 5, 101])
def test_results_in_order_second_half_in_a_child(n: int) -> None:
    parent = os.getpid()
    results = map_halves(lambda x: (x * x, os.getpid()), list(range(n)))
    assert [r for r, _ in results] == [x * x for x in range(n)]
    pids = [pid for _, pid in results]
    middle = (n + 1) // 2
    assert set(pids[:middle]) == {parent}
    assert all(pid != parent for pid in pids[middle:])  # really computed elsewhere


class Odd(Exception):
    """An exception with an attribute its ``args`` do not carry (would not survive a pickle)."""

    def __init__(self, message: str, *, item: int) -> None:
        super().__init__(message)
        self.item = item


def _failing_at(bad: int):
    def fn(x: int) -> int:
        if x == bad:
            raise Odd(f"item {x}", item=x)
        return x
    return fn


def test_a_failure_in_the_first_half_is_raised_and_the_child_reaped() -> None:
    with pytest.raises(Odd) as caught:
        map_halves(_failing_at(1), list(range(10)))
    assert caught.value.item == 1


def test_a_failure_in_the_child_is_met_again_here_with_its_attributes() -> None:
    parent = os.getpid()
    seen: list[int] = []

    def fn(x: int) -> int:
        if os.getpid() == parent:
            seen.append(x)
        return _failing_at(7)(x)

    with pytest.raises(Odd) as caught:
        map_halves(fn, list(range(10)))
    assert caught.value.item == 7 and str(caught.value) == "item 7"
    assert seen == [0, 1, 2, 3, 4, 5, 6, 7]  # the first half, then the second up to the failure


def test_a_child_that_dies_leaves_its_half_to_the_parent() -> None:
    parent = os.getpid()

    def fn(x: int) -> int:
        if os.getpid() != parent:
            os._exit(3)
        return -x

    assert map_halves(fn, list(range(6))) == [0, -1, -2, -3, -4, -5]


def test_no_split_beside_another_thread(monkeypatch) -> None:
    """A fork beside a running thread could leave a lock held forever in the child."""
    import threading

    from ctrconv import forked

    monkeypatch.setattr(forked, "usable_cores", lambda: 2)
    assert forked.can_split()
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert not forked.can_split()
    finally:
        release.set()
        other.join()
    monkeypatch.setattr(forked, "usable_cores", lambda: 1)
    assert not forked.can_split()


# --- map_balanced: the items shared out as they are taken


@pytest.mark.parametrize("n", [0, 1, 2, 7, 300])
def test_balanced_results_in_order_from_both_processes(tmp_path, n: int) -> None:
    parent = os.getpid()
    fn = lambda x: (x * x, os.getpid())  # noqa: E731
    results = map_balanced(both_take_part(fn, tmp_path / "m") if n >= 2 else fn, list(range(n)))
    assert [r for r, _ in results] == [x * x for x in range(n)]
    if n >= 2:
        pids = {pid for _, pid in results}
        assert parent in pids and len(pids) == 2  # really shared


@pytest.mark.parametrize("bad", [(0,), (1,), (5, 8), (298, 299), (150, 3)])
def test_balanced_failure_is_the_first_in_order(tmp_path, bad: tuple[int, ...]) -> None:
    """Whichever process meets which failing item first, the failure raised is the sequential
    loop's: the lowest failing item's own exception, attributes and all."""
    def fn(x: int) -> int:
        if x in bad:
            raise Odd(f"item {x}", item=x)
        return x

    with pytest.raises(Odd) as caught:
        map_balanced(both_take_part(fn, tmp_path / "m"), list(range(300)))
    assert caught.value.item == min(bad) and str(caught.value) == f"item {min(bad)}"


def test_balanced_a_child_that_dies_leaves_its_items_here(tmp_path) -> None:
    parent = os.getpid()

    def fn(x: int) -> int:
        if os.getpid() != parent and x % 3 == 2:
            os._exit(3)  # after the items it sent
        return -x

    assert map_balanced(both_take_part(fn, tmp_path / "m"), list(range(50))) == [-x for x in range(50)]


def test_balanced_a_result_that_does_not_pickle_is_computed_here(tmp_path) -> None:
    parent = os.getpid()
    results = map_balanced(both_take_part(lambda x: (x, lambda: x) if os.getpid() != parent else (x, None),
                                                     tmp_path / "m"), list(range(20)))
    assert [x for x, _ in results] == list(range(20))
    assert all(f is None for _, f in results)  # the child's could not come back: redone here


def test_balanced_an_interrupt_here_stops_the_child_at_once(tmp_path) -> None:
    parent = os.getpid()

    def fn(x: int) -> int:
        if os.getpid() == parent:
            raise KeyboardInterrupt
        time.sleep(0.01)
        return x

    with pytest.raises(KeyboardInterrupt):
        map_balanced(both_take_part(fn, tmp_path / "m"), list(range(100)))  # (no child left: the fixture)


def test_balanced_refuses_more_items_than_its_queue_holds() -> None:
    with pytest.raises(ValueError):
        map_balanced(lambda x: x, range(forked_module.MAX_SHARED_ITEMS + 1))


# -- Beside: a function computed in a forked child while this process goes on ---------------


@pytest.mark.parametrize("size", [0, 1, 65_535, 3 << 20])
def test_beside_gives_the_childs_bytes(size: int) -> None:
    """Computed in the child (this process never calls it), whole at any size, more than a
    pipe holds included."""
    parent = os.getpid()
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    here: list[int] = []

    def fn() -> bytes:
        if os.getpid() == parent:
            here.append(1)
        return data

    with forked_module.Beside(fn) as beside:
        assert beside.result() == data and not here
        assert beside.result() == data and here  # asked again: computed here, the child is gone


@pytest.mark.parametrize("how", ["raises", "dies"])
def test_beside_a_child_without_a_result_leaves_it_to_this_process(how: str) -> None:
    parent = os.getpid()

    def fn() -> bytes:
        if os.getpid() != parent:
            if how == "dies":
                os._exit(3)
            raise ValueError("only in the child")
        return b"computed here"

    with forked_module.Beside(fn) as beside:
        assert beside.result() == b"computed here"


def test_beside_a_failure_is_raised_here() -> None:
    def fn() -> bytes:
        raise ValueError("everywhere")

    with forked_module.Beside(fn) as beside, pytest.raises(ValueError, match="everywhere"):
        beside.result()


def test_beside_left_early_kills_and_reaps_the_child(monkeypatch) -> None:
    """An error before the result is taken: the child (still working) is killed, not waited
    for, and reaped (no child left: the fixture)."""
    killed: list[int] = []
    real_kill = forked_module._kill
    monkeypatch.setattr(forked_module, "_kill", lambda pid: killed.append(pid) or real_kill(pid))
    with pytest.raises(KeyboardInterrupt):
        with forked_module.Beside(lambda: time.sleep(30) or b"") as beside:
            child = beside._pid
            raise KeyboardInterrupt
    assert killed == [child]


def test_beside_without_a_process_to_fork_computes_here(monkeypatch) -> None:
    def no_fork():
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(forked_module.os, "fork", no_fork)
    with forked_module.Beside(lambda: b"here") as beside:
        assert beside.result() == b"here"
