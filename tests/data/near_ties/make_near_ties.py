"""Write the near-tie conformance inputs (deterministic): qrels and runs whose scores differ
below C float precision (rank1's probabilities bunch near 1.0, where a float step is 6e-8).

    python make_near_ties.py          # writes qrels.pair, run.pair, qrels.near_ties, run.random1..3 here

The expected outputs (out.*) come from trec_eval 10.0 built from source; see README.md.
"""

import math
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent


def near_one(rng: random.Random) -> float:
    """A score near 1.0: often an exact tie, one double step apart, or equal as C floats."""
    base = 1.0 - rng.randrange(6) * 1e-8
    kind = rng.randrange(4)
    if kind == 0:
        return base
    if kind == 1:
        return math.nextafter(base, 0.0)
    if kind == 2:
        return base - rng.randrange(1, 4) * 1e-9
    return base - rng.random() * 1e-7


def main() -> None:
    rng = random.Random(20251124)
    qrels, runs = [], {f"run.random{i}": [] for i in (1, 2, 3)}
    for q in range(1, 21):
        qid = f"q{q:02d}"
        docs = [f"d{rng.randrange(1000):03d}" for _ in range(60)]
        docs = sorted(set(docs))
        for docid in rng.sample(docs, len(docs) // 2):
            qrels.append(f"{qid} 0 {docid} {rng.choice([0, 0, 1, 2])}")
        for lines in runs.values():
            chosen = rng.sample(docs, min(len(docs), 40))
            for rank, docid in enumerate(chosen, start=1):
                lines.append(f"{qid} Q0 {docid} {rank} {near_one(rng)!r} near")
    (HERE / "qrels.near_ties").write_text("\n".join(qrels) + "\n")
    (HERE / "qrels.pair").write_text("q00 0 a 1\nq00 0 z 0\n")
    # The case of the issue: 'a' is relevant and scored higher as a double, but not as a C float.
    (HERE / "run.pair").write_text("q00 Q0 a 1 0.99999999 pair\nq00 Q0 z 2 0.99999998 pair\n")
    for name, lines in runs.items():
        (HERE / name).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
