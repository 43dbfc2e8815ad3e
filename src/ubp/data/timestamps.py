"""Implausible timestamps (#16): a buy in 2099 or a visit in 1970 is refused, or dropped on request.

A timestamp is implausible when it is before `earliest` (default 2000-01-01: epoch-zero and other
defaults of broken exports) or at least `days_after_bulk` days after the last day of the bulk of the
events. The bulk is every event but the latest ceil(0.1%) of them (at least one, so a single stray
event is never its own bulk), counted per calendar day over all five event files. The later limit
matters most: the split's end date is the latest buy, so one far-future buy would move both target
windows past the data and empty them. A week lets real data's last days through while no outlier
can shift the windows by more than half of one.
"""
from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from dataclasses import dataclass

from ubp.io import UbpError

BULK_SHARE = 0.001  # share of the latest events left out of the bulk
DROPPED_FILE = "dropped.json"  # written into the canonical directory when `drop` is on


@dataclass(frozen=True)
class TimestampsConfig:
    """params.yaml's `data.timestamps`: the plausible range and what to do with rows outside it."""
    earliest: str = "2000-01-01 00:00:00"  # earlier timestamps are implausible ('YYYY-MM-DD HH:MM:SS')
    days_after_bulk: int = 7  # this many days after the bulk's last day, and later, are implausible
    drop: bool = False  # false: refuse the data naming the first such row; true: drop them, report the counts

    def __post_init__(self):
        try:
            dt.datetime.strptime(self.earliest, "%Y-%m-%d %H:%M:%S")
        except ValueError:
            raise UbpError(f"params.yaml: data.timestamps.earliest must be 'YYYY-MM-DD HH:MM:SS', "
                           f"got {self.earliest!r}") from None
        if self.days_after_bulk < 1:
            raise UbpError(f"params.yaml: data.timestamps.days_after_bulk must be >= 1, got {self.days_after_bulk}")


def bulk_last_day(day_counts: Counter) -> dt.date | None:
    """The latest day once the latest ceil(BULK_SHARE x events) events are left out (None: no events)."""
    total = sum(day_counts.values())
    if total == 0:
        return None
    left_out = max(1, math.ceil(BULK_SHARE * total))
    later = 0
    for day in sorted(day_counts, reverse=True):
        later += day_counts[day]
        if later > left_out:
            return day
    return min(day_counts)  # fewer events than left out: the bulk is the first day


def plausible_range(cfg: TimestampsConfig, day_counts: Counter) -> tuple[dt.datetime, dt.datetime | None]:
    """[low, high): timestamps outside are implausible (high None: no events, no upper limit)."""
    low = dt.datetime.strptime(cfg.earliest, "%Y-%m-%d %H:%M:%S")
    plausible = Counter({d: n for d, n in day_counts.items() if d >= low.date()})  # 1970 is not the bulk
    last = bulk_last_day(plausible)
    if last is None:
        return low, None
    return low, dt.datetime.combine(last, dt.time()) + dt.timedelta(days=1 + cfg.days_after_bulk)
