"""Bulk-ingest an event's photos (or every event's) from Firestore, a folder or a CSV/JSON list.

    python -m scripts.bulk_ingest --firebase-config sa.json --event-id gala-2026
    python -m scripts.bulk_ingest --firebase-config sa.json --all-events --concurrency 8
    python -m scripts.bulk_ingest --from-dir ./photos/gala-2026            # event = folder name
    python -m scripts.bulk_ingest --from-dir ./photos --all-events         # one event per sub-folder
    python -m scripts.bulk_ingest --from-csv photos.csv --event-id gala    # photo_id,url rows

Resumable: a photo already in the store from the same URL (same model) is skipped, so a
re-run only does what is left. Firestore photos are claimed like the photo worker does,
so the CLI and running workers never process the same photo. Ctrl-C finishes the photos
in flight, writes their status and stops (a second Ctrl-C gives them back and quits).
Exit status: 0 all went well, 1 some photo failed (listed in the summary), 2 bad usage,
130 interrupted.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from flask_backend import configure_logging, thumbnail_backfill
from flask_backend.config import Settings
from flask_backend.errors import ApiError
from flask_backend.services import Services
from flask_backend.sources import PhotoRef
from flask_backend.sources.claims import FirestoreTracker, RetryPolicy, Tracker
from flask_backend.sources.firestore import DEFAULT_LAYOUT, FirestoreConfigError, FirestoreSource
from flask_backend.sources.local import DirectorySource, ListSource, SourceError
from flask_backend.sources.report import Progress, summary
from flask_backend.sources.runner import IngestRunner
from flask_backend.store.ids import is_valid_event_id

log = logging.getLogger("facematch.bulk_ingest")


def parse_spaces(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [s.strip() for s in value.split(",") if s.strip()]


def open_source(firebase_config: str | None, project: str | None, layout: str, url_fields: Sequence[str],
                from_dir: str | None, from_csv: str | None, event_ids: Sequence[str], all_events: bool) -> Any:
    chosen = [x for x in (from_dir, from_csv) if x]
    if len(chosen) > 1 or (chosen and firebase_config):
        raise click.UsageError("choose one source: --firebase-config, --from-dir or --from-csv")
    try:
        if from_dir:
            return DirectorySource(Path(from_dir), event_id=event_ids[0] if len(event_ids) == 1 else None,
                                   all_events=all_events)
        if from_csv:
            return ListSource(Path(from_csv), event_id=event_ids[0] if len(event_ids) == 1 else None)
        if not (firebase_config or project or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
                or os.environ.get("FIRESTORE_EMULATOR_HOST")):
            raise click.UsageError("choose a source: --firebase-config, --from-dir or --from-csv")
        return FirestoreSource.open(firebase_config, project, layout, url_fields)
    except (SourceError, FirestoreConfigError) as exc:
        raise click.UsageError(str(exc)) from exc


def list_photos(source: Any, event_ids: Sequence[str], all_events: bool) -> tuple[list[str], list[PhotoRef]]:
    events = list(dict.fromkeys(event_ids)) if event_ids else list(source.events())
    refs: list[PhotoRef] = []
    for event_id in events:
        if not is_valid_event_id(event_id):
            log.warning("skipping event %r: not a valid event id (A-Z a-z 0-9 _ . -)", event_id)
            continue
        refs.extend(source.photos(event_id))
    return events, refs


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--event-id", "event_ids", multiple=True, help="Event to ingest (repeatable).")
@click.option("--all-events", is_flag=True, help="Every event of the source.")
@click.option("--firebase-config", type=click.Path(exists=True, dir_okay=False), envvar="FACEMATCH_FIREBASE_CONFIG",
              help="Firebase service-account JSON (default: GOOGLE_APPLICATION_CREDENTIALS).")
@click.option("--project", envvar="FACEMATCH_FIREBASE_PROJECT", help="Firebase project id (default: from the file).")
@click.option("--layout", default=DEFAULT_LAYOUT, show_default=True, envvar="FACEMATCH_FIREBASE_LAYOUT",
              help="Where photo documents live in Firestore.")
@click.option("--url-field", "url_fields", multiple=True,
              help="Document field holding the photo URL (repeatable; default url, imageUrl, image_url, secure_url).")
@click.option("--from-dir", type=click.Path(exists=True, file_okay=False), help="A local folder of photos.")
@click.option("--from-csv", type=click.Path(exists=True, dir_okay=False),
              help="A CSV (photo_id,url[,event_id]) or .json list of photos.")
@click.option("--spaces", help="Spaces to fill, e.g. v1,v2 (default: FACEMATCH_INGEST_SPACES or every ready one).")
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Photos downloaded in parallel.")
@click.option("--compute-threads", type=click.IntRange(1, 64), default=None,
              help="Photos decoded/detected in parallel (default: cores / FACEMATCH_ONNX_THREADS).")
@click.option("--dry-run", is_flag=True, help="List what would be ingested; change nothing.")
@click.option("--retry-failed", is_flag=True, help="Also retry photos whose status is failed.")
@click.option("--thumbnails-only", is_flag=True,
              help="Only make the missing thumbnails of photos already in the store (from their stored URLs).")
@click.option("--lease-seconds", type=click.FloatRange(5), default=120.0, show_default=True,
              help="Firestore claim lease (renewed while a photo is in flight).")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Store directory (default: FACEMATCH_DATA_DIR).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
@click.option("-v", "--verbose", is_flag=True, help="Log one line per photo.")
def main(event_ids: tuple[str, ...], all_events: bool, firebase_config: str | None, project: str | None,
         layout: str, url_fields: tuple[str, ...], from_dir: str | None, from_csv: str | None, spaces: str | None,
         concurrency: int, compute_threads: int | None, dry_run: bool, retry_failed: bool, thumbnails_only: bool,
         lease_seconds: float, data_dir: str | None, progress: bool, verbose: bool) -> None:
    """Ingest every photo of an event (or of all events) into the face index."""
    if event_ids and all_events:
        raise click.UsageError("give --event-id X (repeatable) or --all-events, not both")
    if not event_ids and not all_events and not from_dir:
        raise click.UsageError("give --event-id X (repeatable) or --all-events")
    settings = Settings.from_env(**({"data_dir": Path(data_dir)} if data_dir else {}))
    configure_logging("INFO" if verbose else "WARNING")
    if verbose:
        logging.getLogger("facematch.bulk_ingest").setLevel("INFO")
    if thumbnails_only:
        sys.exit(_thumbnails_only(Services(settings), event_ids, concurrency, dry_run))
    source = open_source(firebase_config, project, layout, url_fields, from_dir, from_csv, event_ids, all_events)
    try:
        events, refs = list_photos(source, event_ids, all_events)
    except Exception as exc:  # Firestore unreachable, no permission, ...
        raise click.ClickException(f"listing photos from {source.name} failed: {exc}") from exc
    click.echo(f"{len(refs)} photos in {len(events)} event(s) from {source.name}", err=True)

    services = Services(settings)
    tracker: Tracker | None = None
    if isinstance(source, FirestoreSource):
        tracker = FirestoreTracker(source, worker_id=f"cli@{socket.gethostname()}:{os.getpid()}",
                                   lease_seconds=lease_seconds, retry=RetryPolicy(max_attempts=1),
                                   retry_failed=retry_failed, honor_backoff=False)
    try:
        runner = IngestRunner(services, spaces=parse_spaces(spaces), tracker=tracker, concurrency=concurrency,
                              compute_threads=compute_threads, source_label="cli")
    except ApiError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from exc
    if dry_run:
        sys.exit(_dry_run(runner, refs))
    sys.exit(_run(runner, refs, progress))


def _thumbnails_only(services: Services, event_ids: Sequence[str], concurrency: int, dry_run: bool) -> int:
    """Backfill thumbnails from the store's own URLs: no photo source is opened."""
    events = list(dict.fromkeys(event_ids)) or services.store.list_events()
    todo = thumbnail_backfill.todo(services, events)
    click.echo(f"{len(todo)} photo(s) without a thumbnail in {len(events)} event(s)", err=True)
    if dry_run:
        for ev, pid, _url in todo:
            click.echo(f"would make a thumbnail for {ev}/{pid}")
        return 0
    stats = thumbnail_backfill.backfill(services, events, concurrency=concurrency)
    click.echo(f"thumbnails made: {stats.made}, failed: {len(stats.failed)}")
    for ev, pid, reason in stats.failed:
        click.echo(f"  {ev}/{pid}: {reason}")
    return 1 if stats.failed else 0


