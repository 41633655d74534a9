"""Who works on which photo, and what happened to it: leases and status write-back.

Firestore photo documents get these fields (written by FaceMatch only):

    faceStatus      pending | processing | done | failed
    faceCount       faces indexed (0: no face in the photo)
    faceIndexedAt   server time of the last successful ingest
    faceError       "code: message" of the last failure (None after success)
    faceAttempts    attempts for the current URL
    faceSource      fingerprint of the URL that status is about (a new URL means new work)
    faceLeaseOwner  claim token of the worker holding the photo, faceLeaseUntil its expiry
    faceRetryAt     earliest next attempt after a failure (worker backoff)
    faceWorker      worker id of the last claim (diagnostics)

A photo is claimed in a transaction that re-reads the document, so two workers (on one or
several machines) never hold the same photo; a lease that is not renewed (dead worker)
expires and is taken over. Clocks of worker machines are assumed to agree within a small
fraction of the lease time.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from . import PhotoRef, url_hash

log = logging.getLogger(__name__)

STATUS, COUNT, INDEXED_AT, ERROR = "faceStatus", "faceCount", "faceIndexedAt", "faceError"
ATTEMPTS, SOURCE, LEASE_OWNER, LEASE_UNTIL = "faceAttempts", "faceSource", "faceLeaseOwner", "faceLeaseUntil"
RETRY_AT, WORKER = "faceRetryAt", "faceWorker"
STATUS_FIELDS = (STATUS, COUNT, INDEXED_AT, ERROR, ATTEMPTS, SOURCE, LEASE_OWNER, LEASE_UNTIL, RETRY_AT, WORKER)

PENDING, PROCESSING, DONE, FAILED = "pending", "processing", "done", "failed"

# Failures that another attempt on the same URL cannot fix: failed at once, no backoff.
PERMANENT_CODES = frozenset(
    {"invalid_url", "forbidden_url", "unsupported_image", "corrupt_image", "image_too_large", "empty_image",
     "invalid_event_id", "invalid_photo_id"}
)
RPC_TIMEOUT = 30.0


def now_utc() -> datetime:
    return datetime.now(UTC)


@dataclass
class PhotoOutcome:
    """What happened to one photo. ``status``: done | no_face | failed | retry | skipped | released."""

    ref: PhotoRef
    status: str
    faces: int = 0
    code: str | None = None
    message: str | None = None
    reason: str | None = None  # why skipped (already_indexed, leased, ...) or "reused" when the store had it
    attempts: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    boxes: list[tuple[float, ...]] = field(default_factory=list, repr=False)  # face boxes (first space)

    @property
    def error(self) -> str | None:
        return f"{self.code}: {self.message}" if self.code else None


@dataclass
class Claim:
    ref: PhotoRef
    token: str | None = None
    attempts: int = 1
    lost: bool = False  # the lease was taken over: our status must not be written


def plan(
    state: Mapping[str, Any],
    url: str | None,
    now: datetime,
    *,
    indexed: bool,
    retry_failed: bool = False,
    honor_backoff: bool = True,
) -> tuple[bool, str]:
    """Should this photo be worked on now? ``(yes, reason)``.

    ``indexed``: the store already holds this URL in every chosen space. The store wins
    over a "done" status (a wiped store is refilled); a photo that is indexed but not
    marked done is claimed only to write its status.
    """
    if not url:
        return False, "no_url"
    status = state.get(STATUS)
    if status == PROCESSING:
        until = state.get(LEASE_UNTIL)
        if isinstance(until, datetime) and until > now:
            return False, "leased"
        return True, "lease_expired"
    if state.get(SOURCE) != url_hash(url):
        return True, "new" if status is None else "changed"
    if status == DONE:
        return (False, "already_indexed") if indexed else (True, "not_in_store")
    if status == FAILED:
        return (True, "retry_failed") if retry_failed else (False, "failed_before")
    if status == PENDING and honor_backoff:
        at = state.get(RETRY_AT)
        if isinstance(at, datetime) and at > now:
            return False, "backoff"
    return True, "retry" if state.get(ATTEMPTS) else "new"


class Tracker(Protocol):
    def wants(self, ref: PhotoRef, indexed: bool) -> tuple[bool, str]: ...

    def claim(self, ref: PhotoRef, indexed: bool) -> Claim | None: ...

    def finish(self, claim: Claim, outcome: PhotoOutcome) -> bool: ...

    def release(self, claim: Claim, retry_in: float | None = None, error: str | None = None) -> None: ...

    def close(self) -> None: ...


class LocalTracker:
    """Local sources keep no status: the store alone says what is done."""

    def wants(self, ref: PhotoRef, indexed: bool) -> tuple[bool, str]:
        return (False, "already_indexed") if indexed else (True, "new")

    def claim(self, ref: PhotoRef, indexed: bool) -> Claim | None:
        return Claim(ref)

    def finish(self, claim: Claim, outcome: PhotoOutcome) -> bool:
        return True

    def release(self, claim: Claim, retry_in: float | None = None, error: str | None = None) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3  # attempts per URL before "failed"; 1: fail at once (the CLI)
    base_seconds: float = 60.0  # backoff base * 2**(attempt-1)
    max_seconds: float = 3600.0

    def delay(self, attempts: int) -> float:
        return min(self.max_seconds, self.base_seconds * 2 ** max(0, attempts - 1))


class FirestoreTracker:
    """Claims, lease renewal and status write-back on Firestore photo documents."""

    def __init__(
        self,
        source: Any,  # FirestoreSource
        *,
        worker_id: str,
        lease_seconds: float = 120.0,
        retry: RetryPolicy | None = None,
        retry_failed: bool = False,
        honor_backoff: bool = True,
    ) -> None:
        from google.cloud import firestore

        self._fs = firestore
        self.source = source
        self.client = source.client
        self.worker_id = worker_id
        self.lease = timedelta(seconds=lease_seconds)
        self.retry = retry or RetryPolicy()
        self.retry_failed = retry_failed
        self.honor_backoff = honor_backoff
        self._active: dict[str, Claim] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None  # started by the first claim

    # -- helpers --------------------------------------------------------------------------
    def _doc(self, ref: PhotoRef) -> Any:
        return self.source.photos_collection(ref.event_id).document(ref.photo_id)

    def origin(self, ref: PhotoRef) -> str:
        """Where the photo's status lives, for the dashboard's retry (``retry_pending``)."""
        return FIRESTORE_ORIGIN + self._doc(ref).path

    def _run(self, fn: Any, doc: Any, *args: Any) -> Any:
        """Run ``fn(transaction, doc, *args)`` in a Firestore transaction (retried on contention)."""
        return self._fs.transactional(fn)(self.client.transaction(max_attempts=8), doc, *args)

    def _get(self, tx: Any, doc: Any) -> dict[str, Any] | None:
        snap = doc.get(transaction=tx, timeout=RPC_TIMEOUT)
        return snap.to_dict() if snap.exists else None

    def active(self) -> list[Claim]:
        with self._lock:
            return list(self._active.values())

    # -- Tracker --------------------------------------------------------------------------
    def wants(self, ref: PhotoRef, indexed: bool) -> tuple[bool, str]:
        return plan(ref.state, ref.url, now_utc(), indexed=indexed, retry_failed=self.retry_failed,
                    honor_backoff=self.honor_backoff)

    def claim(self, ref: PhotoRef, indexed: bool) -> Claim | None:
        """Take the photo if it still needs work (fresh read in a transaction), else None."""
        from .firestore import photo_url

        token = f"{self.worker_id}/{uuid.uuid4().hex[:12]}"

        def txn(tx: Any, doc: Any) -> Claim | None:
            data = self._get(tx, doc)
            if data is None:
                return None
            url = photo_url(data, self.source.url_fields)
            now = now_utc()
            ok, _ = plan(data, url, now, indexed=indexed, retry_failed=self.retry_failed,
                         honor_backoff=self.honor_backoff)
            if not ok:
                return None
            same = data.get(SOURCE) == url_hash(url)
            attempts = int(data.get(ATTEMPTS) or 0) + 1 if same else 1
            tx.update(doc, {
                STATUS: PROCESSING, LEASE_OWNER: token, LEASE_UNTIL: now + self.lease,
                ATTEMPTS: attempts, SOURCE: url_hash(url), WORKER: self.worker_id,
            })
            fresh = PhotoRef(ref.event_id, ref.photo_id, url=url, state=data)
            return Claim(fresh, token, attempts)

        claim = self._run(txn, self._doc(ref))
        if claim is not None:
            with self._lock:
                self._active[claim.token] = claim
                if self._renewer is None:
                    self._renewer = threading.Thread(target=self._renew_loop, name="lease-renewer", daemon=True)
                    self._renewer.start()
        return claim

    def _owned_update(self, claim: Claim, updates: dict[str, Any]) -> bool:
        def txn(tx: Any, doc: Any) -> bool:
            data = self._get(tx, doc)
            if data is None or data.get(LEASE_OWNER) != claim.token:
                return False
            tx.update(doc, updates)
            return True

        return bool(self._run(txn, self._doc(claim.ref)))

    def finish(self, claim: Claim, outcome: PhotoOutcome) -> bool:
        """Write the outcome if we still hold the lease; returns False when the lease was lost."""
        cleared = {LEASE_OWNER: None, LEASE_UNTIL: None}
        if outcome.status in ("done", "no_face"):
            updates = {STATUS: DONE, COUNT: outcome.faces, INDEXED_AT: self._fs.SERVER_TIMESTAMP,
                       ERROR: None, RETRY_AT: None, **cleared}
        elif outcome.status in ("failed", "retry"):
            final = (outcome.code in PERMANENT_CODES or claim.attempts >= self.retry.max_attempts)
            outcome.status = "failed" if final else "retry"
            updates = {STATUS: FAILED if final else PENDING, ERROR: outcome.error, **cleared,
                       RETRY_AT: None if final else now_utc() + timedelta(seconds=self.retry.delay(claim.attempts))}
        else:
            raise ValueError(f"cannot finish with status {outcome.status!r}")
        try:
            ok = self._owned_update(claim, updates)
        finally:
            with self._lock:
                self._active.pop(claim.token or "", None)
        if not ok:
            claim.lost = True
            log.warning("lease lost on event=%s photo=%s: status not written", claim.ref.event_id, claim.ref.photo_id)
        return ok

    def release(self, claim: Claim, retry_in: float | None = None, error: str | None = None) -> None:
        """Give the photo back untouched (shutdown): pending again, the attempt not counted.

        ``retry_in``: not before that many seconds (a storage fault: retrying at once would
        only spin), with ``error`` as the reason shown meanwhile."""
        updates = {STATUS: PENDING, LEASE_OWNER: None, LEASE_UNTIL: None, ATTEMPTS: max(0, claim.attempts - 1),
                   RETRY_AT: None if retry_in is None else now_utc() + timedelta(seconds=retry_in)}
        if error is not None:
            updates[ERROR] = error
        try:
            self._owned_update(claim, updates)
        except Exception:  # best effort: an unreleased lease just expires
            log.warning("could not release event=%s photo=%s", claim.ref.event_id, claim.ref.photo_id, exc_info=True)
        finally:
            with self._lock:
                self._active.pop(claim.token or "", None)

    def renew(self) -> None:
        """Extend the lease of every photo in flight (called from the renewer thread)."""
        for claim in self.active():
            try:
                if not self._owned_update(claim, {LEASE_UNTIL: now_utc() + self.lease}):
                    claim.lost = True
            except Exception:
                log.warning("lease renewal failed for event=%s photo=%s", claim.ref.event_id, claim.ref.photo_id,
                            exc_info=True)

    def _renew_loop(self) -> None:
        interval = max(0.5, self.lease.total_seconds() / 3)
        while not self._stop.wait(interval):
            self.renew()

    def close(self) -> None:
        self._stop.set()


FIRESTORE_ORIGIN = "firestore:"


def retry_pending(client: Any, origin: str) -> None:
    """An organizer's retry of a Firestore photo: back to ``pending`` with a fresh attempt count,
    so the next worker pass claims it (at once: no backoff)."""
    if not origin.startswith(FIRESTORE_ORIGIN):
        raise ValueError(f"not a Firestore origin: {origin!r}")
    client.document(origin[len(FIRESTORE_ORIGIN):]).update(
        {STATUS: PENDING, ATTEMPTS: 0, RETRY_AT: None, ERROR: None}, timeout=RPC_TIMEOUT)
