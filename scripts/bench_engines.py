"""Per-photo decode + detect + embed time of each engine, with and without downscaling.

    .venv/bin/python -m scripts.bench_engines [--assets ../shared] [--event-photos 4] [--repeat 3]

Runs on the labelled photos of ``<assets>/faces`` (and optionally on 6000x4000 event photos
made by ``<assets>/bench/make_event_photos.py``) and prints, side by side in one run, the
median per-photo time and the faces found, for:
  downscaled — the service's defaults (decode at <= FACEMATCH_MAX_DECODE_SIDE with JPEG draft
               mode, detector copies at their working sizes);
  full       — decode at full resolution and let every engine see every pixel.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from flask_backend.config import Settings
from flask_backend.faces import Engines
from flask_backend.imaging import decode_image

REPO = Path(__file__).resolve().parent.parent


def modes(base: Settings) -> dict[str, Settings]:
    return {
        "downscaled": base,
        "full": base.replace(max_decode_side=0, v2_work_side=100_000, v1_detect_side=100_000),
    }


def time_photos(settings: Settings, engines: Engines, photos: list[Path], repeat: int) -> dict[str, tuple[float, int]]:
    """{space: (median seconds per photo, faces found)} — decode included in each."""
    out = {}
    for space in ("v1", "v2"):
        engine = engines.get(space)
        per_photo, faces = [], 0
        for path in photos:
            data = path.read_bytes()
            runs = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                img = decode_image(data, max_side=settings.max_decode_side or None)
                found = engine.detect(img, "ingest")
                runs.append(time.perf_counter() - t0)
            per_photo.append(min(runs))
            faces += len(found)
        out[space] = (statistics.median(per_photo), faces)
    return out


@click.command()
@click.option("--assets", type=click.Path(path_type=Path), default=REPO.parent / "shared", show_default=True)
@click.option("--event-photos", default=0, show_default=True, help="also time N generated 6000x4000 event photos")
@click.option("--repeat", default=3, show_default=True, help="runs per photo (the fastest counts)")
def main(assets: Path, event_photos: int, repeat: int) -> None:
    base = Settings.from_env(v2_pack=str(assets / "models" / "det500m_mbf128"))
    sets = {"shared/faces": sorted(p for p in (assets / "faces").iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})}
    tmp = None
    if event_photos:
        tmp = tempfile.TemporaryDirectory()
        subprocess.run([sys.executable, str(assets / "bench" / "make_event_photos.py"), "--out", tmp.name,
                        "-n", str(event_photos)], check=True, capture_output=True)
        sets["event 6000x4000"] = sorted(Path(tmp.name).glob("*.jpg"))
    print(f"cores: {os.cpu_count()}, onnx threads: {base.onnx_threads}, repeat: {repeat} (fastest run per photo)")
    print(f"{'photos':<22}{'mode':<12}{'v1 median':>11}{'v1 faces':>10}{'v2 median':>11}{'v2 faces':>10}")
    for label, photos in sets.items():
        rows = {}
        for mode, settings in modes(base).items():
            rows[mode] = time_photos(settings, Engines(settings), photos, repeat)
            r = rows[mode]
            print(f"{label + f' ({len(photos)})':<22}{mode:<12}{r['v1'][0] * 1000:>9.0f}ms{r['v1'][1]:>10}"
                  f"{r['v2'][0] * 1000:>9.0f}ms{r['v2'][1]:>10}")
        speed = {s: rows["full"][s][0] / rows["downscaled"][s][0] for s in ("v1", "v2")}
        print(f"{'':<22}{'speed-up':<12}{speed['v1']:>10.2f}x{'':>10}{speed['v2']:>10.2f}x")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
