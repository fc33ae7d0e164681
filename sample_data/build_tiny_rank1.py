#!/usr/bin/env python
"""Build ``sample_data/tiny-rank1``: a tiny, deterministic *test* model that
behaves like a rank1 reasoning reranker.

It is NOT a relevance model.  It is a ~0.7M-parameter Qwen2 causal LM trained
for a few minutes on synthetic data so that, given the raw rank1 prompt

    Determine if the following passage is relevant to the query. Answer only
    with 'true' or 'false'.\\nQuery: {query}\\nPassage: {passage}\\n<think>

it writes a short templated "reasoning" and then ``</think> true`` or
``</think> false`` (followed by the eos token).  The verdict it was taught is
plain lexical overlap: "true" iff the query and the passage share a content
word (see ``content_words``).  It was also taught the rank1 "repair" format
(prompt + "\\n" + truncated reasoning + "\\n</think>"), after which it puts
nearly all probability on `` true`` / `` false``.

Usage::

    python sample_data/build_tiny_rank1.py [--out DIR] [--steps N]

Runs on CPU in a few minutes with a single thread.  Given the same versions
of torch / tokenizers / transformers the output is bit-for-bit reproducible
(fixed seeds, ``torch.use_deterministic_algorithms(True)``, one thread).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # noqa: E402
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "tiny-rank1"
SEED = 1234

PROMPT_TEMPLATE = (
    "Determine if the following passage is relevant to the query. "
    "Answer only with 'true' or 'false'.\n"
    "Query: {query}\n"
    "Passage: {passage}\n"
    "<think>"
)
EOS = "<|endoftext|>"
THINK = "<think>"
END_THINK = "</think>"
STOP_TRUE = "</think> true"
STOP_FALSE = "</think> false"
VOCAB_SIZE = 2048

# --------------------------------------------------------------------------
# Synthetic text generator
# --------------------------------------------------------------------------

TOPICS = {
    "astronomy": "planet star galaxy comet orbit telescope nebula asteroid moon solar eclipse meteor gravity cosmos satellite supernova quasar rocket crater spectrum",
    "cooking": "recipe oven flour butter garlic onion pasta sauce bread spice kitchen pepper roast simmer dough cheese tomato baking grill vinegar",
    "medicine": "patient doctor vaccine fever virus therapy clinic symptom dosage surgery nurse insulin diabetes cancer allergy infection hospital diagnosis tablet pharmacy",
    "finance": "bank loan interest mortgage stock bond market budget inflation credit dividend investor pension currency savings taxes broker portfolio equity revenue",
    "sports": "football tennis player coach stadium league match goal referee tournament soccer basketball runner marathon cycling swimming trophy season athlete rugby",
    "computing": "software compiler python database server network kernel memory processor algorithm browser laptop keyboard cache protocol linux router encryption thread debugger",
    "history": "empire castle king queen battle treaty dynasty revolution monarch colony pharaoh medieval kingdom siege army senate republic roman viking crusade",
    "biology": "cell protein enzyme gene species bacteria mitochondria organism tissue neuron evolution mutation chromosome photosynthesis habitat predator insect fungus molecule membrane",
    "geography": "river mountain desert ocean island valley glacier volcano canyon coast climate rainfall lake forest plateau delta border tundra peninsula continent",
    "music": "guitar piano violin melody rhythm chord orchestra concert album singer drummer opera symphony lyrics tempo jazz guitarist composer harmony trumpet",
    "law": "court judge lawyer contract statute verdict appeal jury tenant lawsuit patent copyright evidence witness attorney plaintiff custody license permit tribunal",
    "transport": "train railway airport airline engine tire highway bridge subway ticket freight truck harbor ferry vehicle diesel pilot runway traffic gasoline",
    "gardening": "garden soil seed compost tulip rose shrub fertilizer lawn hedge orchard pruning weeds seedling mulch greenhouse irrigation harvest blossom sprout",
    "chemistry": "acid oxygen carbon hydrogen atom electron reaction catalyst sodium chlorine solvent polymer ethanol nitrogen isotope compound crystal oxidation salt ammonia",
}
TOPIC_WORDS = {k: v.split() for k, v in TOPICS.items()}
ADJECTIVES = "large small ancient modern rapid slow bright dark heavy light common rare simple complex early late warm cold strong weak".split()
NAMES = "Alice Bruno Chen Dana Elif Farah Goran Hana Ivan Jonas Kofi Lena Mateo Nadia Omar Priya Quinn Rosa Sven Tariq Uma Viktor Wen Yara Zane".split()
PLACES = "Paris Lagos Lima Oslo Kyoto Cairo Denver Madrid Nairobi Quebec Dublin Hanoi Perth Vienna Austin Seoul Bergen Tunis Porto Accra".split()
SYLLABLES = "ka lo mi ra ven tor sul dex pri mon zel ath ori bel cun fis gar hul jin kor lum nar pex quo rin sab tel ulm vor wex yal zen".split()

# Function words that never count as content words.  Every word used by the
# query / passage / reasoning templates below is listed here too, so that the
# only possible overlap between a query and a passage is a content word.
STOPWORDS = set(
    """
    a an the and or but if then than of in on at to for from by with without
    into onto over under about after before during between through is are was
    were be been being am do does did done doing have has had having can could
    will would shall should may might must not no nor yes so too very also just
    only own same such both each few more most other some any all what which who
    whom whose this that these those there here when where why how i me my we
    our you your he him his she her it its they them their as up down out off
    again further once until while because per via vs
    asks about query passage discusses mentions share shares shared terms term
    key relevant mention topic words word both neither nothing common none
    focuses describes talks therefore hence says question
    best effect effects affect affects need needs used use uses introduced
    define definition meaning explain happens happen typical cost average
    studied measured units near found require requires required often known
    became started reported described helps help called named most many
    usually sometimes people around area during year years number part make
    makes made like first second new one two three four five six seven eight
    nine ten compared every said since
    """.split()
)

QUERY_TEMPLATES = [
    "what is {a} {b}",
    "how does {a} affect {b}",
    "{a} {b}",
    "{a} {b} {c}",
    "why do {a} need {b}",
    "effects of {a} on {b}",
    "best {a} for {b}",
    "{a} vs {b}",
    "when was the {a} {b} introduced",
    "define {a}",
    "how to use {a} with {b}",
    "what happens to {a} during {b}",
    "average cost of {a} in {place}",
    "is {a} {adj}",
    "{name} {a} {b}",
]

SENTENCE_TEMPLATES = [
    "The {a} is {adj} compared to the {b}.",
    "{name} studied {a} and {b} in {year}.",
    "Most {a} require {b} and {c}.",
    "In {year}, the {a} of {b} was measured at {num} units.",
    "A {adj} {a} can be found near {place}.",
    "Many people use {a} with {b} every {c}.",
    "The {b} became {adj} after the {a} started.",
    "{name} reported that {a} helps {b}.",
    "There are about {num} {a} in {place}.",
    "{a} and {b} are often described as {adj}.",
    "The {adj} {a}, called {pseudo}, is known in {place}.",
    "Since {year} the {a} has been part of {b} ({num}%).",
    "{name} said: \"{a} is not {b}.\"",
    "The {a}-{b} {c} uses {num} {pseudo} per {c}.",
]


def pseudo_word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))


def content_words(text: str) -> list[str]:
    """Content words of ``text`` in order of first appearance (original case).

    A content word is an alphabetic run of >= 4 letters that is not a stopword
    (case-insensitive).  Query and passage "overlap" iff they share one.
    """
    seen: dict[str, str] = {}
    for w in re.findall(r"[A-Za-z]+", text):
        lw = w.lower()
        if len(lw) >= 4 and lw not in STOPWORDS and lw not in seen:
            seen[lw] = w
    return list(seen.values())


def shared_words(query: str, passage: str) -> list[str]:
    pw = {w.lower() for w in content_words(passage)}
    return [w for w in content_words(query) if w.lower() in pw]


def is_relevant(query: str, passage: str) -> bool:
    return bool(shared_words(query, passage))


def make_reasoning(query: str, passage: str, rng: random.Random) -> tuple[str, bool]:
    """Templated reasoning (a few sentences) and the lexical-overlap verdict."""
    qw = content_words(query)[:2]
    pw = content_words(passage)[:2]
    shared = shared_words(query, passage)
    s1 = (
        f"The query asks about {' and '.join(qw)}." if qw else "The query has no key terms."
    )
    s2 = (
        f"The passage discusses {' and '.join(pw)}." if pw else "The passage has no key terms."
    )
    if shared:
        s3 = rng.choice([f"Both mention {shared[0]}.", f"They share the term {shared[0]}."])
        s4 = "So the passage is relevant."
    else:
        s3 = rng.choice(["They share no key terms.", "Nothing is shared."])
        s4 = "So the passage is not relevant."
    return " ".join([s1, s2, s3, s4]), bool(shared)


class Synth:
    """Random topical queries and passages."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.topics = list(TOPIC_WORDS)

    def _word_source(self, topic: str) -> list[str]:
        return list(TOPIC_WORDS[topic])

    def _fill(self, template: str, words: list[str]) -> str:
        r = self.rng
        picks = r.sample(words, 3)
        out = template.format(
            a=picks[0], b=picks[1], c=picks[2], adj=r.choice(ADJECTIVES), name=r.choice(NAMES),
            place=r.choice(PLACES), year=r.randint(1500, 2024), num=r.randint(2, 999),
            pseudo=pseudo_word(r),
        )
        return out[0].upper() + out[1:]

    def query(self, topic: str) -> str:
        q = self._fill(self.rng.choice(QUERY_TEMPLATES), self._word_source(topic))
        q = q[0].lower() + q[1:] if self.rng.random() < 0.7 else q
        if self.rng.random() < 0.3:
            q += "?"
        return q

    def passage(self, topics: list[str], n_sent: int) -> str:
        sents = []
        for _ in range(n_sent):
            t = self.rng.choice(topics)
            sents.append(self._fill(self.rng.choice(SENTENCE_TEMPLATES), self._word_source(t)))
        return " ".join(sents)

    def pair(self) -> tuple[str, str]:
        r = self.rng
        qt = r.choice(self.topics)
        query = self.query(qt)
        n_sent = r.choice([1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 5, 6, 8, 12])
        others = [t for t in self.topics if t != qt]
        if r.random() < 0.5:  # on topic: usually overlaps
            topics = [qt] + ([r.choice(others)] if r.random() < 0.3 else [])
            passage = self.passage(topics, n_sent)
            if r.random() < 0.6 and content_words(query):
                # make sure at least one query word appears
                w = r.choice(content_words(query))
                sents = passage.split(". ")
                i = r.randrange(len(sents))
                sents[i] = sents[i] + f" ({w})" if r.random() < 0.3 else f"{sents[i]} near the {w}"
                passage = ". ".join(sents)
        else:
            passage = self.passage(r.sample(others, 2), n_sent)
        return query, passage


