#!/usr/bin/env python
"""Write the synthetic `large` benchmark workload: a corpus, queries and a first-stage TREC run.

    python bench/make_workload.py                      # bench/workload-large/, 200 queries x 100 docs
    python bench/make_workload.py --queries 20 --docs-per-query 10 --out /tmp/w

Deterministic: the same arguments (and seed) write the same bytes, on any machine and Python 3.10+
(only `random.Random(seed)` and string formatting are involved). Nothing here needs a model.

The text is English-like: each query is about one of a few dozen topics and each passage mixes
sentences from one to three topics, so some passages share words with the query and some do not
(rank1-like models, tiny-rank1 included, reason about overlap; random bytes would be off-distribution).
Passages are about `--passage-words` words (default 200, about 300 tokens with Qwen-style BPE
tokenizers; `bench/throughput.py` reports the exact mean prompt length it measured).

Files (in --out):
  corpus.jsonl   {"doc_id", "title", "text"} per line; every document the run names, plus
                 distractors never retrieved (--extra-docs)
  queries.tsv    qid<TAB>text
  run.trec       qid Q0 docid rank score synthetic, --docs-per-query lines per query, scores decreasing
  MANIFEST.json  the arguments and each file's sha256
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "workload-large"
SEED = 20250301

TOPICS = {
    "astronomy": "planet star galaxy comet orbit telescope nebula asteroid moon solar eclipse meteor gravity cosmos satellite",
    "cooking": "recipe oven flour butter garlic onion pasta sauce bread spice kitchen pepper roast dough cheese",
    "medicine": "patient doctor vaccine fever virus therapy clinic symptom dosage surgery nurse insulin allergy infection hospital",
    "finance": "bank loan interest mortgage stock bond market budget inflation credit dividend investor pension currency savings",
    "sports": "football tennis player coach stadium league match goal referee tournament soccer basketball runner marathon athlete",
    "computing": "software compiler python database server network kernel memory processor algorithm browser cache protocol linux thread",
    "history": "empire castle king queen battle treaty dynasty revolution monarch colony pharaoh medieval kingdom siege senate",
    "biology": "cell protein enzyme gene species bacteria organism tissue neuron evolution mutation chromosome habitat predator insect",
    "geography": "river mountain desert ocean island valley glacier volcano canyon coast climate rainfall lake forest plateau",
    "music": "guitar piano violin melody rhythm chord orchestra concert album singer drummer opera symphony lyrics tempo",
    "law": "court judge lawyer contract statute verdict appeal jury tenant lawsuit patent copyright evidence witness attorney",
    "transport": "train railway airport airline engine tire highway bridge subway ticket freight truck harbor ferry vehicle",
    "gardening": "garden soil seed compost tulip rose shrub fertilizer lawn hedge orchard pruning weeds seedling mulch",
    "chemistry": "acid oxygen carbon hydrogen atom electron reaction catalyst sodium chlorine solvent polymer ethanol nitrogen isotope",
    "energy": "solar wind turbine battery grid voltage reactor coal pipeline fuel charger inverter hydro emissions heating",
    "education": "school teacher student exam lesson classroom degree campus lecture tutor homework library curriculum grade diploma",
}
TOPIC_WORDS = {name: words.split() for name, words in TOPICS.items()}
ADJECTIVES = ("large small ancient modern rapid slow bright dark heavy light common rare simple complex "
              "early late warm cold strong weak").split()
NAMES = "Alice Bruno Chen Dana Elif Farah Goran Hana Ivan Jonas Kofi Lena Mateo Nadia Omar Priya Quinn Rosa".split()
PLACES = "Paris Lagos Lima Oslo Kyoto Cairo Denver Madrid Nairobi Quebec Dublin Hanoi Perth Vienna Austin Seoul".split()

QUERY_TEMPLATES = (
    "what is {a} {b}", "how does {a} affect {b}", "{a} {b} {c}", "why do {a} need {b}", "effects of {a} on {b}",
    "best {a} for {b}", "when was the {a} {b} introduced", "how to use {a} with {b}",
    "what happens to {a} during {b}", "average cost of {a} in {place}",
)
SENTENCE_TEMPLATES = (
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
    "Since {year} the {a} has been part of {b} ({num}%).",
)


def _fill(rng: random.Random, template: str, words: list[str]) -> str:
    a, b, c = rng.sample(words, 3)
    return template.format(a=a, b=b, c=c, adj=rng.choice(ADJECTIVES), name=rng.choice(NAMES),
                           place=rng.choice(PLACES), year=rng.randint(1800, 2024), num=rng.randint(2, 999))


def make_query(rng: random.Random, topic: str) -> str:
    return _fill(rng, rng.choice(QUERY_TEMPLATES), TOPIC_WORDS[topic])


def make_passage(rng: random.Random, topics: list[str], words: int) -> tuple[str, str]:
    """(title, text): sentences from `topics` until about `words` words."""
    sentences: list[str] = []
    count = 0
    while count < words:
        sentence = _fill(rng, rng.choice(SENTENCE_TEMPLATES), TOPIC_WORDS[rng.choice(topics)])
        sentences.append(sentence)
        count += len(sentence.split())
    a, b = rng.sample(TOPIC_WORDS[topics[0]], 2)
    return f"{a.capitalize()} and {b}", " ".join(sentences)


def generate(out: Path, *, queries: int = 200, docs_per_query: int = 100, passage_words: int = 200,
             extra_docs: int = 1000, seed: int = SEED) -> dict:
    """Write the workload into `out`; returns the manifest (also written as MANIFEST.json)."""
    if queries <= 0 or docs_per_query <= 0 or passage_words <= 0 or extra_docs < 0:
        raise ValueError("queries, docs_per_query and passage_words must be positive, extra_docs >= 0")
    rng = random.Random(seed)
    topic_names = sorted(TOPIC_WORDS)
    out.mkdir(parents=True, exist_ok=True)
    query_lines: list[str] = []
    run_lines: list[str] = []
    corpus_lines: list[str] = []
    doc_number = 0

    def new_doc(topics: list[str]) -> str:
        nonlocal doc_number
        doc_number += 1
        doc_id = f"D{doc_number:07d}"
        title, text = make_passage(rng, topics, passage_words)
        corpus_lines.append(json.dumps({"doc_id": doc_id, "title": title, "text": text}, ensure_ascii=False))
        return doc_id

    for q in range(1, queries + 1):
        qid = f"Q{q:04d}"
        topic = topic_names[(q - 1) % len(topic_names)]
        query_lines.append(f"{qid}\t{make_query(rng, topic)}")
        # Each query gets its own documents (as a first stage over a big corpus mostly does): about a
        # third on its topic, the rest mixing it with others or about other topics entirely.
        ranked = []
        for _ in range(docs_per_query):
            kind = rng.random()
            if kind < 0.35:
                topics = [topic]
            elif kind < 0.7:
                topics = [topic] + rng.sample([t for t in topic_names if t != topic], rng.randint(1, 2))
                rng.shuffle(topics)
            else:
                topics = rng.sample([t for t in topic_names if t != topic], rng.randint(1, 3))
            ranked.append(new_doc(topics))
        score = 30.0 + rng.random() * 10
        for rank, doc_id in enumerate(ranked, start=1):
            run_lines.append(f"{qid} Q0 {doc_id} {rank} {score:.4f} synthetic")
            score -= 0.01 + rng.random() * 0.2
    for _ in range(extra_docs):
        new_doc(rng.sample(topic_names, rng.randint(1, 3)))

    files = {
        "queries.tsv": "\n".join(query_lines) + "\n",
        "run.trec": "\n".join(run_lines) + "\n",
        "corpus.jsonl": "\n".join(corpus_lines) + "\n",
    }
    manifest = {
        "generator": "bench/make_workload.py",
        "seed": seed,
        "queries": queries,
        "docs_per_query": docs_per_query,
        "passage_words": passage_words,
        "extra_docs": extra_docs,
        "documents": doc_number,
        "sha256": {},
    }
    for name, text in files.items():
        data = text.encode("utf-8")
        (out / name).write_bytes(data)
        manifest["sha256"][name] = hashlib.sha256(data).hexdigest()
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def is_current(out: Path, **kwargs) -> bool:
    """Whether `out` holds the workload these arguments would write (checked by manifest + hashes)."""
    path = out / "MANIFEST.json"
    if not path.is_file():
        return False
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    wanted = {"queries": 200, "docs_per_query": 100, "passage_words": 200, "extra_docs": 1000, "seed": SEED}
    wanted.update(kwargs)
    if any(manifest.get(key) != value for key, value in wanted.items()):
        return False
    for name, digest in manifest.get("sha256", {}).items():
        file = out / name
        if not file.is_file() or hashlib.sha256(file.read_bytes()).hexdigest() != digest:
            return False
    return bool(manifest.get("sha256"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--docs-per-query", type=int, default=100)
    parser.add_argument("--passage-words", type=int, default=200)
    parser.add_argument("--extra-docs", type=int, default=1000, help="documents in the corpus that no query retrieves")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    manifest = generate(args.out, queries=args.queries, docs_per_query=args.docs_per_query,
                        passage_words=args.passage_words, extra_docs=args.extra_docs, seed=args.seed)
    print(f"wrote {args.out}: {manifest['queries']} queries, {manifest['documents']} documents, "
          f"{manifest['queries'] * manifest['docs_per_query']} run lines", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
