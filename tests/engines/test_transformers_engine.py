"""The transformers engine must behave like vLLM's greedy offline engine as rank1 uses it.

Everything is checked against plain, unbatched references computed here with transformers
itself (model.generate with do_sample=False on one prompt at a time, or a manual forward pass):
batching with left padding, refilling the batch, chunked prefill, stop strings, EOS, the token
budget, the last-step logprobs and the forced verdict. Most tests use a randomly initialised
tiny Qwen2 model built in a temporary directory; the tests at the end use the trained
sample_data/tiny-rank1 model with real rank1 prompts when it exists.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from rank1_cli.engines import EngineConfig, GenerationSettings, engine_options, load_engine  # noqa: E402
from rank1_cli.engines.transformers_engine import TransformersEngine, _check_stop_strings, _Detokenizer  # noqa: E402

EOS, THINK, END_THINK = "<|endoftext|>", "<think>", "</think>"
TINY_RANK1 = Path(__file__).resolve().parents[2] / "sample_data" / "tiny-rank1"
RANK1_STOP = ("</think> true", "</think> false")


def rank1_prompt(query: str, passage: str) -> str:
    return ("Determine if the following passage is relevant to the query. Answer only with 'true' or 'false'.\n"
            "Query: " + query + "\nPassage: " + passage + "\n<think>")


# ----------------------------------------------------------------------------- fixtures


def _build_random_model(out: Path, seed: int = 0) -> None:
    """A byte-level BPE tokenizer (ASCII alphabet only, so every token decodes to valid text)
    with <think>/</think> special tokens, and a random Qwen2ForCausalLM (head_dim 64)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    rng = random.Random(seed)
    words = ("the query passage relevant true false think about river stone light music table green "
             "quick brown fox jumps over lazy dog seven apple window").split()
    texts = [" ".join(rng.choice(words) for _ in range(20)) + "." for _ in range(300)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = [EOS, THINK, END_THINK]
    trainer = trainers.BpeTrainer(vocab_size=200, min_frequency=2, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS,
                                 additional_special_tokens=[THINK, END_THINK], clean_up_tokenization_spaces=False)
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(str(out))
    hf = AutoTokenizer.from_pretrained(str(out))
    eos = hf.eos_token_id
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(hf), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=64, max_position_embeddings=4096,
        tie_word_embeddings=False, initializer_range=0.2,  # peaked logits: no near-ties in greedy
        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
    )
    Qwen2ForCausalLM(cfg).eval().save_pretrained(str(out))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny-random-qwen2")
    _build_random_model(out)
    return out


class Reference:
    """Unbatched greedy references computed with plain transformers."""

    def __init__(self, model_dir: Path):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        self._greedy: dict = {}
        self.eos = {self.tok.eos_token_id}
        gen_eos = self.model.generation_config.eos_token_id
        self.eos |= set(gen_eos) if isinstance(gen_eos, list) else ({gen_eos} if gen_eos is not None else set())

    def ids(self, prompt: str) -> list[int]:
        return self.tok(prompt)["input_ids"]

    def greedy(self, prompt: str, max_new_tokens: int) -> list[int]:
        key = (prompt, max_new_tokens)
        if key not in self._greedy:
            self._greedy[key] = self._generate(prompt, max_new_tokens)
        return list(self._greedy[key])

    @torch.no_grad()
    def _generate(self, prompt: str, max_new_tokens: int) -> list[int]:
        ids = torch.tensor([self.ids(prompt)])
        out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                  do_sample=False, eos_token_id=sorted(self.eos), pad_token_id=self.tok.eos_token_id)
        return out[0, ids.shape[1]:].tolist()

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False)

    def expected(self, gen: list[int], stop: tuple[str, ...], max_tokens: int) -> tuple[str, int, str, str | None]:
        """What vLLM returns for this greedy token stream: (text, output_tokens, finish, stop_reason)."""
        for n in range(1, len(gen) + 1):
            if gen[n - 1] in self.eos:
                return self.decode(gen[: n - 1]), n, "stop", None
            text = self.decode(gen[:n])
            hits = sorted((text.find(s) + len(s), i) for i, s in enumerate(stop) if s in text)
            if hits:
                s = stop[hits[0][1]]
                return text[: text.find(s)], n, "stop", s
            if n >= max_tokens:
                return text, n, "length", None
        raise AssertionError("reference stream too short")

    @torch.no_grad()
    def next_logprobs(self, token_ids: list[int]):
        logits = self.model(torch.tensor([token_ids])).logits[0, -1].float()
        return torch.log_softmax(logits, dim=-1)


@pytest.fixture(scope="module")
def ref(model_dir) -> Reference:
    return Reference(model_dir)


