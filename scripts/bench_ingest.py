"""Ingest throughput and face recall: our pipeline (the bulk CLI's runner) vs a naive one.

    python -m scripts.bench_ingest                         # makes 24 event photos in a temp dir
    python -m scripts.bench_ingest --photos /tmp/ev -n 12  # reuse photos made earlier

Photos come from ../shared/bench/make_event_photos.py (6000x4000 JPEGs, 2-6 faces 80-600 px
tall, truth_faces.csv) and are served by a local HTTP server. In one run, on the same
photos, it times:

* naive: requests.get, full-resolution cv2.imdecode, FaceAnalysis.get at det size 640,
  and rewriting the event's FAISS index + metadata JSON after every photo; one photo at a
  time, onnxruntime with its default threads;
* ours 1-pass (``--single-pass``): ours with FACEMATCH_INGEST_LARGE_FACES=0, i.e. one SCRFD
  pass at the ingest size, the ingest before the large-face pass; the printed ratio is ours /
  ours 1-pass (wall and CPU), the cost of finding large faces too;
* ours: IngestRunner exactly as ``scripts.bulk_ingest`` drives it (downloads in parallel,
  one compute thread per core, THE ingest pipeline, the SQLite/FAISS store), with the
  FACEMATCH_* settings from the environment (det size, decode side, onnx threads).

and prints photos/s, faces/s, recall of the pasted faces (IoU >= 0.4 with a detected box)
where the time goes (thread-seconds per stage, so parallel stages can add up to more than
the wall time), and the process CPU seconds per photo (user + system, all threads; the
local HTTP server runs in this process for both pipelines). On a shared box other load
slows the parallel pipeline more than the sequential one: compare the CPU column too.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FACEMATCH_TEST_ASSETS", REPO.parent / "shared")).resolve()
MAKER = SHARED / "bench" / "make_event_photos.py"
TEST_PACK = SHARED / "models" / "det500m_mbf128"
IOU_MIN = 0.4
STAGES = ("fetch", "decode", "detect", "embed", "store")


class StageClock:
    """Thread-seconds per stage, from any number of threads."""

    def __init__(self) -> None:
        self.seconds: Counter = Counter()
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] += seconds

    def wrap(self, stage: str, fn: Callable) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(stage, time.perf_counter() - t0)

        return timed


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads): robust to other load on the box."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def load_truth(folder: Path) -> dict[str, list[tuple[float, ...]]]:
    truth: dict[str, list[tuple[float, ...]]] = defaultdict(list)
    with (folder / "truth_faces.csv").open() as f:
        for row in csv.DictReader(f):
            truth[row["file"]].append(tuple(float(row[k]) for k in ("x1", "y1", "x2", "y2")))
    return dict(truth)


def recall(truth: dict[str, list], found: dict[str, list]) -> tuple[int, int]:
    from flask_backend.faces.base import box_iou

    hit = total = 0
    for name, boxes in truth.items():
        for box in boxes:
            total += 1
            hit += any(box_iou(box, b) >= IOU_MIN for b in found.get(name, []))
    return hit, total


# --------------------------------------------------------------------------- naive
def run_naive(urls: dict[str, str], pack: Path, out_dir: Path) -> dict[str, Any]:
    import cv2
    import faiss
    import numpy as np
    import requests
    from insightface.app import FaceAnalysis

    clock = StageClock()
    app = FaceAnalysis(name=str(pack), providers=["CPUExecutionProvider"], allowed_modules=["detection", "recognition"])
    app.prepare(ctx_id=-1, det_size=(640, 640))
    app.det_model.detect = clock.wrap("detect", app.det_model.detect)
    rec = app.models["recognition"]
    rec.get = clock.wrap("embed", rec.get)
    index = faiss.IndexFlatIP(int(rec.output_shape[-1]))
    meta: list[dict[str, Any]] = []
    found: dict[str, list] = {}
    t0, c0 = time.perf_counter(), cpu_seconds()
    for name, url in urls.items():
        t = time.perf_counter()
        data = requests.get(url, timeout=60).content
        clock.add("fetch", time.perf_counter() - t)
        t = time.perf_counter()
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        clock.add("decode", time.perf_counter() - t)
        faces = app.get(img)
        found[name] = [tuple(float(v) for v in f.bbox) for f in faces]
        t = time.perf_counter()
        if faces:
            index.add(np.stack([f.normed_embedding for f in faces]).astype("float32"))
            meta.extend({"photo_id": name, "bbox": [float(v) for v in f.bbox]} for f in faces)
        faiss.write_index(index, str(out_dir / "naive.faiss"))  # the whole index, every photo
        (out_dir / "naive.json").write_text(json.dumps(meta))
        clock.add("store", time.perf_counter() - t)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return {"wall": wall, "cpu": cpu, "photos": len(urls), "faces": sum(len(v) for v in found.values()),
            "found": found, "stages": clock.seconds}


# --------------------------------------------------------------------------- ours
def run_ours(urls: dict[str, str], data_dir: Path, concurrency: int, compute_threads: int | None,
             **overrides: Any) -> dict[str, Any]:
    from flask_backend.config import Settings
    from flask_backend.services import Services
    from flask_backend.sources import PhotoRef
    from flask_backend.sources.claims import PhotoOutcome
    from flask_backend.sources.runner import IngestRunner

    settings = Settings.from_env(data_dir=data_dir, allow_private_urls=True, **overrides)
    services = Services(settings)
    clock = StageClock()
    engine = services.engines.get("v2")  # loads before the clock starts, as in a running CLI
    detector = getattr(engine, "_det", None)
    if detector is not None and hasattr(engine, "_embed"):  # split detect/embed (instrumentation only)
        detector.detect = clock.wrap("detect", detector.detect)
        engine._embed = clock.wrap("embed", engine._embed)  # type: ignore[attr-defined]
    found: dict[str, list] = {}

    def on_outcome(o: PhotoOutcome) -> None:
        found[o.ref.photo_id] = o.boxes
        for stage in ("fetch", "decode", "store"):
            clock.add(stage, o.timings.get(stage, 0.0))
        if detector is None:
            clock.add("detect", o.timings.get("detect_embed", 0.0))

    runner = IngestRunner(services, spaces=["v2"], concurrency=concurrency, compute_threads=compute_threads,
                          on_outcome=on_outcome, source_label="bench")
    t0, c0 = time.perf_counter(), cpu_seconds()
    for name, url in urls.items():
        runner.submit(PhotoRef("bench", name, url=url))
    runner.drain()
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    runner.close()
    failed = [f"{o.ref.photo_id}: {o.error}" for o in runner.stats.failures]
    if failed:
        raise click.ClickException("our pipeline failed on: " + "; ".join(failed))
    return {"wall": wall, "cpu": cpu, "photos": len(urls), "faces": runner.stats.faces, "found": found,
            "stages": clock.seconds,
            "settings": settings, "compute_threads": runner.compute_threads}


def cpu_ab_run(photos: Path, names: list[str], rounds: int) -> tuple[float, float]:
    """Per-photo CPU seconds of decode + detect + embed on ONE thread, large-face pass off vs
    on, interleaved photo by photo (order alternating by round): other load on the box slows
    both sides alike, so the ratio holds up where the threaded runs' times do not."""
    from flask_backend.config import Settings
    from flask_backend.ingest import detect_spaces
    from flask_backend.services import Services

    svc = {on: Services(Settings.from_env(ingest_large_faces=on)) for on in (False, True)}
    for s in svc.values():
        s.engines.get("v2")  # load outside the clock
    cpu = {False: 0.0, True: 0.0}
    for r in range(rounds):
        for name in names:
            data = (photos / name).read_bytes()
            for on in ((False, True) if r % 2 == 0 else (True, False)):
                t = time.process_time()
                detect_spaces(svc[on], svc[on].decode(data), ["v2"], "ingest")
                cpu[on] += time.process_time() - t
    n = rounds * len(names)
    return cpu[False] / n, cpu[True] / n