def _dry_run(runner: IngestRunner, refs: list[PhotoRef]) -> int:
    todo = 0
    reasons: dict[str, int] = {}
    for ref in refs:
        wanted, reason = runner.wants(ref)
        todo += wanted
        reasons[reason] = reasons.get(reason, 0) + 1
        if wanted:
            click.echo(f"would ingest {ref.event_id}/{ref.photo_id} ({reason})")
    click.echo(f"dry run: {todo} of {len(refs)} photos would be ingested; "
               + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(reasons.items())), err=True)
    runner.close()
    return 0


def _run(runner: IngestRunner, refs: list[PhotoRef], show_progress: bool) -> int:
    interrupted = {"count": 0}

    def on_sigint(signum: int, frame: object) -> None:
        interrupted["count"] += 1
        if interrupted["count"] == 1:
            runner.stop()
            click.echo(f"\nstopping after the {runner.started} photo(s) in flight (Ctrl-C again to quit now)",
                       err=True)
        else:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    bar = Progress(len(refs), runner.stats, enabled=show_progress).start()
    started = time.monotonic()
    try:
        for n, ref in enumerate(refs):
            wanted, reason = runner.wants(ref)
            if not wanted:
                runner.skip(ref, reason)
                continue
            if not runner.submit(ref):
                for rest in refs[n:]:
                    runner.skip(rest, "stopped")
                break
        while not runner.drain(timeout=0.5):
            pass
    except KeyboardInterrupt:
        released = runner.release_in_flight()
        click.echo(f"\ninterrupted: {released} photo(s) in flight given back", err=True)
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.stop()
    elapsed = time.monotonic() - started
    if runner.tracker is not None:
        runner.tracker.close()
    runner.close(wait=not interrupted["count"] > 1)
    click.echo(summary(runner.stats, elapsed, listed=len(refs)))
    if interrupted["count"] > 1:
        # "quit now": the photos in flight were given back, but their downloads still hold
        # pool threads that the interpreter would wait for at exit (up to the read timeout).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    if interrupted["count"]:
        return 130
    # released: not stored (storage fault, engine not ready) and still to do: not a success either
    return 1 if runner.stats.counts["failed"] or runner.stats.counts["released"] else 0


if __name__ == "__main__":
    main()