def make_engine(model_dir: Path, **kw) -> TransformersEngine:
    options = {k: kw.pop(k) for k in ("prefill_chunk_tokens", "refill") if k in kw}
    cfg = EngineConfig(model=str(model_dir), dtype=kw.pop("dtype", "float32"), max_model_len=kw.pop("max_model_len", 4096))
    chosen = engine_options("transformers", device="cpu", batch_size=kw.pop("batch_size", 4), **options)
    assert not kw
    return load_engine("transformers", cfg, chosen)


PROMPTS = [
    "the query",
    "quick brown fox jumps over the lazy dog and the river stone",
    "apple " * 30,
    "music",
    "relevant passage about the green table and seven windows, think about it " * 3,
    "stone light",
    "the lazy dog jumps over the quick brown fox near the river",
    "window",
]


def run(engine, prompts, settings) -> dict:
    results = dict(engine.generate(prompts, settings))
    assert sorted(results) == list(range(len(prompts))), "every prompt must get exactly one result"
    return results


# ----------------------------------------------------------------------------- random model


def test_stop_string_rule_matches_vllm():
    # only the text that the new characters can complete is searched
    assert _check_stop_strings("abc</think> true", 5, ["</think> true"]) == ("</think> true", 3)
    assert _check_stop_strings("</think> true and more", 4, ["</think> true"]) is None
    assert _check_stop_strings("abc", 0, ["abc"]) is None
    # several complete in the same new text: the one ending first wins, then list order
    assert _check_stop_strings("xxABCD", 4, ["CD", "AB"]) == ("AB", 2)
    assert _check_stop_strings("xxAB", 2, ["B", "AB"]) == ("B", 3)
    assert _check_stop_strings("xxAB", 2, ["AB", "B"]) == ("AB", 2)


def test_slow_detokenizer_matches_fast(model_dir, ref):
    """Tokenizers without a Rust backend use vLLM's prefix/read-offset detokenization."""

    class Slow:  # a tokenizer without `_tokenizer`
        def decode(self, ids, **kw):
            return ref.tok.decode(ids, **kw)

    prompt_ids = ref.ids(PROMPTS[4])
    gen = ref.greedy(PROMPTS[7], 30)
    fast, slow = _Detokenizer(ref.tok, prompt_ids), _Detokenizer(Slow(), prompt_ids)
    assert fast._fast is not None and slow._fast is None
    assert "".join(fast.step(t) for t in gen) == "".join(slow.step(t) for t in gen) == ref.decode(gen)



def test_engine_interface(model_dir):
    engine = make_engine(model_dir)
    try:
        assert engine.name == "transformers"
        assert engine.tokenizer.convert_tokens_to_ids(END_THINK) != engine.tokenizer.unk_token_id
        assert list(engine.generate([], GenerationSettings(max_tokens=4, stop=()))) == []
        assert engine.force_verdict([], 1, 2) == []
    finally:
        engine.close()


@pytest.mark.parametrize("batch_size,refill,chunk", [(1, True, 8192), (3, True, 8192), (3, False, 8192),
                                                      (8, True, 8192), (4, True, 7)])
def test_batched_greedy_equals_unbatched_reference(model_dir, ref, batch_size, refill, chunk):
    """Prompts of very different lengths decoded together (left padding, rows leaving and joining
    the batch, chunked prefill) give exactly the unbatched greedy result of every prompt."""
    max_tokens = 30
    gens = [ref.greedy(p, max_tokens) for p in PROMPTS]
    # stop strings taken from the middle of some reference outputs, so rows finish at different steps
    stop = tuple(ref.decode(gens[i])[10:18] for i in (2, 4, 5))
    expected = [ref.expected(g, stop, max_tokens) for g in gens]
    finishes = {(e[2], e[3] is None) for e in expected}
    assert finishes == {("stop", False), ("stop", True), ("length", True)}, \
        f"test prompts should cover stop strings, EOS and the budget: {expected}"
    assert len({e[1] for e in expected}) >= 3, "rows should finish at different steps"

    engine = make_engine(model_dir, batch_size=batch_size, refill=refill, prefill_chunk_tokens=chunk)
    try:
        got = run(engine, PROMPTS, GenerationSettings(max_tokens=max_tokens, stop=stop, logprobs=5))
    finally:
        engine.close()
    for i, (text, n, finish, reason) in enumerate(expected):
        g = got[i]
        assert (g.text, g.output_tokens, g.finish_reason, g.stop_reason) == (text, n, finish, reason), f"prompt {i}"


def test_stop_string_cuts_text_before_it(model_dir, ref):
    prompt = PROMPTS[7]
    full = ref.decode(ref.greedy(prompt, 40))
    stop = full[20:26]
    first = full.find(stop)
    engine = make_engine(model_dir)
    try:
        g = run(engine, [prompt], GenerationSettings(max_tokens=40, stop=("never-there", stop)))[0]
    finally:
        engine.close()
    assert g.finish_reason == "stop" and g.stop_reason == stop
    assert g.text == full[:first]
    assert stop not in g.text
    # output_tokens counts the token that completed the stop string
    gen = ref.greedy(prompt, 40)
    n = next(k for k in range(1, len(gen) + 1) if stop in ref.decode(gen[:k]))
    assert g.output_tokens == n