# --------------------------------------------------------------------------- report
def row(label: str, r: dict[str, Any], truth: dict[str, list]) -> list[str]:
    hit, total = recall(truth, r["found"])
    busy = sum(r["stages"].values()) or 1.0
    split = [f"{r['stages'][s]:.1f} ({100 * r['stages'][s] / busy:.0f}%)" for s in STAGES]
    return [label, f"{r['photos'] / r['wall']:.3f}", f"{r['faces'] / r['wall']:.2f}",
            f"{hit}/{total} = {100 * hit / total:.1f}%", f"{r['wall']:.1f}", f"{r['cpu'] / r['photos']:.3f}", *split]


def table(rows: list[list[str]]) -> str:
    head = ["pipeline", "photos/s", "faces/s", "recall", "wall s", "cpu s/photo", *[f"{s} s" for s in STAGES]]
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *rows]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--photos", type=click.Path(file_okay=False, path_type=Path),
              help="Folder made by make_event_photos.py (default: make them in a temp dir).")
@click.option("-n", "--count", type=click.IntRange(1), default=24, show_default=True, help="Photos to make / use.")
@click.option("--concurrency", type=click.IntRange(1), default=4, show_default=True, help="Our parallel downloads.")
@click.option("--compute-threads", type=click.IntRange(1), default=None, help="Our compute threads (default: cores).")
@click.option("--skip-naive", is_flag=True, help="Only time our pipeline.")
@click.option("--rounds", type=click.IntRange(1), default=1, show_default=True,
              help="Alternate naive and ours this many times (busy machines); medians are compared.")
@click.option("--cpu-ab", is_flag=True,
              help="Also compare one-thread CPU per photo (decode+detect+embed) with the large-face pass off/on, "
                   "interleaved: the robust figure on a loaded box.")
