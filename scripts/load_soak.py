"""The soak of scripts/bench_load.py (``--soak``): after a warm-up, mixed requests from 4 client
threads (embedding matches 70%, selfie matches with real photos at varied sizes 20%, embedding
ingests 10%) and the RSS of each worker every N requests; growth from the first point to the
last must stay under 5%, with no worker restarted."""

from __future__ import annotations

import io
import random
import threading
import time

import numpy as np

from scripts.bench_load import ASSETS, unit_rows
from scripts.load_server import Server


def soak(server: Server, total: int, every: int, workers: int, warmup: int = 10_000) -> None:
    """Mixed requests from 4 threads; RSS of each worker every ``every`` requests."""
    import requests
    from PIL import Image

    rng = random.Random(5)
    faces = sorted(p for p in (ASSETS / "faces").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    selfies = []
    for i, path in enumerate(faces[:12]):  # real photos at varied sizes and aspect ratios
        img = Image.open(path).convert("RGB")
        w, h = img.size
        crop = img.crop((0, 0, w, int(h * min(1.0, 0.55 + 0.04 * i))))
        side = 320 + 110 * i
        crop.thumbnail((side, side))
        buf = io.BytesIO()
        crop.save(buf, "JPEG", quality=88)
        selfies.append(buf.getvalue())
    vecs = unit_rows(np.random.default_rng(4), 500)
    count = {"n": 0}
    lock = threading.Lock()
    curve: list[tuple[int, list[float]]] = []
    statuses: dict[int, int] = {}

    def one(sess, j: int) -> int:
        u = rng.random()
        if u < 0.7:
            body = {"event_id": "e10k", "user_embedding": vecs[j % 500].tolist(), "threshold": 0.0,
                    **({"top_k": 20} if j % 2 else {"mode": "all", "page_size": 100})}
            return sess.post(server.url + "/api/v2/match", json=body, timeout=120).status_code
        if u < 0.9:
            img = selfies[j % len(selfies)]
            r = sess.post(server.url + "/api/v2/match", data={"event_id": "e10k", "top_k": "20"},
                          files={"image": ("s.jpg", img, "image/jpeg")}, timeout=120)
            return 200 if r.status_code in (200, 422) else r.status_code  # 422: a crop without a face
        body = {"event_id": "soak", "photo_id": f"s{j}", "embeddings": vecs[j % 500 : j % 500 + 2].tolist()}
        return sess.post(server.url + "/api/v2/ingest", json=body, timeout=120).status_code

    def client(seed: int, n: int) -> None:
        sess = requests.Session()
        for k in range(n):
            code = one(sess, seed * 1_000_000 + k)
            with lock:
                statuses[code] = statuses.get(code, 0) + 1
                count["n"] += 1
                if count["n"] % every == 0:
                    curve.append((count["n"], server.rss_mb()))
                    print(f"  {count['n']:>6} requests: RSS/worker MB {', '.join(f'{v:.0f}' for v in curve[-1][1])}",
                          flush=True)

    print(f"warm-up: {warmup:,} mixed requests from 4 threads, a new connection each (every worker warms)",
          flush=True)

    def warm_client(seed: int) -> None:
        for j in range(warmup // 4):
            with requests.Session() as fresh:
                one(fresh, 10_000_000 * (seed + 1) + j)

    _in_threads(warm_client, [(k,) for k in range(4)])
    base = server.rss_mb()
    print(f"after warm-up: RSS/worker MB {', '.join(f'{v:.0f}' for v in base)}")
    t0 = time.monotonic()
    _in_threads(client, [(k, total // 4) for k in range(4)])
    end = server.rss_mb()
    print(f"{total} requests in {time.monotonic() - t0:.0f} s; statuses {statuses}")
    growth = [(e - b) / b * 100 for b, e in zip(base, end, strict=False)]
    print(f"RSS growth after warm-up → end, per worker: {', '.join(f'{g:+.1f}%' for g in growth)}")
    ok = all(g < 5.0 for g in growth) and len(end) == workers
    print(f"  [{'PASS' if ok else 'FAIL'}] every worker grew < 5% and none was restarted ({len(end)} workers)")


def _in_threads(target, args: list[tuple]) -> None:
    """``target(*a)`` for each ``a`` of ``args``, each in a thread of its own; returns when all are done."""
    threads = [threading.Thread(target=target, args=a) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
