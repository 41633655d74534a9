"""Human-facing progress and summaries for the bulk CLI and the photo worker."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from .runner import RunStats

STAGES = ("fetch", "decode", "detect_embed", "store")


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    """A one-line progress bar on a terminal (photos, faces, rate, ETA); on anything else
    a plain line every ``every`` seconds. Reads the runner's live ``RunStats``."""

    def __init__(self, total: int, stats: RunStats, *, enabled: bool = True, stream: TextIO | None = None,
                 every: float = 10.0) -> None:
        self.total = total
        self.stats = stats
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = 0.5 if self.tty else every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._started = time.monotonic()

    def start(self) -> Progress:
        if self.enabled and self.total:
            self._thread.start()
        return self

    def line(self) -> str:
        st = self.stats
        handled = sum(st.counts.values())
        elapsed = max(1e-6, time.monotonic() - self._started)
        rate = st.processed / elapsed
        left = self.total - handled
        eta = _duration(left / rate) if rate > 0 and left > 0 else "--"
        width = 24
        filled = int(width * handled / self.total) if self.total else width
        bar = "#" * filled + "." * (width - filled)
        return (f"[{bar}] {handled}/{self.total} photos  {st.faces} faces  "
                f"{rate:.2f} photos/s  failed {st.counts['failed']}  ETA {eta}")

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self._draw()

    def _draw(self, final: bool = False) -> None:
        text = self.line()
        if self.tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout=2)
            self._draw(final=True)


def summary(stats: RunStats, elapsed: float, *, listed: int | None = None, max_failures: int = 50) -> str:
    c = stats.counts
    ok, no_face, failed = c["done"], c["no_face"], c["failed"]
    processed = stats.processed
    lines = []
    head = f"{listed} photos listed: " if listed is not None else ""
    lines.append(
        f"{head}{ok} indexed ({stats.faces} faces), {no_face} without a face, {failed} failed"
        + (f", {c['retry']} to retry" if c["retry"] else "")
        + (f", {c['released']} released" if c["released"] else "")
        + f", {c['skipped']} skipped"
    )
    if stats.skipped:
        lines.append("skipped: " + ", ".join(f"{reason.replace('_', ' ')} {n}"
                                             for reason, n in sorted(stats.skipped.items())))
    rate = processed / elapsed if elapsed > 0 else 0.0
    face_rate = stats.faces / elapsed if elapsed > 0 else 0.0
    lines.append(f"elapsed {elapsed:.1f} s, {rate:.2f} photos/s, {face_rate:.1f} faces/s")
    worked = c["done"] + c["no_face"]
    if worked and stats.stage_seconds:
        parts = [f"{s.replace('_', '+')} {stats.stage_seconds[s] / worked:.3f}" for s in STAGES if s in stats.stage_seconds]
        lines.append("mean seconds per photo: " + ", ".join(parts))
    if stats.failures:
        lines.append("failed:")
        for outcome in stats.failures[:max_failures]:
            lines.append(f"  {outcome.ref.event_id}/{outcome.ref.photo_id}  {outcome.error}")
        if len(stats.failures) > max_failures:
            lines.append(f"  ... and {len(stats.failures) - max_failures} more")
    return "\n".join(lines)
