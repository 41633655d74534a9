"""Long-running photo worker: indexes photos as organizers add them to Firestore.

    python -m workers.photo_worker --firebase-config sa.json                 # every event, forever
    python -m workers.photo_worker --event-id gala --once                    # until nothing is left

Each pass lists the photo documents (all events, or the ``--event-id`` ones), keeps those
that still need work (new, URL changed, lease of a dead worker expired, retry due), and
feeds them to the same runner and pipeline as the bulk CLI; every photo is claimed in a
Firestore transaction first, so any number of workers can run side by side.

A failed photo is retried with exponential backoff (``--retry-base`` x 2^n) up to
``--max-attempts``, then marked ``failed`` with the reason; errors no retry can fix
(not an image, corrupt, too large, bad URL) fail at once. SIGTERM/SIGINT: no new claims,
photos in flight get ``--drain-timeout`` seconds to finish, the rest are given back
(pending), exit 0. Liveness: ``--heartbeat-file`` is rewritten every few seconds, and
under systemd (``Type=notify``) READY/WATCHDOG/STOPPING are sent to $NOTIFY_SOCKET.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import click

from flask_backend import configure_logging, metrics
from flask_backend.config import Settings
from flask_backend.errors import ApiError
from flask_backend.services import Services
from flask_backend.sources import PhotoRef
from flask_backend.sources.claims import LEASE_UNTIL, RETRY_AT, FirestoreTracker, RetryPolicy, now_utc
from flask_backend.sources.firestore import DEFAULT_LAYOUT, FirestoreConfigError, FirestoreSource
from flask_backend.sources.report import summary
from flask_backend.sources.runner import IngestRunner
from flask_backend.store.ids import is_valid_event_id

log = logging.getLogger("facematch.photo_worker")

HEARTBEAT_EVERY = 5.0


def sd_notify(state: str) -> bool:
    """Send ``state`` to systemd's notification socket when run as a Type=notify service."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(addr)
            sock.sendall(state.encode())
        return True
    except OSError:
        log.warning("sd_notify failed", exc_info=True)
        return False