@click.option("--single-pass", "single_pass", is_flag=True,
              help="Also time ours with FACEMATCH_INGEST_LARGE_FACES=0 (one detector pass, the ingest "
                   "before issue 10) in each round and print the new/old time ratio.")
def main(photos: Path | None, count: int, concurrency: int, compute_threads: int | None, skip_naive: bool,
         rounds: int, single_pass: bool, cpu_ab: bool) -> None:
    """Benchmark ingest throughput and recall against the naive pipeline."""
    from flask_backend.config import Settings
    from tests.http_fixtures import LocalHTTPServer

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="facematch-bench-") as tmp:
        work = Path(tmp)
        if photos is None:
            photos = work / "photos"
            click.echo(f"making {count} event photos with {MAKER} ...", err=True)
            subprocess.run([sys.executable, str(MAKER), "--out", str(photos), "-n", str(count)], check=True,
                           stdout=subprocess.DEVNULL)
        truth = load_truth(photos)
        names = sorted(truth)[:count]
        truth = {n: truth[n] for n in names}
        pack = Settings.from_env().v2_pack_dir
        if not pack.is_dir() and not os.environ.get("FACEMATCH_V2_PACK") and TEST_PACK.is_dir():
            os.environ["FACEMATCH_V2_PACK"] = str(TEST_PACK)  # the small pack the tests use
            pack = TEST_PACK
        if not pack.is_dir():  # never let insightface try to download one
            raise click.ClickException(f"v2 pack not found at {pack}: set FACEMATCH_V2_PACK")
        rows, naive_rates, our_rates, naive_cpu, our_cpu = [], [], [], [], []
        one_wall: list[float] = []
        one_cpu: list[float] = []
        our_wall: list[float] = []
        our_cpu_total: list[float] = []
        with LocalHTTPServer(directory=photos) as srv:
            urls = {n: srv.url("/" + n) for n in names}
            for i in range(1, rounds + 1):
                tag = f" #{i}" if rounds > 1 else ""
                if not skip_naive:
                    click.echo(f"naive pipeline{tag} ...", err=True)
                    naive = run_naive(urls, pack, work)
                    rows.append(row("naive" + tag, naive, truth))
                    naive_rates.append(naive["photos"] / naive["wall"])
                    naive_cpu.append(naive["cpu"] / naive["photos"])
                if single_pass:
                    click.echo(f"our pipeline, one pass{tag} ...", err=True)
                    one = run_ours(urls, work / f"one{i}", concurrency, compute_threads, ingest_large_faces=False)
                    rows.append(row("ours 1-pass" + tag, one, truth))
                    one_wall.append(one["wall"])
                    one_cpu.append(one["cpu"])
                click.echo(f"our pipeline{tag} ...", err=True)
                ours = run_ours(urls, work / f"data{i}", concurrency, compute_threads)
                rows.append(row("ours" + tag, ours, truth))
                our_rates.append(ours["photos"] / ours["wall"])
                our_cpu.append(ours["cpu"] / ours["photos"])
                our_wall.append(ours["wall"])
                our_cpu_total.append(ours["cpu"])
        cpu_ab_figures = cpu_ab_run(photos, names, max(2, rounds)) if cpu_ab else (0.0, 0.0)
    s = ours["settings"]
    cores = len(os.sched_getaffinity(0))
    click.echo(f"\n{len(names)} photos, {sum(map(len, truth.values()))} pasted faces, {cores} cores; ours: "
               f"det_size_ingest={s.v2_det_size_ingest} max_decode_side={s.max_decode_side} "
               f"onnx_threads={s.onnx_threads} concurrency={concurrency} compute_threads={ours['compute_threads']}; "
               f"1-min load average before/after: {load_before:.2f}/{os.getloadavg()[0]:.2f}")
    click.echo(table(rows))
    if cpu_ab:
        off, on = cpu_ab_figures
        click.echo(f"\none-thread CPU per photo (decode+detect+embed), interleaved: large-face pass off {off:.4f} s, "
                   f"on {on:.4f} s, ratio {on / off:.3f}x")
    if one_wall:
        click.echo(f"\ningest time, ours (large-face pass on) / ours 1-pass (medians over {rounds} round(s)): "
                   f"wall {statistics.median(our_wall) / statistics.median(one_wall):.3f}x, "
                   f"CPU {statistics.median(our_cpu_total) / statistics.median(one_cpu):.3f}x")
    if naive_rates:
        ratio = statistics.median(our_rates) / statistics.median(naive_rates)
        click.echo(f"\nours / naive photos/s (medians over {rounds} round(s)): {ratio:.2f}x; "
                   f"CPU seconds per photo: naive {statistics.median(naive_cpu):.3f}, "
                   f"ours {statistics.median(our_cpu):.3f}")


if __name__ == "__main__":
    main()
