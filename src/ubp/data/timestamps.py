"""Implausible timestamps (#16): a buy in 2099 or a visit in 1970 is refused, or dropped on request.

A timestamp is implausible when it is before `earliest` (default 2000-01-01: epoch zero and other
defaults of broken exports) or on a day that follows the bulk of the events after `days_after_bulk`
(default 30) or more empty days. The bulk starts at the median event's day (over all five event files)
and runs on through every later day with events until a gap of more than `days_after_bulk` days:
any number of outliers beyond such a gap is caught, while data with events every few days never is.
The later limit matters most: the split's end date is the latest buy, so one far-future buy would
move both target windows past the data and empty them; cut off by the gap, it moves nothing. Earlier events move no window, so only the `earliest` floor applies to them.
"""
from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass

from ubp.io import UbpError

DROPPED_FILE = "dropped.json"  # written into the canonical directory when `drop` is on


@dataclass(frozen=True)
class TimestampsConfig:
    """params.yaml's `data.timestamps`: the plausible range and what to do with rows outside it."""
    earliest: str = "2000-01-01 00:00:00"  # earlier timestamps are implausible ('YYYY-MM-DD HH:MM:SS')
    days_after_bulk: int = 30  # a longer empty stretch after the bulk: later days are implausible
    drop: bool = False  # false: refuse the data naming the first such row; true: drop them, report the counts

    def __post_init__(self):
        try:
            dt.datetime.strptime(self.earliest, "%Y-%m-%d %H:%M:%S")
        except ValueError:
            raise UbpError(f"params.yaml: data.timestamps.earliest must be 'YYYY-MM-DD HH:MM:SS', "
                           f"got {self.earliest!r}") from None
        if self.days_after_bulk < 1:
            raise UbpError(f"params.yaml: data.timestamps.days_after_bulk must be >= 1, got {self.days_after_bulk}")


def bulk_last_day(day_counts: Counter, gap_days: int) -> dt.date | None:
    """The last day of the bulk (None: no events): from the median event's day, later days with
    events belong to the bulk until one comes more than gap_days after the previous one."""
    days, total = sorted(day_counts), sum(day_counts.values())
    if total == 0:
        return None
    i, seen = 0, day_counts[days[0]]
    while 2 * seen < total:
        i += 1
        seen += day_counts[days[i]]
    while i + 1 < len(days) and (days[i + 1] - days[i]).days <= gap_days:
        i += 1
    return days[i]


def plausible_range(cfg: TimestampsConfig, day_counts: Counter) -> tuple[dt.datetime, dt.datetime | None]:
    """[low, high): timestamps outside are implausible (high None: no events, no upper limit)."""
    low = dt.datetime.strptime(cfg.earliest, "%Y-%m-%d %H:%M:%S")
    plausible = Counter({d: n for d, n in day_counts.items() if d >= low.date()})  # 1970 is not the bulk
    last = bulk_last_day(plausible, cfg.days_after_bulk)
    if last is None:
        return low, None
    return low, dt.datetime.combine(last, dt.time()) + dt.timedelta(days=1 + cfg.days_after_bulk)
