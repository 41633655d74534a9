"""A separate writer process for multi-process tests: ingests precomputed vectors through the
one ingest pipeline (as the bulk CLI and the worker do) and prints ``ACK <photo_id> <unix time>``
after each acknowledged photo.

    python -m tests.ingest_writer DATA_DIR PACK EVENT VECTORS.npy PREFIX [--repeat N] [--delay S]
"""

from __future__ import annotations

import sys
import time

import click
import numpy as np

from flask_backend.config import Settings
from flask_backend.ingest import ingest_photo
from flask_backend.services import Services


@click.command()
@click.argument("data_dir")
@click.argument("pack")
@click.argument("event")
@click.argument("vectors")
@click.argument("prefix")
@click.option("--repeat", default=1, help="ingest each photo this many times (idempotency)")
@click.option("--delay", default=0.0, help="seconds between photos")
@click.option("--space", default="v2")
@click.option("--store-url", default="", help="PostgreSQL store (empty: SQLite in DATA_DIR)")
def main(data_dir: str, pack: str, event: str, vectors: str, prefix: str, repeat: int, delay: float, space: str,
         store_url: str) -> None:
    services = Services(Settings.from_env({}, data_dir=data_dir, v2_pack=pack, log_level="WARNING",
                                          store_url=store_url or None))
    for i, vec in enumerate(np.load(vectors)):
        for _ in range(repeat):
            ingest_photo(services, event, f"{prefix}{i:05d}", vectors={space: [vec]})
        print(f"ACK {prefix}{i:05d} {time.time():.6f}", flush=True)
        if delay:
            time.sleep(delay)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