class PhotoWorker:
    def __init__(self, runner: IngestRunner, source: FirestoreSource, *, event_ids: tuple[str, ...],
                 poll_interval: float, once: bool, drain_timeout: float, heartbeat_file: Path | None,
                 summary_interval: float, worker_id: str, mirror_deletes: bool = False) -> None:
        self.runner = runner
        self.mirror_deletes = mirror_deletes
        self.source = source
        self.event_ids = event_ids
        self.poll_interval = poll_interval
        self.once = once
        self.drain_timeout = drain_timeout
        self.heartbeat_file = heartbeat_file
        self.summary_interval = summary_interval
        self.worker_id = worker_id
        self.stop_requested = threading.Event()
        self._stop_at: float | None = None
        self._last_beat = 0.0
        self._last_summary = time.monotonic()
        self._started = time.monotonic()
        self._bad_events: set[str] = set()

    # -- signals and liveness ---------------------------------------------------------------
    def request_stop(self, signum: int, frame: object) -> None:
        if not self.stop_requested.is_set():
            log.info("signal %s: finishing %d photo(s) in flight, taking no new ones", signum, self.runner.in_flight)
            sd_notify("STOPPING=1")
            self._stop_at = time.monotonic()
            self.stop_requested.set()
            self.runner.stop()

    def beat(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_beat >= HEARTBEAT_EVERY:
            self._last_beat = now
            st = self.runner.stats
            if self.heartbeat_file is not None:
                state = {"worker_id": self.worker_id, "pid": os.getpid(), "time": time.time(),
                         "in_flight": self.runner.in_flight, "counts": dict(st.counts), "faces": st.faces,
                         "stopping": self.stop_requested.is_set()}
                tmp = self.heartbeat_file.with_name(self.heartbeat_file.name + ".tmp")
                tmp.write_text(json.dumps(state))
                os.replace(tmp, self.heartbeat_file)
            sd_notify(f"WATCHDOG=1\nSTATUS=in flight {self.runner.in_flight}, done {st.counts['done']}, "
                      f"failed {st.counts['failed']}")
            metrics.WORKER_IN_FLIGHT.set(self.runner.in_flight)
        if self.summary_interval and now - self._last_summary >= self.summary_interval:
            self._last_summary = now
            self.log_summary()

    def log_summary(self) -> None:
        text = summary(self.runner.stats, time.monotonic() - self._started).replace("\n", " | ")
        log.info("summary: %s | in flight %d", text, self.runner.in_flight)

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stop_requested.is_set() and time.monotonic() < end:
            self.beat()
            self.stop_requested.wait(min(1.0, max(0.0, end - time.monotonic())))

    # -- passes ---------------------------------------------------------------------------
    def list_refs(self) -> list[PhotoRef]:
        events = list(self.event_ids) or self.source.events()
        refs: list[PhotoRef] = []
        for event_id in events:
            if not is_valid_event_id(event_id):
                if event_id not in self._bad_events:
                    self._bad_events.add(event_id)
                    log.warning("skipping event %r: not a valid event id (A-Z a-z 0-9 _ . -)", event_id)
                continue
            listed: list[PhotoRef] = []
            for n, ref in enumerate(self.source.photos(event_id), start=1):
                listed.append(ref)
                if n % 300 == 0:  # big events: stay alive for the watchdog while listing
                    self.beat()
            refs.extend(listed)
            if self.mirror_deletes:  # only after a complete listing of the event
                self.forget_deleted(event_id, {ref.photo_id for ref in listed})
            self.beat()
        metrics.WORKER_LAST_POLL.set(time.time())
        return refs

    def forget_deleted(self, event_id: str, listed: set[str]) -> int:
        """Photos deleted from Firestore lose their embeddings here too (biometric data).

        Only with --mirror-deletes: it assumes Firestore is the only source of the event's
        photos (a photo ingested through the API into the same event would be removed too).
        """
        store = self.runner.services.store
        if not store.event_exists(event_id):
            return 0
        gone = sorted({p.photo_id for p in store.list_photos(event_id)} - listed)
        for photo_id in gone:
            removed = store.delete_photo(event_id, photo_id)
            log.info("photo event=%s photo=%s status=deleted faces_removed=%s (gone from Firestore)",
                     event_id, photo_id, sum(removed.values()))
        return len(gone)

    def one_pass(self) -> tuple[int, float | None]:
        """Submit every photo that needs work now. Returns (submitted, seconds until the
        earliest lease expiry / retry of a photo that is not done yet, or None)."""
        refs = self.list_refs()
        random.shuffle(refs)  # several workers: fewer collisions on the same documents
        submitted = 0
        wake: float | None = None
        now = now_utc()
        for ref in refs:
            if self.stop_requested.is_set():
                break
            wanted, reason = self.runner.wants(ref)
            if not wanted:
                if reason in ("leased", "backoff"):
                    at = ref.state.get(LEASE_UNTIL if reason == "leased" else RETRY_AT)
                    if isinstance(at, datetime):
                        left = max(0.0, (at - now).total_seconds())
                        wake = left if wake is None else min(wake, left)
                continue
            if not self.runner.submit(ref, on_wait=self.beat):
                break
            submitted += 1
            self.beat()
        return submitted, wake

    def wait_idle(self) -> None:
        """Wait for the photos in flight; after a stop request, at most ``drain_timeout``."""
        while not self.runner.drain(timeout=1.0):
            self.beat()
            if self._stop_at is not None and time.monotonic() - self._stop_at >= self.drain_timeout:
                released = self.runner.release_in_flight()
                log.warning("drain timeout: gave back %d photo(s) still in flight", released)
                return

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        sd_notify("READY=1\nSTATUS=polling")
        log.info("worker %s started: events=%s poll=%ss once=%s", self.worker_id,
                 ",".join(self.event_ids) or "all", self.poll_interval, self.once)
        self.beat(force=True)
        dirty = False
        while not self.stop_requested.is_set():
            try:
                submitted, wake = self.one_pass()
            except Exception:  # Firestore unreachable etc.: log, wait, try again
                log.exception("listing photos failed; retrying in %ss", self.poll_interval)
                if self.once:
                    self.wait_idle()
                    return 1
                self.sleep(self.poll_interval)
                continue
            self.wait_idle()
            if submitted:
                dirty = True
                continue  # look again at once: more may have arrived, retries may be due
            if dirty:  # idle now: refresh snapshots that are due and fold the WAL
                self.runner.flush_store()
                dirty = False
            if self.once and wake is None:
                break
            self.sleep(self.poll_interval if wake is None else min(self.poll_interval, wake + 0.5))
        self.wait_idle()
        if dirty:
            self.runner.flush_store()
        self.beat(force=True)
        self.log_summary()
        return 0


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--firebase-config", type=click.Path(exists=True, dir_okay=False), envvar="FACEMATCH_FIREBASE_CONFIG",
              help="Firebase service-account JSON (default: GOOGLE_APPLICATION_CREDENTIALS).")
@click.option("--project", envvar="FACEMATCH_FIREBASE_PROJECT", help="Firebase project id (default: from the file).")
@click.option("--layout", default=DEFAULT_LAYOUT, show_default=True, envvar="FACEMATCH_FIREBASE_LAYOUT",
              help="Where photo documents live in Firestore.")
