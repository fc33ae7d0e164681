"""Reasoning-budget sweeps: quality against test-time compute, from one run.

Greedy decoding makes a smaller budget a prefix of a larger one: the reasoning rank1 writes
within b tokens is the first b tokens of what it writes within B > b. So a sweep generates once,
at the largest budget (or takes that from the store), and derives every smaller budget b:

- a pair whose reasoning ended within b tokens keeps its verdict and logprobs as they are;
- any other pair has its reasoning cut at exactly b tokens (its stored token ids), and gets the
  reference's repair (cut back to the last sentence, `\\n</think>`, one forced verdict token), all
  of a budget's repairs in one batched pass.

That is what `rank1 rerank --max-reasoning-tokens b` computes, pair for pair, for the cost of one
verdict token per cut pair. The derived generations go into the store under budget b, so such a
rerank later finds them there; generations already stored under budget b are used as they are.

Two kinds of pair cannot be derived and are generated at budget b instead: a passage truncated to
fit the largest budget (a smaller budget leaves more room for the passage, so its prompt differs)
and a generation stored without its token ids (an import of traces, or an engine that reports
none). Budget 0 (no reasoning: the verdict forced right after the prompt) is derived from any
stored generation of an untruncated prompt, token ids or not.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import InputError, OptionError
from ..io.text import STDIO
from ..reasoning import prompts
from ..reasoning.fitting import MIN_PROMPT_TOKENS, REPAIR_MARGIN, model_context
from ..reasoning.scorer import ProgressReporter, Scorer, unreasoned
from ..reasoning.store import PENDING, StoredGeneration
from .rerank import PreparedRerank, RerankResult, at_budget, execute_rerank

log = logging.getLogger(__name__)

DERIVE_BATCH = 1024             # generations (with their token ids) read from the store at once


@dataclass(slots=True)
class BudgetRun:
    """One budget of a sweep: its rerank, and how its judgements came about."""

    budget: int
    result: RerankResult
    derived: int = 0            # distinct prompts whose judgement came from the largest budget's reasoning
    cut: int = 0                # of which cut at this budget and repaired

    @property
    def mean_reasoning_tokens(self) -> float:
        traces = self.result.traces.values()
        return sum(t.output_tokens for t in traces) / len(traces) if traces else 0.0

    @property
    def share_finished(self) -> float:
        """Share of pairs whose reasoning ended with its own verdict within the budget."""
        traces = self.result.traces.values()
        return sum(t.completion == "stop" for t in traces) / len(traces) if traces else 0.0


def parse_budgets(text: str) -> tuple[int, ...]:
    """'0,256,512,1024' -> (0, 256, 512, 1024): distinct token counts, ascending (0: no reasoning)."""
    budgets: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        try:
            value = int(part)
        except ValueError:
            raise OptionError(f"{{budgets}} must be comma-separated token counts such as 256,512,1024; "
                              f"{part[:40]!r} is not a whole number") from None
        if value < 0:
            raise OptionError(f"{{budgets}}: a reasoning budget must be at least 0 tokens (0: no reasoning), "
                              f"found {value}")
        budgets.add(value)
    return tuple(sorted(budgets))


def check_budgets(prepared: PreparedRerank, budgets: Sequence[int]) -> None:
    """Refuse budgets a sweep of `prepared` cannot run; `rank1 sweep` and its --dry-run both ask.

    `prepared` was made for the largest budget, which preparing shrinks (with a warning) when the
    context cannot hold it beside a prompt: a sweep would then not be at the budgets asked.
    """
    largest = max(budgets, default=0)
    if largest != prepared.options.max_reasoning_tokens:
        raise OptionError(f"the prepared rerank's reasoning budget ({prepared.options.max_reasoning_tokens}) must be "
                          "the largest of the budgets")
    sized = prepared.scoring.budget
    if largest == sized.max_reasoning_tokens:
        return
    context = sized.max_model_len
    tokenizer = prepared.scoring.tokenizer
    longest = max((len(tokenizer(prompts.build_prompt(*pair.untruncated))["input_ids"]) if pair.truncated
                   else pair.prompt_tokens for pair in prepared.pairs), default=0)
    needed = largest + MIN_PROMPT_TOKENS + REPAIR_MARGIN
    model = model_context(prepared.model)
    if model is not None and needed > model:
        remedy = f"Lower the largest budget to {sized.max_reasoning_tokens} or less (the model's context is {model} tokens)"
    else:
        remedy = (f"Lower the largest budget to {sized.max_reasoning_tokens} or less, or raise {{max_model_len}} to "
                  f"at least {needed}")
        if longest > MIN_PROMPT_TOKENS:
            remedy += f" ({largest + longest + REPAIR_MARGIN} keeps the longest prompt, {longest} tokens, whole)"
    raise OptionError(f"{{budgets}}: a reasoning budget of {largest} tokens does not fit in the context of {context} "
                      f"tokens ({{max_model_len}}), which holds at most {sized.max_reasoning_tokens} reasoning tokens "
                      f"beside a prompt of at least {MIN_PROMPT_TOKENS} and the verdict's repair ({REPAIR_MARGIN}). "
                      + remedy)


def cut_at(stored: StoredGeneration, budget: int, tokenizer) -> StoredGeneration | None:
    """The generation budget `budget` gives, derived from one made with a larger budget: the same
    one when its reasoning ended within `budget` tokens, else its first `budget` tokens, pending
    their repair. None when that needs token ids the store does not have. Budget 0 needs none: every
    generation cut at 0 tokens is the empty reasoning."""
    if budget == 0:
        return unreasoned(stored.prompt_sha256)
    if stored.output_tokens <= budget:
        return stored
    if stored.token_ids is None:
        return None
    kept = stored.token_ids[:budget]
    # An engine holds back the bytes of a character split at the cut; decode() shows them as U+FFFD.
    text = tokenizer.decode(list(kept), skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return StoredGeneration(stored.prompt_sha256, PENDING, None, None, None, budget, text.rstrip("\ufffd"), kept)


def derive_budget(scorer: Scorer, larger: PreparedRerank, smaller: PreparedRerank, tokenizer) -> tuple[int, int]:
    """Store the generations of `smaller`'s budget that `larger`'s stored ones determine.

    Returns (derived, cut): distinct prompts derived, and how many of them were cut (to repair).
    """
    store = scorer.store
    same = list(dict.fromkeys(s.prompt_sha256 for s, l in zip(smaller.pairs, larger.pairs)
                              if s.prompt_sha256 == l.prompt_sha256))
    derived = cut = 0
    budget = smaller.key.max_reasoning_tokens
    for start in range(0, len(same), DERIVE_BATCH):
        found = store.get_many(larger.key, same[start:start + DERIVE_BATCH], with_token_ids=True)
        made = [g for g in (cut_at(stored, budget, tokenizer) for stored in found.values()) if g is not None]
        store.put_many(smaller.key, made, replace=scorer.recompute)
        derived += len(made)
        cut += sum(g.completion == PENDING for g in made)
    return derived, cut


def sweep(prepared: PreparedRerank, budgets: Sequence[int], scorer: Scorer,
          progress: ProgressReporter | None = None) -> list[BudgetRun]:
    """Rerank at every budget: the largest (that of `prepared`) generated or taken from the store,
    the others derived from it (see the module docstring). `scorer` (from `make_scorer`) must have
    a store; the caller closes it. Returns the runs, largest budget first."""
    if scorer.store is None:
        raise OptionError("a budget sweep derives the smaller budgets through the reasoning store; give it a store")
    check_budgets(prepared, budgets)
    largest = prepared.key.max_reasoning_tokens
    runs = [BudgetRun(largest, execute_rerank(prepared, scorer, progress))]
    for budget in sorted(set(budgets) - {largest}, reverse=True):
        smaller = at_budget(prepared, budget)
        derived, cut = derive_budget(scorer, prepared, smaller, prepared.scoring.tokenizer)
        # Derived from what was just generated (and stored, replacing older results with `recompute`).
        result = execute_rerank(smaller, scorer.sibling(smaller.key), progress)
        runs.append(BudgetRun(budget, result, derived, cut))
        log.info("budget %d: %d of %d prompts derived (%d cut and repaired), %d generated", budget, derived,
                 len({p.prompt_sha256 for p in smaller.pairs}), cut, result.stats.generated)
    return runs


# --- outputs -------------------------------------------------------------------------------

TABLE_COLUMNS = ("budget", "pairs", "mean_reasoning_tokens", "share_finished", "forced", "fallback", "derived",
                 "cut", "generated")


def check_output_dir(out_dir: str | Path) -> None:
    """A sweep writes several files: `out_dir` must be a folder (made if missing), not stdout."""
    if str(out_dir) == STDIO:
        raise OptionError("{output_dir:-}: a sweep writes a run and traces per budget into a folder, not to stdout "
                          "(its table goes to stdout anyway)")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder; a sweep writes its files into a folder")


def run_file(out_dir: Path, budget: int) -> Path:
    return out_dir / f"budget-{budget}.trec"


def traces_file(out_dir: Path, budget: int) -> Path:
    return out_dir / f"budget-{budget}.traces.jsonl"


def output_files(out_dir: str | Path, budgets: Sequence[int]) -> list[tuple[str, str]]:
    """(what, path) of every file a sweep writes into `out_dir`."""
    out = Path(out_dir)
    files = [(f"budget {b} run", str(run_file(out, b))) for b in budgets]
    files += [(f"budget {b} traces", str(traces_file(out, b))) for b in budgets]
    return files + [("sweep table", str(out / "sweep.tsv")), ("sweep table", str(out / "sweep.json"))]


def write_sweep(runs: Sequence[BudgetRun], out_dir: str | Path, tag: str, *, qrels=None,
                measures: Sequence[str] = ("nDCG@10",)) -> list[dict]:
    """Write each budget's run (tagged TAG-BUDGET) and traces, and the table of the sweep
    (sweep.tsv, sweep.json), smallest budget first; with `qrels`, the table has the runs'
    measures as `rank1 eval` computes them from the written files. Returns the table's rows."""
    from ..evaluation.measures import parse_measures
    from ..evaluation.trec_eval import evaluate_run
    from ..io.traces import write_traces
    from ..io.trec import read_run_scores, write_run

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chosen = parse_measures(measures) if qrels is not None else []
    rows = []
    for run in sorted(runs, key=lambda r: r.budget):
        path = run_file(out, run.budget)
        write_run(path, run.result.ranking, f"{tag}-{run.budget}")
        write_traces(traces_file(out, run.budget), run.result.traces.values())
        stats = run.result.stats
        row = {"budget": run.budget, "pairs": stats.pairs, "mean_reasoning_tokens": round(run.mean_reasoning_tokens, 2),
               "share_finished": round(run.share_finished, 4), "forced": stats.forced, "fallback": stats.fallback,
               "derived": run.derived, "cut": run.cut, "generated": stats.generated}
        if chosen:
            evaluation = evaluate_run(read_run_scores(path), qrels, chosen, name=path.name)
            row.update({m.label: evaluation.value(m) for m in chosen if m.summary})
        rows.append(row)
    _write_text(out / "sweep.tsv", format_tsv(rows))
    _write_text(out / "sweep.json", json.dumps(rows, indent=2) + "\n")
    return rows


def _write_text(path: Path, text: str) -> None:
    from ..io.text import atomic_writer

    with atomic_writer(path) as out:
        out.write(text)


HEADERS = {"mean_reasoning_tokens": "mean reasoning tokens", "share_finished": "share finished"}
SHORT_HEADERS = {"mean reasoning tokens": "tokens", "share finished": "fin.", "fallback": "fb.", "derived": "der.",
                 "generated": "gen."}


def write_table(rows: Sequence[dict], title: str, out: IO[str]) -> None:
    """The table for people: abbreviated headers (and a legend) when the output is narrow."""
    from rich.console import Console
    from rich.table import Table

    from ..console import print_table

    table = Table(*(HEADERS.get(name, name) for name in rows[0]), title=title, show_edge=False, pad_edge=False)
    for row in rows:
        table.add_row(*map(_cell, row.values()))
    print_table(Console(file=out), table, SHORT_HEADERS)


def format_tsv(rows: Sequence[dict]) -> str:
    if not rows:
        return ""
    columns = list(rows[0])
    lines = ["\t".join(columns)] + ["\t".join(_cell(row[c]) for c in columns) for row in rows]
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
