"""Run many photos through THE ingest pipeline with downloads overlapping inference.

Three thread pools, one photo flowing through them:

    fetch (``concurrency`` threads)   claim → download (or read the file)      I/O bound
    compute (one per core)            ingest_photo(image=bytes): decode → detect/embed → store
    finish (2 threads)                status write-back, metrics, progress callback

``ingest_photo`` receives the downloaded bytes together with the URL, so it decodes the
bytes and records the URL as the photo's source; nothing else of the pipeline is
re-implemented here. onnxruntime and Pillow's decoder release the GIL, so one compute
thread per core (with ``FACEMATCH_ONNX_THREADS=1``) keeps the cores busy while the fetch
threads wait on the network. At most ``concurrency + 2 x compute`` photos are in flight,
which bounds memory (a 24 MP JPEG is ~9 MB, its decoded copy ~18 MB at 3000 px).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .. import errors, outcomes
from ..errors import ApiError
from ..ingest import choose_spaces, fetch_bytes, ingest_photo
from ..services import Services
from ..store.errors import StorageError
from . import PhotoRef
from .claims import Claim, LocalTracker, PhotoOutcome, Tracker

log = logging.getLogger(__name__)

# Runner outcome → the dashboard's status (skipped and released photos keep their last record).
RECORDED_STATUS = {"done": "done", "no_face": "no_face", "failed": "failed", "retry": "retrying"}


def default_compute_threads(onnx_threads: int = 1) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, onnx_threads))


def indexed_faces(services: Services, ref: PhotoRef, spaces: Sequence[str]) -> int | None:
    """Faces of ``ref`` when every space already holds it from the same source with the
    current model (re-runs skip it), else None."""
    source = ref.source_url
    faces = 0
    for name in spaces:
        space = services.space(name)
        state = services.store.photo_state(ref.event_id, ref.photo_id, name)
        if state is None or state.source_url != source or state.model_id != space.model_id:
            return None
        faces = max(faces, state.faces)
    return faces


@dataclass
class RunStats:
    counts: Counter = field(default_factory=Counter)  # by outcome status
    skipped: Counter = field(default_factory=Counter)  # by reason
    faces: int = 0
    failures: list[PhotoOutcome] = field(default_factory=list)
    stage_seconds: Counter = field(default_factory=Counter)  # summed over photos
    started: float = field(default_factory=time.monotonic)

    @property
    def processed(self) -> int:
        return sum(self.counts[s] for s in ("done", "no_face", "failed", "retry"))


class IngestRunner:
    """Feed ``submit(ref)``; outcomes arrive through ``on_outcome`` (from a finish thread)."""

    def __init__(
        self,
        services: Services,
        *,
        spaces: Sequence[str] | None = None,
        tracker: Tracker | None = None,
        concurrency: int = 4,
        compute_threads: int | None = None,
        on_outcome: Callable[[PhotoOutcome], None] | None = None,
        source_label: str = "cli",
    ) -> None:
        self.services = services
        self.spaces = choose_spaces(services, spaces)  # fails fast (503) when an engine is not ready
        self.tracker = tracker or LocalTracker()
        self.concurrency = max(1, concurrency)
        self.compute_threads = compute_threads or default_compute_threads(services.settings.onnx_threads)
        self.on_outcome = on_outcome
        self.source_label = source_label
        self.stats = RunStats()
        self._fetch = ThreadPoolExecutor(self.concurrency, thread_name_prefix="fetch")
        self._compute = ThreadPoolExecutor(self.compute_threads, thread_name_prefix="compute")
        self._finish = ThreadPoolExecutor(2, thread_name_prefix="finish")
        self._slots = threading.BoundedSemaphore(self.concurrency + 2 * self.compute_threads)
        self._cond = threading.Condition()
        self._in_flight = 0
        self._claims: dict[int, Claim] = {}
        self._stopping = threading.Event()
        self._touched: set[tuple[str, str]] = set()  # (event, space) changed since the last flush

    # -- feeding -------------------------------------------------------------------------
    def _indexed_faces(self, ref: PhotoRef) -> int | None:
        try:
            return indexed_faces(self.services, ref, self.spaces)
        except (ApiError, StorageError):  # e.g. an id the store refuses: the ingest will fail and say why
            return None

    def is_indexed(self, ref: PhotoRef) -> bool:
        return self._indexed_faces(ref) is not None

    def wants(self, ref: PhotoRef) -> tuple[bool, str]:
        """Whether ``ref`` needs work (store + tracker say so), without claiming it."""
        return self.tracker.wants(ref, self.is_indexed(ref))

    def submit(self, ref: PhotoRef, on_wait: Callable[[], None] | None = None) -> bool:
        """Queue one photo (blocks while the pipeline is full, calling ``on_wait`` now and
        then: liveness); False once stopping."""
        while not self._slots.acquire(timeout=0.2):
            if self._stopping.is_set():
                return False
            if on_wait is not None:
                on_wait()
        if self._stopping.is_set():
            self._slots.release()
            return False
        with self._cond:
            self._in_flight += 1
        self._fetch.submit(self._guard, self._fetch_stage, ref)
        return True

    def skip(self, ref: PhotoRef, reason: str) -> None:
        """Record a photo that was not submitted (already indexed, leased elsewhere, ...)."""
        self._record(PhotoOutcome(ref, "skipped", reason=reason))

    # -- stages --------------------------------------------------------------------------
    def _guard(self, stage: Callable, *args: object) -> None:
        try:
            stage(*args)
        except Exception:  # a bug in a stage must not leak the slot or hang drain()
            log.exception("ingest runner stage failed")
            claim = args[0] if isinstance(args[0], Claim) else None
            self._done(claim, claim.ref if claim else args[0])  # type: ignore[arg-type]

    def _fetch_stage(self, ref: PhotoRef) -> None:
        if self._stopping.is_set():
            self._done(None, ref, PhotoOutcome(ref, "skipped", reason="stopped"))
            return
        indexed = self.is_indexed(ref)
        try:
            claim = self.tracker.claim(ref, indexed)
        except Exception as exc:  # Firestore unreachable, contention beyond retries: next pass
            log.warning("could not claim event=%s photo=%s: %s", ref.event_id, ref.photo_id, exc, exc_info=True)
            self._done(None, ref, PhotoOutcome(ref, "skipped", reason="claim_error"))
            return
        if claim is None:
            self._done(None, ref, PhotoOutcome(ref, "skipped", reason="claimed_elsewhere"))
            return
        with self._cond:
            self._claims[id(claim)] = claim
        ref = claim.ref
        faces = self._indexed_faces(ref) if indexed else None
        if faces is not None:  # stored earlier (e.g. a crash before the status write): status only
            status = "done" if faces else "no_face"
            self._finish.submit(self._guard, self._finish_stage, claim,
                                PhotoOutcome(ref, status, faces=faces, reason="reused", attempts=claim.attempts))
            return
        t0 = time.perf_counter()
        try:
            data = self._read_file(ref) if ref.path is not None else fetch_bytes(self.services, ref.url or "")
        except ApiError as exc:
            outcome = PhotoOutcome(ref, "failed", code=exc.code, message=exc.message, attempts=claim.attempts)
            self._finish.submit(self._guard, self._finish_stage, claim, outcome)
            return
        except OSError as exc:
            outcome = PhotoOutcome(ref, "failed", code="unreadable_file", message=exc.strerror or str(exc),
                                   attempts=claim.attempts)
            self._finish.submit(self._guard, self._finish_stage, claim, outcome)
            return
        fetch_s = time.perf_counter() - t0
        self._compute.submit(self._guard, self._compute_stage, claim, data, fetch_s)

    def _read_file(self, ref: PhotoRef) -> bytes:
        assert ref.path is not None
        limit = self.services.settings.max_image_bytes
        if ref.path.stat().st_size > limit:  # never read a huge file into memory to refuse it
            raise errors.too_large(limit)
        return ref.path.read_bytes()

    def _compute_stage(self, claim: Claim, data: bytes, fetch_s: float) -> None:
        ref = claim.ref
        timings = {"fetch": fetch_s}
        try:
            result = ingest_photo(self.services, ref.event_id, ref.photo_id, image=data,
                                  image_url=ref.source_url, spaces=self.spaces)
        except StorageError as exc:  # the data dir, not the photo: pending again, retried next pass
            log.warning("storage fault on event=%s photo=%s: %s (%s); photo stays pending",
                        ref.event_id, ref.photo_id, exc.code, exc.reason)
            from .. import metrics

            metrics.count_storage_error(exc.code, exc.reason)
            self.tracker.release(claim, retry_in=float(self.services.settings.storage_retry_after),
                                 error=f"{exc.code}: {exc.message}")
            self._done(claim, ref, PhotoOutcome(ref, "released", code=exc.code, message=exc.message))
            return
        except ApiError as exc:
            if exc.status == 503:  # the engine, not the photo: give it back untouched
                self.tracker.release(claim)
                self._done(claim, ref, PhotoOutcome(ref, "released", code=exc.code, message=exc.message))
                return
            outcome = PhotoOutcome(ref, "failed", code=exc.code, message=exc.message, attempts=claim.attempts,
                                   timings=timings)
        except Exception as exc:  # an unexpected bug must fail one photo, not the run
            log.exception("ingest crashed on event=%s photo=%s", ref.event_id, ref.photo_id)
            outcome = PhotoOutcome(ref, "failed", code="internal_error", message=f"{type(exc).__name__}: {exc}"[:300],
                                   attempts=claim.attempts, timings=timings)
        else:
            timings["decode"] = result.timings.get("load", 0.0)
            timings["detect_embed"] = result.timings.get("detect_embed", 0.0)
            timings["store"] = result.timings.get("store", 0.0)
            faces = result.faces_indexed
            with self._cond:
                self._touched.update((ref.event_id, space) for space in result.outcomes)
            first = result.outcomes.get("v2") or next(iter(result.outcomes.values()), None)
            outcome = PhotoOutcome(ref, "done" if faces else "no_face", faces=faces, attempts=claim.attempts,
                                   timings=timings, boxes=[tuple(f.bbox) for f in first.faces] if first else [])
        del data
        self._finish.submit(self._guard, self._finish_stage, claim, outcome)

    def _finish_stage(self, claim: Claim, outcome: PhotoOutcome) -> None:
        try:
            self.tracker.finish(claim, outcome)
        except Exception:
            log.exception("status write failed for event=%s photo=%s", outcome.ref.event_id, outcome.ref.photo_id)
        self._done(claim, outcome.ref, outcome)

    def _done(self, claim: Claim | None, ref: PhotoRef, outcome: PhotoOutcome | None = None) -> None:
        if outcome is None:
            outcome = PhotoOutcome(ref, "failed", code="internal_error", message="ingest runner error",
                                   attempts=claim.attempts if claim else 0)
            if claim is not None:
                try:
                    self.tracker.finish(claim, outcome)
                except Exception:
                    log.exception("status write failed for event=%s photo=%s", ref.event_id, ref.photo_id)
        try:
            self._record(outcome)
        finally:
            with self._cond:
                if claim is not None:
                    self._claims.pop(id(claim), None)
                self._in_flight -= 1
                self._cond.notify_all()
            self._slots.release()

    def _record(self, outcome: PhotoOutcome) -> None:
        from .. import metrics

        st = self.stats
        with self._cond:
            st.counts[outcome.status] += 1
            if outcome.status == "skipped":
                st.skipped[outcome.reason or "?"] += 1
            st.faces += outcome.faces if outcome.reason != "reused" else 0
            if outcome.status == "failed":
                st.failures.append(outcome)
            for stage, seconds in outcome.timings.items():
                st.stage_seconds[stage] += seconds
        try:
            metrics.observe_photo(outcome, self.source_label)
        except Exception:
            log.exception("metrics update failed")
        self._record_outcome(outcome)
        if outcome.status != "skipped":
            log.info(
                "photo event=%s photo=%s status=%s faces=%d%s%s",
                outcome.ref.event_id, outcome.ref.photo_id, outcome.status, outcome.faces,
                f" error={outcome.error}" if outcome.code else "",
                f" ms={1000 * sum(outcome.timings.values()):.0f}" if outcome.timings else "",
            )
        if self.on_outcome is not None:
            try:
                self.on_outcome(outcome)
            except Exception:
                log.exception("outcome callback failed")

    def _record_outcome(self, outcome: PhotoOutcome) -> None:
        """The dashboard's record of the photo (flask_backend/outcomes.py), with where it came from
        (a Firestore document: an organizer's retry sets it back to pending)."""
        status = RECORDED_STATUS.get(outcome.status)
        if status is None:
            return
        ref = outcome.ref
        origin_of = getattr(self.tracker, "origin", None)
        outcomes.record(self.services, ref.event_id, ref.photo_id, status, via=self.source_label,
                        faces=outcome.faces, code=outcome.code, message=outcome.message, source_url=ref.source_url,
                        origin=origin_of(ref) if origin_of else None, attempts=outcome.attempts)

    # -- stopping ------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Photos submitted and not finished (queued ones included)."""
        with self._cond:
            return self._in_flight

    @property
    def started(self) -> int:
        """Photos claimed and being worked on (what a stop waits for)."""
        with self._cond:
            return len(self._claims)

    def stop(self) -> None:
        """Take no new photos; photos already claimed carry on."""
        self._stopping.set()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait for every photo in flight; True when none is left."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._in_flight > 0:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(0.5 if left is None else min(0.5, left))
        return True

    def release_in_flight(self) -> int:
        """Give back every claim still in flight (shutdown after the drain timeout)."""
        with self._cond:
            claims = list(self._claims.values())
        for claim in claims:
            self.tracker.release(claim)
        return len(claims)

    def flush_store(self) -> None:
        """Refresh the snapshots of the events this run changed (when due) and fold the WAL,
        so that no attendee's search pays for a snapshot write after a big ingest."""
        with self._cond:
            touched, self._touched = self._touched, set()
        try:
            store = self.services.store
            for event_id, space in sorted(touched):
                try:
                    store.write_snapshot(event_id, space, only_if_due=True)
                except StorageError:
                    raise
                except Exception:  # a cache only: never fail the run for it
                    log.exception("snapshot refresh failed for event=%s space=%s", event_id, space)
            store.checkpoint()
        except StorageError as exc:  # snapshots and the WAL fold are caches / upkeep: next time
            log.warning("store upkeep skipped: %s (%s)", exc.code, exc.reason)

    def close(self, wait: bool = True) -> None:
        self._stopping.set()
        for pool in (self._fetch, self._compute, self._finish):
            pool.shutdown(wait=wait, cancel_futures=not wait)
        if wait:
            self.flush_store()
