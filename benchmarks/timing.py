"""Timing shared by the benchmarks: variants timed in alternation, so a busy machine slows them alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable


def interleaved_medians(
    steps: dict[Hashable, Callable[[], object]], repeats: int, warmups: int = 1
) -> dict[Hashable, float]:
    """Median seconds of each step over ``repeats`` rounds, each round running every step once in turn,
    after ``warmups`` untimed calls of each."""
    for step in steps.values():
        for _ in range(warmups):
            step()
    times: dict[Hashable, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
