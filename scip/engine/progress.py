"""Progress bars of a run's passes, on standard error.

On a terminal a bar redraws in place (at most ten times a second). Into a
file or a pipe (a batch job's log) nothing is redrawn: a pass writes one
line when it ends, and while it runs at most one line per tenth of the work,
and only once half a minute has passed since the last line, so a log file
gets a handful of lines per pass whatever its length. Every line names its
pass (``segment tiles``, ``statistics``, ``cells``, ``features + write``,
``pyramid``...), so the bars of a run with several passes can be told apart.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Bar", "LOG_INTERVAL_S", "DRAW_INTERVAL_S"]

#: Seconds between two lines of a pass written to a file (not a terminal).
LOG_INTERVAL_S = 30.0
#: Seconds between two redraws on a terminal.
DRAW_INTERVAL_S = 0.1


class Bar:
    """A progress bar of ``total`` units of work of one pass.

    Parameters
    ----------
    label : str
        The pass, shown at the start of every line (``"features + write"``).
    total : int
        Units of work (partitions, tasks) the pass has.
    unit : str
        What a unit is, in the plural (``"partitions"``).
    stream : file, optional
        Where to write; standard error by default. Redrawn in place only
        when it is a terminal.
    """

    def __init__(self, label: str, total: int, unit: str = "partitions", stream: TextIO | None = None):
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = 0
        self.start = self._last = time.perf_counter()
        self._logged_tenth = 0
        self._closed = False
        if self.tty:
            self._draw()

    def step(self, n: int = 1) -> None:
        """Count ``n`` more units as done."""
        self.done += n
        now = time.perf_counter()
        if self.tty:
            if now - self._last >= DRAW_INTERVAL_S or self.done >= self.total:
                self._draw()
                self._last = now
            return
        tenth = int(10 * self.done / self.total) if self.total else 10
        if tenth > self._logged_tenth and now - self._last >= LOG_INTERVAL_S and self.done < self.total:
            self._logged_tenth = tenth
            self._last = now
            self.stream.write(self._line() + "\n")
            self.stream.flush()

    def close(self) -> None:
        """End the pass: the final state on its own line."""
        if self._closed:
            return
        self._closed = True
        if self.tty:
            self._draw()
            self.stream.write("\n")
        else:
            self.stream.write(self._line() + "\n")
        self.stream.flush()

    def _line(self) -> str:
        pct = int(100 * self.done / self.total) if self.total else 100
        return (f"scip: {self.label}: {self.done} of {self.total} {self.unit} ({pct}%), "
                f"{time.perf_counter() - self.start:.1f} s")

    def _draw(self) -> None:
        width = 30
        frac = self.done / self.total if self.total else 1.0
        self.stream.write(f"\r{self._line()} [{'#' * int(width * frac):<{width}}]")
        self.stream.flush()

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
