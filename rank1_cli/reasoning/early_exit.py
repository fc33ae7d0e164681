"""Early exit by confidence: reason in stages, stop a pair as soon as its forced verdict is sure.

`--early-exit B1,B2,...,B` with `--confidence C`: every pair is generated to B1 tokens. A pair
whose reasoning finished is judged as always. For one that did not, the verdict is forced at B1
exactly as `rank1 sweep` derives budget B1 (the reference's repair of the reasoning so far); if
max(P(true), P(false)) >= C that is its judgement, else its generation goes on to B2 from where
it stopped, and so on; at the last budget every pair is judged as a fixed-budget rerank judges it.

What makes this trustworthy: greedy decoding makes the first b tokens of a longer reasoning what
budget b gives, so each pair's judgement is the one a fixed-budget rerank at its exit budget
gives, and it is stored under that budget (every stage's judgements are, exited or not: a later
rerank at any of these budgets reuses them). A generation goes on from the prompt's and the
reasoning's token ids, never from re-tokenized text, and the engine's prefix cache holds them.
Two kinds of pair are generated afresh at the next budget instead: reasoning stored without its
token ids (imported traces), and reasoning that ends with the start of a stop string (`</think>`
without its verdict yet), whose stop a continuation could not see whole.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..engines.base import Generation
from ..errors import OptionError
from . import prompts
from .scorer import Judgement, ProgressReporter, Scorer, judgement_of, stored_from_generation
from .store import PENDING, StoredGeneration

# DEER (Yang et al. 2025, arXiv 2504.15895) exits reasoning when a trial answer's confidence
# reaches 0.95 in its published runs; rank1's forced verdict is such a trial answer.
DEFAULT_CONFIDENCE = 0.95


def parse_early_exit(text: str) -> tuple[int, ...]:
    """'16,32,64' -> (16, 32, 64), in the order given (check_early_exit checks it)."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise OptionError(f"{{early_exit}} must be comma-separated token counts such as 512,2048,8192, found "
                          f"{text[:60]!r}") from None


def check_early_exit(budgets: Sequence[int], max_reasoning_tokens: int, confidence: float) -> None:
    """The budgets strictly increase from at least 1 to the reasoning budget; 0.5 < confidence < 1."""
    if len(budgets) < 2:
        raise OptionError(f"{{early_exit}} needs at least two budgets (an exit and the last), found {list(budgets)}")
    if budgets[0] < 1 or any(b >= a for b, a in zip(budgets, budgets[1:])):
        raise OptionError(f"{{early_exit}} budgets must increase from at least 1 token, found "
                          f"{','.join(map(str, budgets))}")
    if budgets[-1] != max_reasoning_tokens:
        raise OptionError(f"the last {{early_exit}} budget ({budgets[-1]}) must be {{max_reasoning_tokens}} "
                          f"({max_reasoning_tokens})")
    if not 0.5 < confidence < 1:
        raise OptionError(f"{{confidence}} must be above 0.5 and below 1, found {confidence}")


def confident(judgement: Judgement, confidence: float) -> bool:
    """The verdict's probability, P(true) or P(false) renormalised over the two, reaches `confidence`
    (above 0.5, so a fallback's 0.5 never does)."""
    return max(judgement.score, 1.0 - judgement.score) >= confidence


def ends_in_a_stop_prefix(text: str) -> bool:
    return any(text.endswith(stop[:n]) for stop in prompts.STOP_STRINGS for n in range(1, len(stop)))


def continuable(record: StoredGeneration, budget: int) -> bool:
    """Reasoning cut by budget `budget` whose generation can go on from its token ids."""
    return (record.token_ids is not None and len(record.token_ids) == record.output_tokens == budget
            and not ends_in_a_stop_prefix(record.reasoning))


def continued(before: StoredGeneration, generation: Generation, tokens, tokenizer) -> StoredGeneration:
    """The record of a generation that went on from `before`: its tokens appended, its text decoded
    from all of them as `rank1 sweep` decodes a cut (the stop string left out, as engines do)."""
    ids = tuple(before.token_ids) + tuple(generation.token_ids or ())
    text = tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)
    if generation.stop_reason and generation.stop_reason in text:
        text = text[:text.rfind(generation.stop_reason)]
    whole = dataclasses.replace(generation, text=text.rstrip("\ufffd") if not generation.stop_reason else text,
                                output_tokens=len(ids), token_ids=ids)
    return stored_from_generation(before.prompt_sha256, whole, tokens)


def judge_with_early_exit(scorer: Scorer, prompt_list: Sequence[str], budgets: Sequence[int], confidence: float,
                          tokenizer, progress: ProgressReporter | None = None) -> tuple[list[Judgement], list[int]]:
    """One judgement per prompt and the budget at which each was made (identical prompts judged once).

    `scorer` is the last budget's; the others share its engine and store."""
    check_early_exit(budgets, scorer.key.max_reasoning_tokens, confidence)
    progress = progress or ProgressReporter()
    shas = {prompt: prompts.prompt_sha256(prompt) for prompt in prompt_list}
    by_sha = {sha: prompt for prompt, sha in shas.items()}
    stages = [scorer.sibling(dataclasses.replace(scorer.key, max_reasoning_tokens=b), recompute=scorer.recompute)
              for b in budgets[:-1]] + [scorer]
    decided: dict[str, tuple[Judgement, int]] = {}
    carried: dict[str, StoredGeneration] = {}       # reasoning cut at the previous budget, to go on
    prompt_ids: dict[str, tuple[int, ...]] = {}     # as the engine tokenizes the prompt text
    undecided = list(by_sha)
    previous = 0
    progress.start(len(by_sha), 0, f"reasoning with {scorer.key.model}")
    try:
        for stage, budget in zip(stages, budgets):
            known = stage.stored(undecided, with_token_ids=True)
            missing = [sha for sha in undecided if sha not in known]
            goes_on = [sha for sha in missing if sha in carried and continuable(carried[sha], previous)]
            continuing = set(goes_on)
            fresh = [sha for sha in missing if sha not in continuing]
            made = stage.generate([by_sha[sha] for sha in fresh], fresh, progress) if fresh else {}
            for sha in goes_on:                               # tokenized once, however many stages it goes on
                if sha not in prompt_ids:
                    prompt_ids[sha] = tuple(tokenizer(by_sha[sha])["input_ids"])
            if goes_on:
                made.update(stage.generate(
                    [prompt_ids[sha] + tuple(carried[sha].token_ids) for sha in goes_on],
                    goes_on, progress, max_tokens=budget - previous,
                    record=lambda sha, generation: continued(carried[sha], generation, stage.tokens, tokenizer)))
            records = {**known, **made}
            pending = {sha: r for sha, r in records.items() if r.completion == PENDING}
            if pending:
                records.update(stage.repair(pending, by_sha))
            exited = -sum(r.completion != PENDING for r in made.values())    # generate() counted those
            for sha in undecided:
                record = records[sha]
                judgement = judgement_of(record, "store" if sha in known else "engine")
                ended = record.completion == "stop" or record.output_tokens < budget    # finished, or EOS
                if budget == budgets[-1] or ended or confident(judgement, confidence):
                    decided[sha] = (judgement, budget)
                    exited += 1
                else:
                    carried[sha] = record
            progress.advance(exited)
            undecided = [sha for sha in undecided if sha not in decided]
            previous = budget
    finally:
        progress.stop()
    return [decided[shas[p]][0] for p in prompt_list], [decided[shas[p]][1] for p in prompt_list]
