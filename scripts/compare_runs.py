"""Compare every tensor of two model.safetensors files, bit for bit.

Used to show that a change keeps the default training numerics: train the same run before
and after it (fixed seed, same thread count) and compare. Usage:

    python scripts/compare_runs.py A/model.safetensors B/model.safetensors [more pairs ...]

A run folder may stand for its model.safetensors. Prints one line per pair and exits 1 when
any tensor differs (or a name, shape or dtype is not the same), 0 when all are equal.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


def _model(path: str) -> Path:
    p = Path(path)
    return p / "model.safetensors" if p.is_dir() else p


def compare(a: Path, b: Path) -> list[str]:
    """The names of the tensors that differ between two safetensors files (empty: identical)."""
    ta, tb = load_file(str(a)), load_file(str(b))
    diff = [f"{k} (only in {a})" for k in sorted(set(ta) - set(tb))]
    diff += [f"{k} (only in {b})" for k in sorted(set(tb) - set(ta))]
    for key in sorted(set(ta) & set(tb)):
        x, y = ta[key], tb[key]
        if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x, y):
            diff.append(key)
    return diff


def main(argv: list[str]) -> int:
    if len(argv) < 2 or len(argv) % 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    bad = 0
    for a, b in zip(argv[::2], argv[1::2], strict=True):
        pa, pb = _model(a), _model(b)
        diff = compare(pa, pb)
        n = len(load_file(str(pa)))
        if diff:
            bad += 1
            print(f"DIFFER {pa} {pb}: {len(diff)} of {n} tensors, e.g. {', '.join(diff[:3])}")
        else:
            print(f"EQUAL  {pa} {pb}: all {n} tensors torch.equal")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
