"""How busy the machine was during a bench, and with what.

Speeds measured while another process uses the cores are far off, and not
all alike: on this project's 2-core machine kerastl's torch training ran at
1.79x keras-hub's on a quiet machine and 0.73x under load. So the bench
records the load average before and after, and, where the kernel tells
(Linux `/proc/stat`), the CPU time other processes took while it ran: its
own CPU time subtracted from the machine's busy time.
"""

import os
import time

# Other processes' share of all cores above which the results are flagged.
_BUSY_SHARE = 0.1
_STAT = "/proc/stat"


def _busy_seconds():
    """CPU seconds all cores spent busy since boot, or `None` off Linux."""
    try:
        with open(_STAT) as f:
            fields = f.readline().split()
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal (guest counted in user).
    values = [int(value) for value in fields[1:9]]
    busy = sum(values) - values[3] - values[4]
    return busy / os.sysconf("SC_CLK_TCK")


def _own_seconds():
    times = os.times()
    return times.user + times.system


class MachineLoad:
    """Measures the machine's load around a block of timed work.

    Example:
    ```python
    with MachineLoad() as load:
        run_timings()
    print(load.report(), load.warning())
    ```
    """

    def __enter__(self):
        self._before = os.getloadavg()
        self._start = (time.monotonic(), _busy_seconds(), _own_seconds())
        return self

    def __exit__(self, *exc_info):
        self._after = os.getloadavg()
        self._end = (time.monotonic(), _busy_seconds(), _own_seconds())
        return False

    def others_share(self):
        """Other processes' CPU time over the block, as a share of all
        cores' time (0 to 1), or `None` where it cannot be measured."""
        (start, busy_start, own_start) = self._start
        (end, busy_end, own_end) = self._end
        if busy_start is None or busy_end is None or end <= start:
            return None
        others = (busy_end - busy_start) - (own_end - own_start)
        cores = os.cpu_count() or 1
        return min(1.0, max(0.0, others / ((end - start) * cores)))

    def report(self):
        """JSON-ready: `load_average_before` and `_after` (1, 5 and 15
        minutes), `others_cpu_share`, `cores`."""
        share = self.others_share()
        return {
            "load_average_before": [round(v, 2) for v in self._before],
            "load_average_after": [round(v, 2) for v in self._after],
            "others_cpu_share": None if share is None else round(share, 3),
            "cores": os.cpu_count(),
        }

    def warning(self):
        """A sentence saying the results are suspect, or `None`."""
        share = self.others_share()
        cores = os.cpu_count() or 1
        if share is not None and share > _BUSY_SHARE:
            busy = f"other processes used {share:.0%} of the {cores} cores"
        elif share is None and self._before[0] >= 1.0:
            busy = f"the load average was {self._before[0]:.1f} before it"
        else:
            return None
        return (
            f"While the bench ran, {busy}: speeds and ratios measured "
            "under contention can be far off. Rerun on a quiet machine."
        )
