"""The input clock: time runs only while every input partition is known to be caught up."""

from __future__ import annotations

from candlewax.input_clock import InputClock


class Wall:
    def __init__(self) -> None:
        self.ms = 1_000_000.0

    def __call__(self) -> float:
        return self.ms


def tick(clock: InputClock, wall: Wall, part: str, steps: int, every_ms: float = 50) -> None:
    for _ in range(steps):
        wall.ms += every_ms
        clock.caught_up(part)


def test_it_runs_with_wall_time_while_the_input_confirms_it_is_caught_up():
    wall = Wall()
    clock = InputClock(max_gap_ms=250, wall_ms=wall)
    clock.caught_up("p0")
    start = clock.now_ms()
    tick(clock, wall, "p0", 20)  # 1 s of confirmations every 50 ms
    assert clock.now_ms() - start == 1_000


def test_it_stands_still_while_a_partition_is_behind_or_unreachable():
    wall = Wall()
    clock = InputClock(max_gap_ms=250, wall_ms=wall)
    clock.caught_up("p0")
    clock.behind("p1")  # a backlog, or its broker gone
    start = clock.now_ms()
    for _ in range(20):
        wall.ms += 50
        clock.caught_up("p0")
        clock.behind("p1")
    assert clock.now_ms() == start
    tick(clock, wall, "p1", 1)
    tick(clock, wall, "p0", 4)
    assert clock.now_ms() - start == 200  # runs again once both are caught up


def test_a_pause_of_the_process_is_not_counted():
    wall = Wall()
    clock = InputClock(max_gap_ms=250, wall_ms=wall)
    tick(clock, wall, "p0", 4)
    before = clock.now_ms()
    wall.ms += 10_000  # SIGSTOP: nobody runs, nobody confirms
    assert clock.now_ms() == before
    tick(clock, wall, "p0", 4)
    assert clock.now_ms() - before == 150  # the first confirmation after it starts again


def test_without_live_inputs_it_is_wall_time_and_a_closed_partition_holds_nothing_back():
    wall = Wall()
    clock = InputClock(max_gap_ms=250, wall_ms=wall)
    start = clock.now_ms()
    wall.ms += 5_000
    assert clock.now_ms() - start == 5_000
    clock.behind("p0")
    wall.ms += 1_000
    assert clock.now_ms() - start == 5_000
    clock.forget("p0")
    clock.now_ms()
    wall.ms += 1_000
    assert clock.now_ms() - start == 6_000


def test_wall_at_converts_a_reading_to_when_it_may_come_and_never_spins():
    wall = Wall()
    clock = InputClock(max_gap_ms=250, wall_ms=wall)
    now = clock.now_ms()
    assert clock.wall_at(now + 700) == wall.ms + 700
    assert clock.wall_at(now + 3) == wall.ms + 3  # a close due soon is not put off
    assert clock.wall_at(now - 5) == wall.ms + 1
    clock.behind("p0")  # the clock stands still: it is polled every 20 ms, not spun on
    wall.ms += 1_000
    stalled = clock.now_ms()
    assert clock.wall_at(stalled + 3) == wall.ms + 20
    assert clock.wall_at(stalled + 700) == wall.ms + 700
