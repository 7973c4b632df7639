"""The soak benchmark's memory figures (the benchmark itself runs for minutes: not a test)."""

from __future__ import annotations

import os

import pytest

from benchmarks.soak import memory_figures, rss_mib


def test_a_flat_series_has_no_growth_and_a_rising_one_its_slope() -> None:
    flat = memory_figures([(t, 500.0) for t in range(0, 600, 10)])
    assert flat["rss_growth_mib"] == 0 and flat["rss_slope_mib_per_h"] == 0
    rising = memory_figures([(t, 500.0 + t / 60) for t in range(0, 3600, 60)])  # 1 MiB/min
    assert rising["rss_slope_mib_per_h"] == pytest.approx(60.0, abs=0.1)
    assert rising["rss_growth_mib"] > 40 and rising["rss_max_mib"] == rising["rss_end_mib"]
    with pytest.raises(ValueError):
        memory_figures([(0.0, 1.0)])


def test_rss_of_this_process_is_read_from_proc() -> None:
    assert 1 < rss_mib(os.getpid()) < 100_000
