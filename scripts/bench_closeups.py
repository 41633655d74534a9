"""Face recall per space on close-up, crowd, rotated and bench event photos, and whether each
close-up is found by a search with the person's other photos.

    python -m scripts.bench_closeups                       # builds the sets in a temp dir
    python -m scripts.bench_closeups --bench /tmp/ev -n 24 # + the bench event photos
    python -m scripts.bench_closeups --keep /tmp/closeups  # keep the built photos

The sets come from tests/closeup_fixtures.py (built from ../shared/faces at run time). Every
photo goes through THE ingest pipeline (``ingest_photo``) in every ready space, with the
FACEMATCH_* settings of the environment; recall counts a truth face as found when an indexed
box overlaps it (see ``closeup_fixtures.found``). Matching: each photo of the close-up,
crowd and rotated sets is searched for with each of that person's other photos as a selfie,
at the default threshold / tolerance.
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

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FACEMATCH_TEST_ASSETS", REPO.parent / "shared")).resolve()
FACES = SHARED / "faces"
TEST_PACK = SHARED / "models" / "det500m_mbf128"


def bench_truth(folder: Path, count: int) -> dict[str, list[tuple[float, ...]]]:
    truth: dict[str, list[tuple[float, ...]]] = defaultdict(list)
    with (folder / "truth_faces.csv").open() as f:
        for row in csv.DictReader(f):
            truth[row["file"]].append(tuple(float(row[k]) for k in ("x1", "y1", "x2", "y2")))
    return {n: truth[n] for n in sorted(truth)[:count]}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), help="Write the sets here and keep them.")
@click.option("--bench", "bench_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder made by ../shared/bench/make_event_photos.py (made in a temp dir with --make-bench).")
@click.option("--make-bench", is_flag=True, help="Make the bench event photos in a temp dir too.")
@click.option("-n", "--count", type=click.IntRange(1), default=24, show_default=True, help="Bench photos to use.")
def main(keep: Path | None, bench_dir: Path | None, make_bench: bool, count: int) -> None:
    from flask_backend.config import Settings
    from flask_backend.faces import largest
    from flask_backend.imaging import decode_image
    from flask_backend.ingest import ingest_photo
    from flask_backend.match import find_v1, find_v2, matched_photo_ids, v2_threshold
    from flask_backend.services import Services
    from tests import closeup_fixtures as cf

    with tempfile.TemporaryDirectory(prefix="facematch-closeups-") as tmp:
        work = Path(tmp)
        settings = Settings.from_env(data_dir=work / "data", allow_private_urls=True,
                                     **({} if os.environ.get("FACEMATCH_V2_PACK") else {"v2_pack": str(TEST_PACK)}))
        svc = Services(settings)
        spaces = svc.engines.ready_spaces()
        v2 = svc.engines.get("v2")

        def locate(path: Path):
            return largest(v2.detect(decode_image(path.read_bytes()), "selfie")).bbox

        out = keep or work / "sets"
        click.echo(f"building close-up / crowd / rotated photos in {out} ...", err=True)
        photos = cf.build_sets(FACES, out, locate)
        rows = cf.single_person_rows(FACES)
        if make_bench and bench_dir is None:
            bench_dir = work / "bench"
            subprocess.run([sys.executable, str(SHARED / "bench" / "make_event_photos.py"), "--out", str(bench_dir),
                            "-n", str(count)], check=True, stdout=subprocess.DEVNULL)

        hits: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])  # (kind, space) -> [found, total]
        extra: dict[tuple[str, str], int] = defaultdict(int)  # indexed faces matching no truth face
        for p in photos:
            res = ingest_photo(svc, "closeups", p.file, image=(out / p.file).read_bytes(), spaces=spaces)
            for space, o in res.outcomes.items():
                boxes = [f.bbox for f in o.faces]
                for t in p.boxes:
                    hits[(p.kind, space)][0] += cf.found(t, boxes)
                    hits[(p.kind, space)][1] += 1
                extra[(p.kind, space)] += sum(not any(cf.found(t, [b]) for t in p.boxes) for b in boxes)
        if bench_dir is not None:
            truth = bench_truth(bench_dir, count)
            click.echo(f"ingesting {len(truth)} bench photos ...", err=True)
            for name, tboxes in truth.items():
                res = ingest_photo(svc, "bench", name, image=(bench_dir / name).read_bytes(), spaces=spaces)
                for space, o in res.outcomes.items():
                    boxes = [f.bbox for f in o.faces]
                    hits[("bench", space)][0] += sum(cf.found(t, boxes) for t in tboxes)
                    hits[("bench", space)][1] += len(tboxes)
                    extra[("bench", space)] += sum(not any(cf.found(t, [b]) for t in tboxes) for b in boxes)

        click.echo(f"\nrecall per space (settings from the environment; spaces {spaces})")
        kinds = sorted({k for k, _ in hits}, key=lambda k: ("closeup", "crowd", "rot90", "rot270", "bench").index(k))
        for kind in kinds:
            cells = []
            for space in spaces:
                f, t = hits[(kind, space)]
                cells.append(f"{space} {f}/{t} = {100 * f / t:.1f}% (+{extra[(kind, space)]} other boxes)")
            click.echo(f"  {kind:8s} " + " | ".join(cells))

        # matching: each set photo searched with each of the person's other photos
        queries: dict[tuple[str, str], object] = {}
        for r in rows:
            img = decode_image((FACES / r["file"]).read_bytes(), max_side=settings.max_decode_side or None)
            for space in spaces:
                faces = svc.engines.get(space).detect(img, "selfie")
                if faces:
                    queries[(space, r["file"])] = largest(faces)
        click.echo("\nset photos found by a search with each of the person's other photos (default thresholds)")
        for space in spaces:
            by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # pairs ok, pairs, photos all-ok
            threshold = v2_threshold(settings, svc.space("v2").model_id)
            missed = []
            for p in photos:
                ok_all = True
                for selfie in cf.selfies_for(p, rows):
                    q = queries.get((space, selfie))
                    if q is None:
                        continue
                    if space == "v2":
                        got = matched_photo_ids(svc, find_v2(svc, "closeups", q.embedding, threshold))
                    else:
                        got = matched_photo_ids(svc, find_v1(svc, "closeups", q.raw, settings.v1_tolerance))
                    ok = p.file in got
                    by_kind[p.kind][0] += ok
                    by_kind[p.kind][1] += 1
                    ok_all &= ok
                    if not ok:
                        missed.append(f"{p.file}<-{selfie}")
                by_kind[p.kind][2] += ok_all
            n_photos = defaultdict(int)
            for p in photos:
                n_photos[p.kind] += 1
            cells = [f"{k} pairs {v[0]}/{v[1]}, photos {v[2]}/{n_photos[k]}" for k, v in by_kind.items()]
            click.echo(f"  {space}: " + " | ".join(cells))
            if missed:
                click.echo(f"    missed ({len(missed)}): " + ", ".join(missed[:30]))


if __name__ == "__main__":
    main()
