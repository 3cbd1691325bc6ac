"""Target vs realised noise rates for the noise kinds the paper grid and the CPU benchmark use.

Prints a Markdown table and exits non-zero when any realised rate is more than one point
from its target. Targets: sym 'any' r*(K-1)/K, sym 'other' r, CIFAR-10 asym r/2 on all samples
and r within the five source classes, CIFAR-100 asym r.

    python benchmarks/noise_rates.py [--data ../shared/data/cifar10_subset.npz]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(REPO))

from pipeline.data.noise import CIFAR10_ASYM_MAP, make_noisy_labels  # noqa: E402

SYM_RATES = (0.2, 0.5, 0.8, 0.9)
ASYM_RATE = 0.4
TOLERANCE = 0.01
SEED = 0


@dataclass
class Row:
    labels: str
    setting: str
    scope: str
    n: int
    target: float
    realised: float

    @property
    def ok(self) -> bool:
        return abs(self.realised - self.target) <= TOLERANCE


def sym_rows(name: str, clean: np.ndarray, k: int) -> list[Row]:
    rows = []
    for rate in SYM_RATES:
        for convention in ("any", "other"):
            noisy = make_noisy_labels(clean, k, kind="sym", rate=rate, convention=convention, seed=SEED)
            target = rate * (k - 1) / k if convention == "any" else rate
            rows.append(
                Row(
                    name,
                    f"sym {rate} {convention}",
                    "all",
                    len(clean),
                    target,
                    float(np.mean(noisy != clean)),
                )
            )
    return rows


def cifar10_asym_rows(name: str, clean: np.ndarray) -> list[Row]:
    noisy = make_noisy_labels(clean, 10, kind="asym", rate=ASYM_RATE, asym_map="cifar10", seed=SEED)
    flipped = noisy != clean
    source = np.isin(clean, list(CIFAR10_ASYM_MAP))
    setting = f"asym {ASYM_RATE} cifar10"
    return [
        Row(name, setting, "all (target r/2)", len(clean), ASYM_RATE / 2, float(flipped.mean())),
        Row(name, setting, "5 source classes", int(source.sum()), ASYM_RATE, float(flipped[source].mean())),
    ]


def cifar100_asym_row(name: str, clean: np.ndarray) -> Row:
    noisy = make_noisy_labels(clean, 100, kind="asym", rate=ASYM_RATE, asym_map="cifar100", seed=SEED)
    return Row(
        name, f"asym {ASYM_RATE} cifar100", "all", len(clean), ASYM_RATE, float(np.mean(noisy != clean))
    )


def markdown(rows: list[Row]) -> str:
    lines = [
        "| labels | setting | scope | N | target | realised | diff (pt) | ok |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        diff = 100 * (r.realised - r.target)
        lines.append(
            f"| {r.labels} | {r.setting} | {r.scope} | {r.n} | {r.target:.4f} | {r.realised:.4f} "
            f"| {diff:+.2f} | {'yes' if r.ok else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / ".." / "shared" / "data" / "cifar10_subset.npz")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"error: {args.data} not found; pass --data PATH to cifar10_subset.npz", file=sys.stderr)
        return 2

    with np.load(args.data) as data:
        cifar10 = data["y_train"].astype(np.int64)
    cifar10_name = f"CIFAR-10-5k ({args.data.name})"
    # CIFAR-100-shaped: 500 per class x 100 classes, as in the real training set, shuffled.
    cifar100 = np.random.default_rng(SEED).permutation(np.repeat(np.arange(100), 500))
    cifar100_name = "synthetic CIFAR-100 (500 x 100)"

    rows = [
        *sym_rows(cifar10_name, cifar10, 10),
        *cifar10_asym_rows(cifar10_name, cifar10),
        *sym_rows(cifar100_name, cifar100, 100),
        cifar100_asym_row(cifar100_name, cifar100),
    ]
    print(markdown(rows))
    failed = [r for r in rows if not r.ok]
    print(
        f"\n{len(rows) - len(failed)}/{len(rows)} within ±{100 * TOLERANCE:.0f} pt of target (seed {SEED})."
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
