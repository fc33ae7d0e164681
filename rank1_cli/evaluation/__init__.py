"""Evaluating runs: trec_eval's measures and numbers, significance tests, comparison, fusion.

`measures` declares every measure once (names, parameters, how it is computed); `trec_eval`
evaluates runs with trec_eval 10.0's semantics; `significance` holds the paired tests and
corrections as plain functions of two arrays, and the effect size; `calibration` the reliability
bins, ECE and Brier score of scores read as probabilities; `compare` tests runs against a
baseline; `fusion` fuses runs. The public calls are re-exported here:

    from rank1_cli.evaluation import compare_runs, evaluate_run, fuse, significance

May import: `rank1_cli.io`, `rank1_cli.console`, `rank1_cli.errors`. Never an engine, the
reasoning core or a workflow (`lint-imports` checks it).
"""

from . import significance
from .compare import Comparison, ComparisonRow, compare_evaluations, compare_runs, write_comparison
from .fusion import fuse
from .measures import Measure, parse_measures
from .trec_eval import RunEvaluation, evaluate_run

__all__ = ["Comparison", "ComparisonRow", "Measure", "RunEvaluation", "compare_evaluations", "compare_runs",
           "evaluate_run", "fuse", "parse_measures", "significance", "write_comparison"]
