"""What a rerank will cost, known before it starts (`rank1 rerank --dry-run`).

A plan needs no model: every input is read and checked, every prompt built and counted with the
model's tokenizer, and the reasoning store consulted for the pairs it already holds. Reasoning
length and engine speed cannot be known in advance; when the store holds earlier generations of
the same model, the plan estimates them from what those runs measured (and says so).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass

from ..reasoning.store import PENDING, MeasuredRate, Store
from .rerank import PreparedRerank, at_budget
from .sweep import check_budgets


@dataclass(frozen=True, slots=True)
class Estimate:
    """Tokens to generate and time, extrapolated from earlier runs of the model."""

    output_tokens: int
    mean_output_tokens: float
    seconds: float | None          # None when no earlier run was timed
    basis: str                     # what the figures come from, in words
    is_lower_bound: bool = False   # some reasoning it comes from was cut at a smaller budget


@dataclass(frozen=True, slots=True)
class CascadePlan:
    """`--reason-top N`: budget 0 for every pair, then reasoning on each query's N best. Which pairs
    those are is known only after the first stage, so the second stage's figures are upper bounds."""

    reason_top: int
    screen_to_judge: int           # distinct prompts the budget-0 stage still has to judge (one token each)
    reasoned_at_most: int          # pairs reasoned on: N per query, fewer where a query has fewer pairs
    output_tokens_at_most: int | None   # reasoned_at_most x the estimate's tokens per prompt (None: no estimate)


@dataclass(frozen=True, slots=True)
class RerankPlan:
    model: str
    engine: str
    max_reasoning_tokens: int
    max_model_len: int
    queries: int
    pairs: int
    distinct_prompts: int
    stored: int                    # distinct prompts judged in the store already
    pending: int                   # stored without a verdict yet: one forced token each
    to_generate: int               # distinct prompts the engine will reason about
    prompt_tokens: int             # of all distinct prompts (the model's tokenizer)
    prompt_tokens_to_generate: int
    truncated: int                 # pairs whose passage was cut to fit the context
    store: str | None
    estimate: Estimate | None
    budgets: tuple[int, ...] = ()  # a sweep's: the smaller ones cost one forced token per cut pair
    cascade: CascadePlan | None = None
    early_exit: tuple[int, ...] | None = None
    confidence: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def plan_rerank(prepared: PreparedRerank, store: Store | None, *, recompute: bool = False,
                budgets: tuple[int, ...] = ()) -> RerankPlan:
    """The plan of `prepared`: counts from its prompts and the store, an estimate from the store.
    With `budgets` (a sweep's), the sweep's own checks come first."""
    if budgets:
        check_budgets(prepared, budgets)
    prompt_tokens, completions = _stored_completions(prepared, store, recompute)
    pending = sum(c == PENDING for c in completions.values())
    missing = [sha for sha in prompt_tokens if sha not in completions]
    rate = store.rate(prepared.key) if store is not None else None
    key = prepared.key
    estimate = _estimate(len(missing), rate, key.max_reasoning_tokens)
    cascade = None
    if prepared.options.reason_top:
        screen_prompts, screen_stored = _stored_completions(at_budget(prepared, 0), store, recompute)
        per_query = Counter(pair.qid for pair in prepared.pairs)
        reasoned = sum(min(prepared.options.reason_top, n) for n in per_query.values())
        tokens = round(reasoned * estimate.mean_output_tokens) if estimate else None
        cascade = CascadePlan(prepared.options.reason_top, len(screen_prompts.keys() - screen_stored.keys()), reasoned,
                              tokens)
    return RerankPlan(
        model=prepared.model.spec, engine=key.engine, max_reasoning_tokens=key.max_reasoning_tokens,
        max_model_len=key.max_model_len, queries=prepared.queries, pairs=len(prepared.pairs),
        distinct_prompts=len(prompt_tokens), stored=len(completions) - pending, pending=pending,
        to_generate=len(missing), prompt_tokens=sum(prompt_tokens.values()),
        prompt_tokens_to_generate=sum(prompt_tokens[sha] for sha in missing),
        truncated=sum(pair.truncated for pair in prepared.pairs), store=str(store.path) if store else None,
        estimate=estimate, budgets=budgets, cascade=cascade, early_exit=prepared.options.early_exit,
        confidence=prepared.options.confidence if prepared.options.early_exit else None)


