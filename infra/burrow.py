"""Consumer-lag evaluation the way LinkedIn's Burrow does it: from a trend, not a threshold.

Pure functions over a sliding window of samples, one window per partition. Each sample holds the
group's committed offset, the partition's log-end offset and when it was taken. The rules
(Burrow's "consumer lag evaluation rules", adapted to offsets sampled by polling, which carry no
commit timestamps):

1. lag is zero now, or was zero at some point in the window: **OK** (the consumer keeps up);
2. the committed offset went backwards: **REWIND**;
3. the committed offset did not move over the whole window while lag was above zero: **STALLED**
   when the group is known to have live members (it commits, but makes no progress), **STOPPED**
   otherwise (nothing consumes: no commit for longer than the window);
4. offsets move but the lag never decreased between two samples: **WARNING** (falling behind);
5. otherwise **OK**.

A window with fewer than two samples and lag above zero cannot show a trend: **ERROR**, as for a
partition that could not be read. A group's verdict is its worst partition's.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise


class Status(enum.Enum):
    """A verdict, in increasing order of severity."""

    OK = 0
    WARNING = 1
    REWIND = 2
    STALLED = 3
    STOPPED = 4
    ERROR = 5

    @property
    def healthy(self) -> bool:
        """Whether nothing needs an operator."""
        return self is Status.OK


@dataclass(frozen=True, slots=True)
class Sample:
    """One observation of a partition for one group: committed and log-end offsets, at ``at`` (unix s).

    ``oldest_unconsumed`` is the record time (unix s) of the first record after the committed
    offset, when there is one and it could be read.
    """

    at: float
    committed: int
    end: int
    oldest_unconsumed: float | None = None

    @property
    def lag(self) -> int:
        """Records not yet consumed."""
        return max(self.end - self.committed, 0)

    @property
    def lag_seconds(self) -> float | None:
        """Age of the oldest record not yet consumed; 0 when caught up, ``None`` when unknown."""
        if self.lag == 0:
            return 0.0
        if self.oldest_unconsumed is None:
            return None
        return max(self.at - self.oldest_unconsumed, 0.0)


def evaluate_partition(window: Sequence[Sample], members_active: bool | None = None) -> Status:
    """The verdict on one partition from its window of samples, oldest first.

    ``members_active``: whether the group has live members (``None``: the broker cannot tell).
    """
    if not window:
        return Status.ERROR
    if window[-1].lag == 0 or any(s.lag == 0 for s in window):
        return Status.OK
    if len(window) < 2:
        return Status.ERROR
    steps = list(pairwise(window))
    if any(b.committed < a.committed for a, b in steps):
        return Status.REWIND
    if all(b.committed == a.committed for a, b in steps):
        return Status.STALLED if members_active else Status.STOPPED
    if all(b.lag >= a.lag for a, b in steps):
        return Status.WARNING
    return Status.OK


def worst(statuses: Iterable[Status]) -> Status:
    """The most severe of ``statuses`` (OK when there are none)."""
    return max(statuses, key=lambda s: s.value, default=Status.OK)


def evaluate_group(windows: dict[int, Sequence[Sample]], members_active: bool | None = None) -> Status:
    """A group's verdict on one topic: its worst partition's."""
    return worst(evaluate_partition(w, members_active) for w in windows.values())
