"""Download an InsightFace model pack with timeouts, then verify it.

    python -m scripts.fetch_models buffalo_l [--root ~/.insightface/models]

The service never downloads anything itself (insightface's own downloader has no
timeout and would hang a request); hosts with internet run this once. The pack is
fetched to a temporary file, unpacked into a temporary directory, checked (expected
file list; sha256 where pinned below, and every file recorded in SHA256SUMS) and only
then renamed into place. ``--verify`` re-checks an installed pack against its SHA256SUMS.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import click
import requests

RELEASE_URL = "https://github.com/deepinsight/insightface/releases/download/model-zoo/{name}.zip"

# Files each pack must hold. sha256 is pinned where we have verified it; the other files
# are recorded on first download (SHA256SUMS) and verified from then on.
PACKS: dict[str, dict[str, str | None]] = {
    "buffalo_l": {
        "det_10g.onnx": None,
        "w600k_r50.onnx": None,
        "1k3d68.onnx": None,
        "2d106det.onnx": None,
        "genderage.onnx": None,
    },
    "buffalo_s": {
        "det_500m.onnx": "5e4447f50245bbd7966bd6c0fa52938c61474a04ec7def48753668a9d8b4ea3a",
        "w600k_mbf.onnx": None,
        "1k3d68.onnx": None,
        "2d106det.onnx": None,
        "genderage.onnx": None,
    },
}
CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify_pack(pack_dir: Path, expected: dict[str, str | None]) -> list[str]:
    """Problems with ``pack_dir`` (empty list when it is complete and intact)."""
    problems = []
    recorded = read_sums(pack_dir / "SHA256SUMS")
    for name, pinned in expected.items():
        path = pack_dir / name
        if not path.is_file():
            problems.append(f"missing {name}")
            continue
        digest = sha256_of(path)
        want = pinned or recorded.get(name)
        if want and digest != want:
            problems.append(f"sha256 mismatch for {name}: {digest} != {want}")
    return problems


def read_sums(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    sums = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            sums[parts[1]] = parts[0]
    return sums


def download(url: str, dest: Path, timeout: tuple[float, float]) -> None:
    with requests.get(url, stream=True, timeout=timeout) as r:
        r.raise_for_status()
        with dest.open("wb") as f:
            for block in r.iter_content(CHUNK):
                f.write(block)


@click.command()
@click.argument("name", type=click.Choice(sorted(PACKS)))
@click.option("--root", type=click.Path(path_type=Path), default=Path("~/.insightface/models").expanduser(),
              show_default=True, help="Folder that holds model packs (FACEMATCH_MODEL_ROOT).")
@click.option("--url", default=None, help="Override the download URL (a mirror).")
@click.option("--connect-timeout", default=10.0, show_default=True)
@click.option("--read-timeout", default=60.0, show_default=True)
@click.option("--verify", "verify_only", is_flag=True, help="Only verify an installed pack.")
def main(name: str, root: Path, url: str | None, connect_timeout: float, read_timeout: float, verify_only: bool) -> None:
    root = root.expanduser()
    target = root / name
    expected = PACKS[name]
    if verify_only or target.is_dir():
        problems = verify_pack(target, expected) if target.is_dir() else [f"{target} does not exist"]
        if problems:
            raise click.ClickException(f"pack {name} at {target} is not valid: " + "; ".join(problems))
        click.echo(f"pack {name} at {target} is complete and matches its checksums")
        return
    url = url or RELEASE_URL.format(name=name)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}-") as tmp:
        zpath = Path(tmp) / f"{name}.zip"
        click.echo(f"downloading {url} (connect timeout {connect_timeout}s, read timeout {read_timeout}s)")
        try:
            download(url, zpath, (connect_timeout, read_timeout))
        except requests.RequestException as exc:
            raise click.ClickException(
                f"could not download pack {name} from {url}: {exc.__class__.__name__}: {exc}. "
                "This host may have no internet access: fetch the pack elsewhere and copy the "
                f"folder to {target} (or point FACEMATCH_V2_PACK at it)."
            ) from None
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(zpath) as zf:
            zf.extractall(unpacked)
        inner = unpacked / name if (unpacked / name).is_dir() else unpacked
        problems = verify_pack(inner, expected)
        if problems:
            raise click.ClickException("downloaded pack failed verification: " + "; ".join(problems))
        sums = "".join(f"{sha256_of(p)}  {p.name}\n" for p in sorted(inner.glob("*.onnx")))
        (inner / "SHA256SUMS").write_text(sums)
        shutil.move(str(inner), str(target))
    click.echo(f"installed {name} at {target}\n{sums}")


if __name__ == "__main__":
    sys.exit(main())