def test_earliest_stop_string_wins(model_dir, ref):
    prompt = PROMPTS[0]
    full = ref.decode(ref.greedy(prompt, 40))
    early, late = full[5:9], full[25:31]
    assert early not in full[:5] + full[9:31] or full.find(early) < full.find(late)
    engine = make_engine(model_dir)
    try:
        g = run(engine, [prompt], GenerationSettings(max_tokens=40, stop=(late, early)))[0]
    finally:
        engine.close()
    assert g.stop_reason == early and g.text == full[: full.find(early)]


def test_budget_exhausted_gives_length(model_dir, ref):
    prompts = [PROMPTS[0], PROMPTS[5], PROMPTS[7]]
    for p in prompts:
        assert not set(ref.greedy(p, 7)) & ref.eos, "chosen prompts must not hit EOS within the budget"
    engine = make_engine(model_dir)
    try:
        got = run(engine, prompts, GenerationSettings(max_tokens=7, stop=RANK1_STOP))
    finally:
        engine.close()
    for i, p in enumerate(prompts):
        g = got[i]
        assert g.finish_reason == "length" and g.stop_reason is None
        assert g.output_tokens == 7
        assert g.text == ref.decode(ref.greedy(p, 7))


def test_eos_ends_generation_without_its_text(model_dir, ref, tmp_path):
    """An end-of-sequence id (here an extra one from generation_config, as vLLM collects them)
    ends generation with finish 'stop', no stop string, and its text left out."""
    prompt = PROMPTS[0]
    gen = ref.greedy(prompt, 20)
    assert not set(gen) & ref.eos
    k = 6
    tok_k = gen[k - 1]
    k = gen.index(tok_k) + 1  # its first occurrence
    eos_dir = tmp_path / "eos-model"
    shutil.copytree(model_dir, eos_dir)
    gc_path = eos_dir / "generation_config.json"
    gc = json.loads(gc_path.read_text())
    gc["eos_token_id"] = [ref.tok.eos_token_id, tok_k]
    gc_path.write_text(json.dumps(gc))
    engine = make_engine(eos_dir)
    try:
        g = run(engine, [prompt], GenerationSettings(max_tokens=20, stop=()))[0]
    finally:
        engine.close()
    assert (g.finish_reason, g.stop_reason, g.output_tokens) == ("stop", None, k)
    assert g.text == ref.decode(gen[: k - 1])
    assert g.last_logprobs is not None and tok_k in g.last_logprobs


@pytest.mark.parametrize("k", [0, 1, 5])
def test_last_logprobs_are_raw_logprobs_of_the_final_step(model_dir, ref, k):
    prompts = PROMPTS[:5]
    max_tokens = 12
    engine = make_engine(model_dir, batch_size=3)
    try:
        got = run(engine, prompts, GenerationSettings(max_tokens=max_tokens, stop=(), logprobs=k))
    finally:
        engine.close()
    for i, p in enumerate(prompts):
        gen = ref.greedy(p, max_tokens)
        assert got[i].output_tokens == len(gen)
        lp = ref.next_logprobs(ref.ids(p) + gen[:-1])  # the step that produced the final token
        last = gen[-1]
        d = got[i].last_logprobs
        top = lp.topk(k).indices.tolist() if k else []
        assert set(d) == set(top) | {last}, f"prompt {i}: top-{k} ids plus the generated token"
        for tid, v in d.items():
            assert v == pytest.approx(lp[tid].item(), abs=1e-4)
        assert all(v <= 0 for v in d.values())


def test_force_verdict_equals_manual_forward(model_dir, ref):
    tok = ref.tok
    true_id = tok(" true", add_special_tokens=False)["input_ids"][0]
    false_id = tok(" false", add_special_tokens=False)["input_ids"][0]
    prompts = [p + "\n" + "reasoning about it.\n" + END_THINK for p in PROMPTS]
    engine = make_engine(model_dir, batch_size=3)
    try:
        got = engine.force_verdict(prompts, true_id, false_id)
    finally:
        engine.close()
    assert len(got) == len(prompts)
    for p, v in zip(prompts, got):
        lp = ref.next_logprobs(ref.ids(p))
        assert v.logprob_true == pytest.approx(lp[true_id].item(), abs=1e-4)
        assert v.logprob_false == pytest.approx(lp[false_id].item(), abs=1e-4)


