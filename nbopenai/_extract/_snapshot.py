"""``Snapshot``: an extraction's counts at one moment, and its one-line summary.

The runner's tally makes them; every progress view draws them: the text bar and the callbacks
(``_progress``) and the notebook widget (``nbopenai.widgets``), which imports this module alone.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Snapshot"]


@dataclass(frozen=True)
class Snapshot:
    """Counts at one moment. ``failed`` rows have ended in any status but ``ok``."""

    total: int
    done: int
    ok: int
    failed: int
    retrying: int
    cached: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    elapsed_s: float
    limit: int
    finished: bool = False
    label: str = "extract"
    pace: str | None = None  # "paced to 3,000 requests/min and 200,000 tokens/min"
    eta_s: float | None = None  # seconds left at the pace so far
    rows_per_s: float | None = None  # this run's pace so far
    notice: str | None = None  # why rows are waiting: "the API is failing: waiting for it (5 s so far)"

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    def line(self) -> str:
        """``extract 120/1,000 · 118 ok · 2 failed · 3 retrying · 40 from cache · 45,210 tokens · $0.0123 ·
        4.2 s · 28.6 rows/s · ETA 31 s · paced to 3,000 requests/min``."""
        parts = [
            f"{self.label} {self.done:,}/{self.total:,}",
            f"{self.ok:,} ok",
            f"{self.failed:,} failed",
        ]
        if self.retrying:
            parts.append(f"{self.retrying:,} retrying")
        if self.cached:
            parts.append(f"{self.cached:,} from cache")
        parts.append(f"{self.input_tokens + self.output_tokens:,} tokens")
        parts.append(f"${self.cost_usd:.4f}")
        parts.append(f"{self.elapsed_s:.1f} s")
        if self.rows_per_s is not None:
            parts.append(f"{self.rows_per_s:.1f} rows/s")
        if self.eta_s is not None and not self.finished:
            parts.append(f"ETA {_duration(self.eta_s)}")
        if self.pace:
            parts.append(self.pace)
        if self.notice and not self.finished:
            parts.append(self.notice)
        return " · ".join(parts)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
