"""What FACEMATCH_MIN_FACE_PX and FACEMATCH_MIN_FACE_QUALITY would drop, and what they do to
false matches, on ../shared/faces and the bench event photos.

    python -m scripts.bench_quality --bench /tmp/ev     # photos made by make_event_photos.py
    python -m scripts.bench_quality --make-bench -n 24

Every photo goes through the ingest detection step with both floors at 0, so every face and
its quality is seen. Then, offline, for each candidate floor: faces dropped, and the
matches of a search with every single-person photo of ../shared/faces (its largest face at
selfie size, the default threshold / tolerance) against the faces that stay: a match is
true when the face's photo shows that person (manifest identity / group_members.csv; on bench
photos, the pasted face's source), false otherwise.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import click
import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FACEMATCH_TEST_ASSETS", REPO.parent / "shared")).resolve()
FACES = SHARED / "faces"
TEST_PACK = SHARED / "models" / "det500m_mbf128"
PX_FLOORS = (0, 24, 32, 40, 48, 64, 80)
QUALITY_FLOORS = (0.0, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--bench", "bench_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--make-bench", is_flag=True)
@click.option("-n", "--count", type=click.IntRange(1), default=24, show_default=True)
def main(bench_dir: Path | None, make_bench: bool, count: int) -> None:
    from flask_backend.config import Settings
    from flask_backend.faces import largest
    from flask_backend.faces.base import box_iou
    from flask_backend.imaging import decode_image
    from flask_backend.ingest import detect_spaces
    from flask_backend.match import v2_threshold
    from flask_backend.services import Services

    with tempfile.TemporaryDirectory(prefix="facematch-quality-") as tmp:
        settings = Settings.from_env(data_dir=Path(tmp) / "data", min_face_px=0, min_face_quality=0.0,
                                     **({} if os.environ.get("FACEMATCH_V2_PACK") else {"v2_pack": str(TEST_PACK)}))
        svc = Services(settings)
        spaces = svc.engines.ready_spaces()
        with (FACES / "manifest.csv").open() as f:
            manifest = list(csv.DictReader(f))
        members: dict[str, set[str]] = defaultdict(set)
        with (FACES / "group_members.csv").open() as f:
            for r in csv.DictReader(f):
                members[r["file"]].add(r["identity"])
        # faces: (set, photo, space) -> list of (embedding/raw, quality, identity or None / set)
        faces: list[dict] = []
        for r in manifest:
            img = decode_image((FACES / r["file"]).read_bytes(), max_side=settings.max_decode_side or None)
            who = {r["identity"]} if r["identity"] else members[r["file"]]
            for space, found in detect_spaces(svc, img, spaces, "ingest").items():
                for face in found:
                    faces.append({"set": "shared", "photo": r["file"], "space": space, "face": face, "who": who})
        if make_bench and bench_dir is None:
            bench_dir = Path(tmp) / "bench"
            subprocess.run([sys.executable, str(SHARED / "bench" / "make_event_photos.py"), "--out", str(bench_dir),
                            "-n", str(count)], check=True, stdout=subprocess.DEVNULL)
        if bench_dir is not None:
            truth: dict[str, list] = defaultdict(list)
            with (bench_dir / "truth_faces.csv").open() as f:
                for r in csv.DictReader(f):
                    ident = r["source"].split("__")[0]
                    truth[r["file"]].append(((float(r["x1"]), float(r["y1"]), float(r["x2"]), float(r["y2"])), ident))
            for name in sorted(truth)[:count]:
                img = decode_image((bench_dir / name).read_bytes(), max_side=settings.max_decode_side or None)
                for space, found in detect_spaces(svc, img, spaces, "ingest").items():
                    for face in found:
                        best = max(truth[name], key=lambda t: box_iou(t[0], face.bbox))
                        who = {best[1]} if box_iou(best[0], face.bbox) >= 0.3 else set()
                        faces.append({"set": "bench", "photo": name, "space": space, "face": face, "who": who})
        queries = []
        for r in manifest:
            if not (r["identity"] and r["faces_expected"] == "1"):
                continue
            img = decode_image((FACES / r["file"]).read_bytes(), max_side=settings.max_decode_side or None)
            for space in spaces:
                found = svc.engines.get(space).detect(img, "selfie")
                if found:
                    queries.append((space, r["identity"], r["file"], largest(found)))
        threshold = v2_threshold(settings, svc.space("v2").model_id) if "v2" in spaces else None

        def matches(space: str, q, f) -> bool:
            if space == "v2":
                return float(np.dot(q.embedding, f.embedding)) >= threshold
            return float(np.linalg.norm(q.raw.astype(np.float64) - f.raw.astype(np.float64))) <= settings.v1_tolerance

        # precompute every (query, face) decision once
        pairs = []  # (face index, space, correct?)
        for space, ident, qfile, q in queries:
            for i, f in enumerate(faces):
                if f["space"] != space or (f["set"] == "shared" and f["photo"] == qfile):
                    continue
                if matches(space, q, f["face"]):
                    pairs.append((i, space, ident in f["who"]))

        def report(label: str, keep) -> None:
            cells = []
            for set_name in ("shared", "bench"):
                for space in spaces:
                    idx = [i for i, f in enumerate(faces) if f["set"] == set_name and f["space"] == space]
                    if not idx:
                        continue
                    dropped = sum(not keep(faces[i]["face"]) for i in idx)
                    dropped_true = sum(not keep(faces[i]["face"]) for i in idx if faces[i]["who"])
                    tm = sum(1 for i, sp, ok in pairs if sp == space and ok and faces[i]["set"] == set_name
                             and keep(faces[i]["face"]))
                    fm = sum(1 for i, sp, ok in pairs if sp == space and not ok and faces[i]["set"] == set_name
                             and keep(faces[i]["face"]))
                    cells.append(f"{set_name}/{space}: drop {dropped}/{len(idx)} (labelled {dropped_true}), "
                                 f"true {tm}, false {fm}")
            click.echo(f"  {label:22s} " + " | ".join(cells))

        click.echo("quality per face (all faces found, both floors 0):")
        for set_name in ("shared", "bench"):
            for space in spaces:
                qs = [f["face"].quality for f in faces if f["set"] == set_name and f["space"] == space]
                if not qs:
                    continue
                for field in ("size_px", "sharpness", "score"):
                    v = np.array([getattr(q, field) for q in qs])
                    click.echo(f"  {set_name}/{space} {field:9s} min {v.min():8.2f}  p5 {np.percentile(v, 5):8.2f}  "
                               f"median {np.median(v):8.2f}  max {v.max():8.2f}  (n={len(v)})")
        click.echo("\nFACEMATCH_MIN_FACE_PX (quality floor 0):")
        for px in PX_FLOORS:
            report(f"min_face_px={px}", lambda f, px=px: f.quality.size_px >= px)
        click.echo("\nFACEMATCH_MIN_FACE_QUALITY (size floor 0):")
        for qf in QUALITY_FLOORS:
            report(f"min_face_quality={qf:g}", lambda f, qf=qf: f.quality.score >= qf)
        d = Settings()
        click.echo(f"\ndefaults (min_face_px={d.min_face_px}, min_face_quality={d.min_face_quality:g}):")
        report("defaults", lambda f: f.quality.size_px >= d.min_face_px and f.quality.score >= d.min_face_quality)


if __name__ == "__main__":
    main()
