"""Print the onnxruntime build and its execution providers (GPU install check)."""

from __future__ import annotations

import importlib.metadata as md


def main() -> int:
    import onnxruntime

    builds = [d for d in ("onnxruntime", "onnxruntime-gpu") if _installed(d)]
    providers = onnxruntime.get_available_providers()
    print(f"onnxruntime {onnxruntime.__version__} from {', '.join(builds) or 'unknown'}")
    print("providers:", ", ".join(providers))
    if len(builds) > 1:
        print("WARNING: both onnxruntime and onnxruntime-gpu are installed; the last one installed won")
    return 0 if "CPUExecutionProvider" in providers else 1


def _installed(dist: str) -> bool:
    try:
        md.version(dist)
        return True
    except md.PackageNotFoundError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