def test_max_model_len(model_dir, ref):
    prompt = PROMPTS[0]
    n_prompt = len(ref.ids(prompt))
    engine = make_engine(model_dir, max_model_len=n_prompt + 3)
    try:
        g = run(engine, [prompt], GenerationSettings(max_tokens=50, stop=()))[0]
        assert (g.finish_reason, g.output_tokens) == ("length", 3)  # prompt + output reached max_model_len
        with pytest.raises(ValueError, match="max_model_len"):
            engine.generate([PROMPTS[2]], GenerationSettings(max_tokens=5, stop=()))
    finally:
        engine.close()


def test_dtype_auto_uses_model_dtype(model_dir):
    engine = make_engine(model_dir, dtype="auto")
    try:
        assert engine._model.dtype == torch.float32
    finally:
        engine.close()
    with pytest.raises(ValueError):
        make_engine(model_dir, dtype="int3")


# ----------------------------------------------------------------------------- tiny-rank1

# The model is committed; a missing one must fail loudly, not skip.
PAIRS = [
    ("what is planet orbit", "The planet moves in an orbit around the star."),
    ("best recipe for bread", "Many people use flour with butter every morning."),
    ("how does vaccine affect fever", "Alice studied vaccine and fever in 1990. The patient was fine."),
    ("football league", "The river is large compared to the glacier."),
    ("compiler python", "Most compiler require python and memory. " * 4),
    ("king castle", "The empire became strong after the battle started."),
]


@pytest.fixture(scope="module")
def tiny_ref():
    return Reference(TINY_RANK1)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_tiny_rank1_real_prompts_match_reference(tiny_ref, batch_size):
    prompts = [rank1_prompt(q, p) for q, p in PAIRS]
    engine = make_engine(TINY_RANK1, batch_size=batch_size)
    tok = engine.tokenizer
    true_id = tok(" true", add_special_tokens=False)["input_ids"][0]
    false_id = tok(" false", add_special_tokens=False)["input_ids"][0]
    try:
        got = run(engine, prompts, GenerationSettings(max_tokens=256, stop=RANK1_STOP, logprobs=20))
    finally:
        engine.close()
    for i, p in enumerate(prompts):
        gen = tiny_ref.greedy(p, 256)
        text, n, finish, reason = tiny_ref.expected(gen, RANK1_STOP, 256)
        g = got[i]
        assert (g.text, g.output_tokens, g.finish_reason, g.stop_reason) == (text, n, finish, reason)
        assert g.finish_reason == "stop" and g.stop_reason in RANK1_STOP, "tiny-rank1 finishes its reasoning"
        assert not g.text.endswith(END_THINK)  # the stop string is cut off, reasoning stays
        verdict_id = true_id if g.stop_reason.endswith("true") else false_id
        lp = g.last_logprobs
        assert true_id in lp and false_id in lp
        assert max(lp, key=lp.get) == verdict_id
        ref_lp = tiny_ref.next_logprobs(tiny_ref.ids(p) + gen[: n - 1])
        assert lp[true_id] == pytest.approx(ref_lp[true_id].item(), abs=1e-4)
        assert lp[false_id] == pytest.approx(ref_lp[false_id].item(), abs=1e-4)
        score = math.exp(lp[true_id]) / (math.exp(lp[true_id]) + math.exp(lp[false_id]))
        assert (score > 0.5) == g.stop_reason.endswith("true")


def test_tiny_rank1_budget_and_repair(tiny_ref):
    """A too-small budget ends with 'length'; the repair prompt then gets a forced verdict equal to
    a manual forward pass, with nearly all probability on ' true' / ' false'."""
    prompts = [rank1_prompt(q, p) for q, p in PAIRS]
    engine = make_engine(TINY_RANK1, batch_size=4)
    tok = engine.tokenizer
    true_id = tok(" true", add_special_tokens=False)["input_ids"][0]
    false_id = tok(" false", add_special_tokens=False)["input_ids"][0]
    try:
        got = run(engine, prompts, GenerationSettings(max_tokens=8, stop=RANK1_STOP))
        assert all(g.finish_reason == "length" and g.output_tokens == 8 for g in got.values())
        repair = []
        for i, p in enumerate(prompts):
            t = got[i].text.rstrip()
            cut = max(t.rfind("."), t.rfind("!"), t.rfind("?"))
            t = (t[: cut + 1] if cut != -1 and not t.endswith((".", "!", "?")) else t).strip()
            repair.append(p + "\n" + t + "\n" + END_THINK)
        verdicts = engine.force_verdict(repair, true_id, false_id)
    finally:
        engine.close()
    for rp, v in zip(repair, verdicts):
        lp = tiny_ref.next_logprobs(tiny_ref.ids(rp))
        assert v.logprob_true == pytest.approx(lp[true_id].item(), abs=1e-4)
        assert v.logprob_false == pytest.approx(lp[false_id].item(), abs=1e-4)
        assert math.exp(v.logprob_true) + math.exp(v.logprob_false) > 0.5