def format_prompt(query: str, passage: str) -> str:
    return PROMPT_TEMPLATE.format(query=query, passage=passage)


def make_example(query: str, passage: str, rng: random.Random) -> tuple[str, str]:
    """(prompt, completion) where prompt+completion is the full training text.

    Normal format:  prompt + "\\n" + reasoning + "\\n</think> true" + eos
    Repair format:  prompt + "\\n" + truncated reasoning + "\\n</think> true"
    (the rank1 repair step: cleaned partial reasoning, then "\\n</think>" and one
    forced token among ' true' / ' false').
    """
    prompt = format_prompt(query, passage)
    reasoning, rel = make_reasoning(query, passage, rng)
    verdict = " true" if rel else " false"
    if rng.random() < 0.15:
        sents = reasoning.split(". ")
        k = rng.randint(0, len(sents) - 1)
        partial = ". ".join(sents[:k]) + ("." if k else "")
        return prompt, "\n" + partial.strip() + "\n" + END_THINK + verdict
    return prompt, "\n" + reasoning + "\n" + END_THINK + verdict + EOS


# --------------------------------------------------------------------------
# Optional sample data (used only for evaluation, never for training)
# --------------------------------------------------------------------------


def load_sample_pairs(rng: random.Random, n: int) -> list[tuple[str, str]]:
    corpus_path, queries_path = HERE / "corpus.jsonl", HERE / "queries.tsv"
    if not (corpus_path.exists() and queries_path.exists()):
        return []
    passages, queries = [], []
    try:
        for line in corpus_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                d = json.loads(line)
                text = " ".join(str(d.get(k, "")) for k in ("title", "text") if d.get(k)).strip()
                if text:
                    passages.append(text)
        for line in queries_path.read_text(encoding="utf-8").splitlines():
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 2 and parts[-1].strip():
                queries.append(parts[-1].strip())
    except Exception as exc:  # sample data is optional; never fail the build on it
        print(f"warning: could not read sample data: {exc}", file=sys.stderr)
        return []
    if not passages or not queries:
        return []
    judged = []
    qrels_path = HERE / "qrels.txt"
    if qrels_path.exists():  # judged (query, doc) pairs: realistic mix of on-topic and near-miss
        qtext = dict(l.split("\t", 1) for l in queries_path.read_text(encoding="utf-8").splitlines() if "\t" in l)
        docs = {}
        for line in corpus_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                d = json.loads(line)
                docs[d.get("doc_id", d.get("_id"))] = " ".join(
                    str(d.get(k, "")) for k in ("title", "text") if d.get(k)).strip()
        for line in qrels_path.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[0] in qtext and docs.get(parts[2]):
                judged.append((qtext[parts[0]].strip(), docs[parts[2]]))
    pairs = [(rng.choice(queries), rng.choice(passages)) for _ in range(n - n // 2)]
    pairs += rng.sample(judged, n // 2) if len(judged) >= n // 2 else judged
    return pairs


# --------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------


def train_tokenizer(texts: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=[EOS, THINK, END_THINK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (EOS, THINK, END_THINK)])
    return tok


def save_hf_tokenizer(tok: Tokenizer, out: Path):
    """tokenizer.json + a portable tokenizer_config.json / special_tokens_map.json.

    The config names the generic ``PreTrainedTokenizerFast`` class so that both
    transformers 4.x and 5.x (and vLLM) load it with AutoTokenizer.
    """
    tok.save(str(out / "tokenizer.json"))
    special = {
        "eos_token": EOS,
        "pad_token": EOS,
        "additional_special_tokens": [THINK, END_THINK],
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "unk_token": None,
        **special,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 32768,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")


def check_tokenizer(hf) -> tuple[int, int]:
    t = hf(" true", add_special_tokens=False)["input_ids"]
    f = hf(" false", add_special_tokens=False)["input_ids"]
    assert len(t) == 1 and len(f) == 1, (t, f)
    end_id = hf.convert_tokens_to_ids(END_THINK)
    think_id = hf.convert_tokens_to_ids(THINK)
    assert hf(END_THINK, add_special_tokens=False)["input_ids"] == [end_id]
    assert hf(THINK, add_special_tokens=False)["input_ids"] == [think_id]
    assert hf.decode([end_id, t[0]], skip_special_tokens=False) == STOP_TRUE
    assert hf.decode([end_id, f[0]], skip_special_tokens=False) == STOP_FALSE
    assert hf("\n</think> true", add_special_tokens=False)["input_ids"][-2:] == [end_id, t[0]]
    assert hf.eos_token == EOS and hf.eos_token_id is not None
    for tid in (think_id, end_id, hf.eos_token_id):
        assert tid in hf.all_special_ids
    return t[0], f[0]


# --------------------------------------------------------------------------
# Model / training
# --------------------------------------------------------------------------


def build_model(vocab_size: int, eos_id: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        hidden_act="silu",
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        use_sliding_window=False,
        attention_dropout=0.0,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        initializer_range=0.02,
    )
    cfg.dtype = "float32"
    model = Qwen2ForCausalLM(cfg)
    return model


def encode_examples(hf, examples):
    out = []
    for prompt, completion in examples:
        ids = hf(prompt + completion, add_special_tokens=False)["input_ids"]
        n_prompt = len(hf(prompt, add_special_tokens=False)["input_ids"])
        assert ids[:n_prompt] == hf(prompt, add_special_tokens=False)["input_ids"]
        out.append((ids, n_prompt))
    return out


def make_batch(encoded, idxs, pad_id):
    L = max(len(encoded[i][0]) for i in idxs)
    inp = torch.full((len(idxs), L), pad_id, dtype=torch.long)
    lab = torch.full((len(idxs), L), -100, dtype=torch.long)
    att = torch.zeros((len(idxs), L), dtype=torch.long)
    for r, i in enumerate(idxs):
        ids, n_prompt = encoded[i]
        inp[r, : len(ids)] = torch.tensor(ids)
        att[r, : len(ids)] = 1
        lab[r, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
    return inp, att, lab


def train(model, encoded, steps: int, batch_tokens: int, seed: int, lr: float, log_every: int = 100):
    rng = random.Random(seed)
    pad_id = model.config.pad_token_id
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = max(1, steps // 20)

    def lr_at(s):
        if s < warmup:
            return (s + 1) / warmup
        p = (s - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    # length-bucketed batches with a token budget
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    batches, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * len(encoded[i][0]) > batch_tokens:
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    model.train()
    t0 = time.time()
    run_loss = None
    for step in range(steps):
        idxs = batches[rng.randrange(len(batches))]
        inp, att, lab = make_batch(encoded, idxs, pad_id)
        # logits only where there is a label (the completion): saves most of the lm_head cost
        hidden = model.model(input_ids=inp, attention_mask=att).last_hidden_state
        sel = lab[:, 1:] != -100
        logits = model.lm_head(hidden[:, :-1][sel])
        loss = torch.nn.functional.cross_entropy(logits, lab[:, 1:][sel])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        run_loss = loss.item() if run_loss is None else 0.95 * run_loss + 0.05 * loss.item()
        if (step + 1) % log_every == 0 or step == 0:
            print(f"step {step + 1:5d}/{steps} loss {run_loss:.4f} lr {sched.get_last_lr()[0]:.2e} "
                  f"{time.time() - t0:.0f}s", flush=True)
    model.eval()
    return time.time() - t0


# --------------------------------------------------------------------------
# Evaluation (transformers, float32, greedy)
# --------------------------------------------------------------------------


@torch.no_grad()
def greedy(model, hf, prompt: str, max_new_tokens: int) -> str:
    ids = hf(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    out = model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
        eos_token_id=hf.eos_token_id, pad_token_id=hf.eos_token_id,
    )
    return hf.decode(out[0, ids.shape[1]:], skip_special_tokens=False)


def verdict_of(text: str):
    """Mimic vLLM stop strings: first of '</think> true' / '</think> false'."""
    hits = [(text.find(s), s) for s in (STOP_TRUE, STOP_FALSE) if s in text]
    if not hits:
        return None
    return min(hits)[1] == STOP_TRUE


def evaluate(model, hf, pairs, label: str, true_id: int, false_id: int, show: int = 2):
    fin64 = fin4 = correct = 0
    mass = []
    for k, (q, p) in enumerate(pairs):
        prompt = format_prompt(q, p)
        text = greedy(model, hf, prompt, 64)
        v = verdict_of(text)
        if v is not None:
            fin64 += 1
            correct += int(v == is_relevant(q, p))
        if verdict_of(greedy(model, hf, prompt, 4)) is not None:
            fin4 += 1
        if k < show:
            print(f"  [{label} example] {text!r}")
        # repair format: cleaned partial reasoning + "\n</think>"
        cut = text.split("</think>")[0].strip()
        last = max(cut.rfind("."), cut.rfind("!"), cut.rfind("?"))
        cut = cut[: last + 1] if last != -1 else cut
        rprompt = f"{prompt}\n{cut.strip()}\n</think>"
        ids = hf(rprompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        probs = torch.softmax(model(ids).logits[0, -1].float(), -1)
        mass.append((probs[true_id] + probs[false_id]).item())
    n = len(pairs)
    print(f"{label}: n={n} finished@64={fin64 / n:.0%} finished@4={fin4 / n:.0%} "
          f"verdict==overlap (of finished)={correct / max(1, fin64):.0%} "
          f"repair P(true)+P(false) mean={sum(mass) / n:.3f} min={min(mass):.3f}")
    return fin64 / n, fin4 / n


# --------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--steps", type=int, default=1600)
    ap.add_argument("--n-train", type=int, default=20000)
    ap.add_argument("--n-eval", type=int, default=50)
    ap.add_argument("--batch-tokens", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (the committed model was built with 1; other values change the bits)")
    args = ap.parse_args(argv)

    t_start = time.time()
    random.seed(SEED)
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(args.threads)

    rng = random.Random(SEED)
    synth = Synth(rng)
    pairs = [synth.pair() for _ in range(args.n_train)]
    examples = [make_example(q, p, rng) for q, p in pairs]
    n_rel = sum(is_relevant(q, p) for q, p in pairs)
    print(f"{len(examples)} training examples, {n_rel / len(pairs):.0%} relevant")

    # tokenizer: trained on the training text with the special tokens removed
    tok_texts = [(p + c).replace(THINK, "\n").replace(END_THINK, "\n").replace(EOS, "") for p, c in examples]
    tok = train_tokenizer(tok_texts)
    assert tok.to_str() == train_tokenizer(tok_texts).to_str(), "tokenizer training is not deterministic"

    args.out.mkdir(parents=True, exist_ok=True)
    save_hf_tokenizer(tok, args.out)
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(args.out))
    true_id, false_id = check_tokenizer(hf)
    print(f"tokenizer: vocab={len(hf)} true_id={true_id} false_id={false_id} "
          f"<think>={hf.convert_tokens_to_ids(THINK)} </think>={hf.convert_tokens_to_ids(END_THINK)} "
          f"eos={hf.eos_token_id}")

    encoded = encode_examples(hf, examples)
    lens = sorted(len(e[0]) for e in encoded)
    print(f"sequence length: median {lens[len(lens) // 2]} max {lens[-1]}")

    model = build_model(len(hf), hf.eos_token_id)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M params")
    train_s = train(model, encoded, args.steps, args.batch_tokens, SEED, args.lr)
    print(f"training took {train_s:.0f}s")

    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(
        bos_token_id=hf.eos_token_id, eos_token_id=hf.eos_token_id, pad_token_id=hf.eos_token_id,
    )
    model.save_pretrained(str(args.out), safe_serialization=True)
    os.chmod(args.out / "model.safetensors", 0o644)  # safetensors writes 0600
    for extra in ("chat_template.jinja",):
        (args.out / extra).unlink(missing_ok=True)
    write_readme(args.out, model.config, n_params, args.steps, true_id, false_id)

    # ---- evaluation on held-out prompts (reload from disk, float32) ----
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(args.out), dtype=torch.float32)
    model.eval()
    eval_rng = random.Random(SEED + 1)
    held = Synth(eval_rng)
    evaluate(model, hf, [held.pair() for _ in range(args.n_eval)], "synthetic held-out", true_id, false_id)
    sample = load_sample_pairs(random.Random(SEED + 2), args.n_eval)
    if sample:
        evaluate(model, hf, sample, "sample_data", true_id, false_id)
    else:
        print("sample_data: corpus.jsonl/queries.tsv not found, skipped")
    print(f"total time {time.time() - t_start:.0f}s; files: "
          + ", ".join(f"{p.name} ({p.stat().st_size / 1e6:.2f} MB)" for p in sorted(args.out.iterdir())))


def write_readme(out: Path, cfg, n_params: int, steps: int, true_id: int, false_id: int):
    import tokenizers
    import transformers

    text = f"""# tiny-rank1 (test model)

A tiny **test model** built by `sample_data/build_tiny_rank1.py`. It is **NOT a
relevance model**: do not use its scores for anything except tests.

It mimics the interface of the rank1 reasoning rerankers: a Qwen2 causal LM
(`model_type: qwen2`, {n_params / 1e6:.2f}M parameters, {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size},
{cfg.num_attention_heads} heads of dim {cfg.head_dim}, {cfg.num_key_value_heads} KV head, MLP {cfg.intermediate_size}, float32, tied
embeddings, max_position_embeddings {cfg.max_position_embeddings}) with a byte-level BPE
tokenizer ({cfg.vocab_size} tokens; `<think>`, `</think>` and `<|endoftext|>` are special
tokens; ` true` = id {true_id}, ` false` = id {false_id}).

Given the raw rank1 prompt (no chat template)

    Determine if the following passage is relevant to the query. Answer only with 'true' or 'false'.
    Query: <query>
    Passage: <passage>
    <think>

it generates a short templated reasoning (~20-50 tokens) ending in
`</think> true` or `</think> false`. It was trained ({steps} AdamW steps, a few
minutes on one CPU thread) only on synthetic random topical queries/passages,
where the label is plain lexical overlap (true iff query and passage share a
content word), plus examples of the rank1 repair format
(prompt + "\\n" + truncated reasoning + "\\n</think>" then ` true`/` false`).
On held-out synthetic prompts its verdict mostly follows that rule; on real
English text (e.g. `sample_data/corpus.jsonl`) the reasoning is garbled and the
verdict is essentially arbitrary, but it still ends in `</think> true|false`.
Because `</think>` is a special token, stop strings such as `</think> true` only
match when decoding with `skip_special_tokens=False`.

Rebuild (CPU, a few minutes):

    python sample_data/build_tiny_rank1.py            # writes sample_data/tiny-rank1/
    python sample_data/build_tiny_rank1.py --out DIR

Rebuilding is deterministic (fixed seeds, deterministic algorithms, one
thread): the same torch/transformers/tokenizers versions give identical files.
This copy was built with torch {torch.__version__}, transformers {transformers.__version__},
tokenizers {tokenizers.__version__}.
"""
    (out / "README.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