def _stored_completions(prepared: PreparedRerank, store: Store | None,
                        recompute: bool) -> tuple[dict[str, int], dict[str, str]]:
    """Each distinct prompt's token count, and the completion the store holds for those it has."""
    prompt_tokens: dict[str, int] = {}
    for pair in prepared.pairs:
        prompt_tokens.setdefault(pair.prompt_sha256, pair.prompt_tokens)
    completions = store.completions(prepared.key, prompt_tokens) if store is not None and not recompute else {}
    return prompt_tokens, completions


def _estimate(to_generate: int, rate: MeasuredRate | None, max_reasoning_tokens: int) -> Estimate | None:
    if max_reasoning_tokens == 0:
        return Estimate(0, 0.0, None, "budget 0: no reasoning, one prefill and one forced verdict token per prompt")
    if rate is None:
        return None
    tokens = round(to_generate * rate.mean_output_tokens)
    which = "these settings" if rate.same_settings else "this model and engine under other settings"
    basis = f"{rate.generations} stored generations of {which}"
    if rate.cut_short:
        basis += f" ({rate.cut_short} of them reasoning cut short at a smaller budget, which this one lets go on)"
    seconds = None
    if rate.tokens_per_second:
        seconds = tokens / rate.tokens_per_second
        runs = f"{rate.timed_runs} timed engine run" + ("s" if rate.timed_runs != 1 else "")
        basis += (f", and {runs} ({rate.tokens_per_second:.1f} output tokens/s on "
                  "the machine that made them)")
    else:
        basis += "; no timed run, so no time"
    return Estimate(tokens, rate.mean_output_tokens, seconds, basis, is_lower_bound=rate.cut_short > 0)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_plan(plan: RerankPlan) -> str:
    """The plan for people: one fact a line."""
    lines = [
        f"model           {plan.model} ({plan.engine}; reasoning budget {plan.max_reasoning_tokens}, "
        f"context {plan.max_model_len})",
        f"queries         {plan.queries}",
        f"pairs           {plan.pairs} ({plan.distinct_prompts} distinct prompts; {plan.truncated} passages truncated)",
        f"prompt tokens   {plan.prompt_tokens} ({plan.prompt_tokens_to_generate} in the prompts to generate)",
        f"in the store    {plan.stored} judged, {plan.pending} awaiting a forced verdict"
        + (f" ({plan.store})" if plan.store else " (no store)"),
        f"to generate     {plan.to_generate} prompts" if plan.max_reasoning_tokens else
        f"to judge        {plan.to_generate} prompts, no reasoning: one forced verdict token each",
    ]
    if plan.estimate is None:
        lines.append("estimate        none: the store has no earlier generation of this model")
    else:
        e = plan.estimate
        about = "at least" if e.is_lower_bound else "about"
        time = f", {about} {_duration(e.seconds)} of engine time" if e.seconds is not None else ""
        lines.append(f"estimate        {about} {e.output_tokens} output tokens ({e.mean_output_tokens:.0f} per prompt)"
                     f"{time}; from {e.basis}")
    if plan.early_exit:
        first = plan.early_exit[0]
        bound = ""
        if plan.estimate is not None:
            low = round(plan.to_generate * min(first, plan.estimate.mean_output_tokens))
            bound = f": between {low} (every pair stops at {first}) and the estimate above (none stops early)"
        lines.append(f"early exit      at {', '.join(map(str, plan.early_exit))} tokens when the forced verdict is "
                     f"{plan.confidence} sure{bound}; how many stop early is known only as they run")
    if plan.cascade:
        c = plan.cascade
        tokens = ""
        if c.output_tokens_at_most is not None:
            bound = "at least " if plan.estimate and plan.estimate.is_lower_bound else ""
            tokens = f"; for those at most, {bound}about {c.output_tokens_at_most} output tokens"
        lines.append(f"cascade         budget 0 first ({c.screen_to_judge} prompts to judge, one token each), then "
                     f"reasoning on at most {c.reasoned_at_most} pairs ({c.reason_top} per query; the counts above "
                     f"are for reasoning on every pair){tokens}")
    if plan.budgets:
        smaller = [b for b in plan.budgets if b != plan.max_reasoning_tokens]
        lines.append(f"sweep           budgets {', '.join(map(str, plan.budgets))}: the smaller ones "
                     f"({', '.join(map(str, smaller)) or 'none'}) cost one forced token per pair cut short")
    return "\n".join(lines) + "\n"
