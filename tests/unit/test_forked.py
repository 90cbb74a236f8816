"""``map_halves`` gives what the sequential loop gives, in order, and fails as it fails."""

from __future__ import annotations

import os

import pytest

from ctrconv.forked import map_halves


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