@click.option("--url-field", "url_fields", multiple=True, help="Document field holding the photo URL (repeatable).")
@click.option("--event-id", "event_ids", multiple=True, envvar="FACEMATCH_WORKER_EVENT_IDS",
              help="Only these events (repeatable; default: every event).")
@click.option("--poll-interval", type=click.FloatRange(0.1), default=30.0, show_default=True,
              envvar="FACEMATCH_WORKER_POLL_INTERVAL", help="Seconds between passes when idle.")
@click.option("--once", is_flag=True, help="Exit when every photo is done or failed.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True,
              envvar="FACEMATCH_WORKER_CONCURRENCY", help="Photos downloaded in parallel.")
@click.option("--compute-threads", type=click.IntRange(1, 64), default=None, envvar="FACEMATCH_WORKER_COMPUTE_THREADS",
              help="Photos decoded/detected in parallel (default: cores / FACEMATCH_ONNX_THREADS).")
@click.option("--spaces", envvar="FACEMATCH_WORKER_SPACES", help="Spaces to fill, e.g. v1,v2.")
@click.option("--lease-seconds", type=click.FloatRange(1), default=120.0, show_default=True,
              envvar="FACEMATCH_WORKER_LEASE_SECONDS", help="Claim lease; renewed every third of it.")
@click.option("--max-attempts", type=click.IntRange(1), default=3, show_default=True,
              envvar="FACEMATCH_WORKER_MAX_ATTEMPTS", help="Attempts per photo URL before it is marked failed.")
@click.option("--retry-base", type=click.FloatRange(0), default=60.0, show_default=True,
              envvar="FACEMATCH_WORKER_RETRY_BASE", help="Backoff before the 2nd attempt; doubles each time.")
@click.option("--drain-timeout", type=click.FloatRange(0), default=60.0, show_default=True,
              envvar="FACEMATCH_WORKER_DRAIN_TIMEOUT", help="On SIGTERM, seconds photos in flight get to finish.")
@click.option("--heartbeat-file", type=click.Path(dir_okay=False), envvar="FACEMATCH_WORKER_HEARTBEAT_FILE",
              help="Rewritten every few seconds with the worker's state (liveness for monitoring).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=0, envvar="FACEMATCH_WORKER_METRICS_PORT",
              help="Serve Prometheus metrics on 127.0.0.1:PORT (0: off).")
@click.option("--summary-interval", type=click.FloatRange(0), default=60.0, show_default=True,
              envvar="FACEMATCH_WORKER_SUMMARY_INTERVAL", help="Seconds between summary log lines (0: off).")
@click.option("--worker-id", envvar="FACEMATCH_WORKER_ID", help="Name in claims and logs (default: host:pid).")
@click.option("--mirror-deletes/--no-mirror-deletes", default=False, envvar="FACEMATCH_WORKER_MIRROR_DELETES",
              help="Remove from the store the photos deleted from Firestore (use when Firestore is the "
                   "only source of the watched events' photos).")
def main(firebase_config: str | None, project: str | None, layout: str, url_fields: tuple[str, ...],
         event_ids: tuple[str, ...], poll_interval: float, once: bool, concurrency: int, compute_threads: int | None,
         spaces: str | None, lease_seconds: float, max_attempts: int, retry_base: float, drain_timeout: float,
         heartbeat_file: str | None, metrics_port: int, summary_interval: float, worker_id: str | None,
         mirror_deletes: bool) -> None:
    """Index new Firestore photos continuously (or once, with --once)."""
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:4]}"
    try:
        source = FirestoreSource.open(firebase_config, project, layout, url_fields)
    except FirestoreConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    services = Services(settings)
    tracker = FirestoreTracker(source, worker_id=worker_id, lease_seconds=lease_seconds,
                               retry=RetryPolicy(max_attempts=max_attempts, base_seconds=retry_base))
    try:
        runner = IngestRunner(services, spaces=[s for s in (spaces or "").split(",") if s.strip()] or None,
                              tracker=tracker, concurrency=concurrency, compute_threads=compute_threads,
                              source_label="worker")
    except ApiError as exc:  # no ready engine: systemd restarts us later
        log.error("cannot start: %s: %s", exc.code, exc.message)
        sys.exit(1)
    if metrics_port:
        metrics.serve_worker_metrics(metrics_port)
    worker = PhotoWorker(runner, source, event_ids=event_ids, poll_interval=poll_interval, once=once,
                         drain_timeout=drain_timeout, heartbeat_file=Path(heartbeat_file) if heartbeat_file else None,
                         summary_interval=summary_interval, worker_id=worker_id, mirror_deletes=mirror_deletes)
    code = worker.run()
    tracker.close()
    runner.close(wait=False)
    logging.shutdown()
    os._exit(code)  # threads of a timed-out drain must not keep the process alive


if __name__ == "__main__":
    main()
