"""Killed/total per module from the results `mutmut run` leaves in mutants/ (run by `make mutation`).

Mutants listed in tests/mutation_equivalent.txt (reviewed: no behaviour can tell them from the
original) are counted apart, so the killed share is over the mutants a test could catch.
Usage: python tests/mutation_report.py [--survivors]
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# mutmut's exit codes of a test run against a mutant: 0 every test passed (survived); 5 and 33 no
# test calls the mutated function; 2 interrupted, 34 skipped, 35 suspicious (slow). Any other code
# is a failed run: a test failed (1), pytest itself failed (3), a timeout, or a crash (negative: the
# signal) - the mutant was caught.
NOT_KILLED = {0, 2, 5, 33, 34, 35, None}


def equivalent_names(path: Path = REPO / "tests" / "mutation_equivalent.txt") -> set[str]:
    if not path.exists():
        return set()
    return {line.split("#", 1)[0].strip() for line in path.read_text().splitlines()} - {""}


def results(root: Path = REPO / "mutants") -> dict[str, dict[str, int | None]]:
    """{module path: {mutant name: exit code}} for every module mutmut mutated."""
    found = {}
    for meta in sorted(root.rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        found[str(meta.relative_to(root))[: -len(".meta")]] = data.get("exit_code_by_key", {})
    return found


def main(argv: list[str]) -> int:
    by_module = results()
    if not by_module:
        print("no mutation results in mutants/: run `make mutation` first", file=sys.stderr)
        return 1
    equivalent = equivalent_names()
    show_survivors = "--survivors" in argv
    totals: Counter = Counter()
    survivors = []
    print(f"{'module':<28}{'killed':>8}{'total':>7}{'equiv.':>7}{'share':>8}{'not run':>9}{'of run':>8}"
          "  (share = killed / (total - equiv.); of run: leaving out the mutants not run)")

    def row(label: str, counts: Counter, total: int) -> None:
        share = counts["killed"] / (total - counts["equivalent"]) if total > counts["equivalent"] else 1.0
        run = total - counts["equivalent"] - counts["not run"]
        of_run = counts["killed"] / run if run else 1.0
        print(f"{label:<28}{counts['killed']:>8}{total:>7}{counts['equivalent']:>7}{share:>8.1%}"
              f"{counts['not run']:>9}{of_run:>8.1%}")

    for module, codes in by_module.items():
        counts: Counter = Counter()
        for name, code in codes.items():
            if code not in NOT_KILLED:
                counts["killed"] += 1
            elif name in equivalent:
                counts["equivalent"] += 1
            else:
                counts["not run" if code is None else "other"] += 1
                survivors.append((module, name, code))
        total = sum(counts.values())
        row(module, counts, total)
        totals.update(counts)
        totals["total"] += total
    row("all", totals, totals["total"])
    if show_survivors:
        for module, name, code in survivors:
            status = {None: "not checked", 5: "no tests", 33: "no tests", 0: "survived"}.get(code, f"exit {code}")
            print(f"{status}\t{name}")
    elif survivors:
        print(f"{len(survivors)} mutants not killed and not listed as equivalent: "
              "`python tests/mutation_report.py --survivors`, then `mutmut show NAME`")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
