"""`rank1 rerank` and `rank1 merge` through the CLI with real generations: the transformers engine
on tiny-rank1 (no vLLM). One rerank fills a store; the other commands reuse it, so they load no
model unless they have new prompts."""

import gzip
import json
import shutil

import pytest
from commands import CORPUS, rank1
from conftest import SAMPLE, TINY_MODEL

TRANSFORMERS = ["--model", str(TINY_MODEL), *CORPUS, "--backend", "transformers", "--device", "cpu",
                "--dtype", "float32", "--max-model-len", "1024", "--max-reasoning-tokens", "32", "--top-k", "2"]
PROMPT = ("Determine if the following passage is relevant to the query. Answer only with 'true' or 'false'.\n"
          "Query: {query}\nPassage: {passage}\n<think>")


def run_lines(text: str) -> list[list[str]]:
    return [line.split(" ") for line in text.splitlines()]


@pytest.fixture(scope="module")
def reranked(tmp_path_factory):
    """The sample run's top 2 reranked to stdout: (folder, store, stdout, stderr)."""
    folder = tmp_path_factory.mktemp("reranked")
    store = folder / "store.sqlite"
    proc, _ = rank1("rerank", SAMPLE / "run.bm25.trec", *TRANSFORMERS, "--store", store, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return folder, store, proc.stdout, proc.stderr


def test_a_rerank_to_stdout_writes_only_the_run_there(reranked):
    folder, store, stdout, stderr = reranked
    lines = run_lines(stdout)
    first_stage = run_lines((SAMPLE / "run.bm25.trec").read_text())
    assert len(lines) == len(first_stage) == 1250                      # --keep-tail: every document kept
    assert all(len(f) == 6 and f[1] == "Q0" and f[5] == "rank1" for f in lines)
    assert [f[0] for f in lines] == [f[0] for f in first_stage]         # queries in the run's order
    for qid in {f[0] for f in lines}:
        mine = [f for f in lines if f[0] == qid]
        assert [int(f[3]) for f in mine] == list(range(1, len(mine) + 1))
        scores = [float(f[4]) for f in mine]
        assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)
        theirs = [f[2] for f in first_stage if f[0] == qid]
        assert sorted(f[2] for f in mine[:2]) == sorted(theirs[:2]) and [f[2] for f in mine[2:]] == theirs[2:]
    assert "reranked 50 pairs of 25 queries" in stderr and "traces: not saved" in stderr  # the summary: stderr
    assert not list(folder.glob("*.traces.jsonl"))                      # no traces for a run on stdout


def test_a_rerank_whose_pairs_are_stored_writes_the_same_run_and_default_traces(reranked, tmp_path):
    folder, store, stdout, _ = reranked
    shutil.copy(store, tmp_path / "store.sqlite")
    out = tmp_path / "again.trec.gz"
    proc, _ = rank1("rerank", SAMPLE / "run.bm25.trec", *TRANSFORMERS, "--store", tmp_path / "store.sqlite",
                    "-o", out, "-q")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert gzip.decompress(out.read_bytes()).decode() == stdout
    traces = [json.loads(line) for line in (tmp_path / "again.traces.jsonl").read_text().splitlines()]
    assert len(traces) == 50 and all(t["origin"] == "store" for t in traces)


def test_shards_merged_through_the_cli_equal_the_whole_rerank(reranked, tmp_path):
    folder, store, stdout, _ = reranked
    shutil.copy(store, tmp_path / "store.sqlite")
    for i in (1, 2):
        proc, _ = rank1("rerank", SAMPLE / "run.bm25.trec", *TRANSFORMERS, "--store", tmp_path / "store.sqlite",
                        "--shard", f"{i}/2", "-o", tmp_path / f"part{i}.trec", "-q")
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / f"part{i}.traces.jsonl").exists()
    merged = tmp_path / "merged.trec"
    proc, _ = rank1("merge", tmp_path / "part2.trec", tmp_path / "part1.trec", "-o", merged,
                    "--first-stage", SAMPLE / "run.bm25.trec", "--store", tmp_path / "store.sqlite")
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    assert "merged 2 shards (0 empty): 25 queries, 50 traced pairs" in proc.stderr
    assert "0 new generations imported" in proc.stderr
    assert merged.read_text() == stdout
    assert len((tmp_path / "merged.traces.jsonl").read_text().splitlines()) == 50
    to_stdout, _ = rank1("merge", tmp_path / "part1.trec", tmp_path / "part2.trec", "--first-stage",
                         SAMPLE / "run.bm25.trec", "--no-store")
    assert to_stdout.returncode == 0 and to_stdout.stdout == stdout


def test_missing_skip_drops_absent_documents_with_a_warning(reranked, tmp_path):
    folder, store, stdout, _ = reranked
    shutil.copy(store, tmp_path / "store.sqlite")
    first_stage = (SAMPLE / "run.bm25.trec").read_text().splitlines(keepends=True)
    # q01 gets an absent document at rank 2: its top 2 is then one stored pair, as every other query's
    run = tmp_path / "run.trec"
    run.write_text(first_stage[0] + "q01 Q0 no-such-doc 2 14.99 bm25\n" + "".join(first_stage[1:]))
    args = [run, *TRANSFORMERS, "--store", tmp_path / "store.sqlite", "--no-keep-tail"]
    refused, _ = rank1("rerank", *args)
    assert refused.returncode == 2 and "Pass --missing skip" in refused.stderr
    proc, _ = rank1("rerank", *args, "--missing", "skip")
    assert proc.returncode == 0, proc.stderr
    assert "dropping 1 documents missing" in " ".join(proc.stderr.split()) and "no-such-doc" in proc.stderr
    assert "0 distinct prompts" in " ".join(proc.stderr.split())        # nothing generated
    lines = run_lines(proc.stdout)
    assert [f[2] for f in lines if f[0] == "q01"] == [first_stage[0].split()[2]]
    assert len(lines) == 49
    assert "no-such-doc" not in proc.stdout


def test_a_tag_with_a_space_is_refused_before_any_model_loads(tmp_path):
    proc, seconds = rank1("rerank", SAMPLE / "run.bm25.trec", *TRANSFORMERS, "--tag", "my run", "-o",
                          tmp_path / "out.trec", "--no-store")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "rank1: error: the run tag (column 6) must be one word without spaces, found 'my run'\n"
    assert not (tmp_path / "out.trec").exists() and seconds < 5


def test_a_tag_names_every_line_of_the_output(reranked, tmp_path):
    folder, store, stdout, _ = reranked
    shutil.copy(store, tmp_path / "store.sqlite")
    proc, _ = rank1("rerank", SAMPLE / "run.bm25.trec", *TRANSFORMERS, "--store", tmp_path / "store.sqlite",
                    "--tag", "tiny-k2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == stdout.replace(" rank1\n", " tiny-k2\n")


def test_instructions_are_appended_to_their_querys_text_in_the_prompt(reranked, tmp_path):
    folder, store, _, _ = reranked
    shutil.copy(store, tmp_path / "store.sqlite")
    instructions = tmp_path / "instructions.tsv"
    instructions.write_text("q02\tOnly documents with code count.\n")
    traces = tmp_path / "t.jsonl"
    proc, _ = rank1("rerank", SAMPLE / "run.bm25.trec", *TRANSFORMERS, "--store", tmp_path / "store.sqlite",
                    "--instructions", instructions, "--traces", traces, "-o", tmp_path / "out.trec", timeout=600)
    assert proc.returncode == 0, proc.stderr
    corpus = {d["doc_id"]: d for d in map(json.loads, (SAMPLE / "corpus.jsonl").read_text().splitlines())}
    queries = dict(line.split("\t") for line in (SAMPLE / "queries.tsv").read_text().splitlines())
    by_pair = {(t["qid"], t["docid"]): t for t in map(json.loads, traces.read_text().splitlines())}
    assert len(by_pair) == 50
    import hashlib

    for (qid, docid), trace in by_pair.items():
        query = queries[qid] + (" Only documents with code count." if qid == "q02" else "")
        doc = corpus[docid]
        passage = f"{doc['title']} {doc['text']}" if doc.get("title") else doc["text"]
        prompt = PROMPT.format(query=query, passage=passage)
        assert trace["prompt_sha256"] == hashlib.sha256(prompt.encode()).hexdigest(), (qid, docid)
        # only q02's prompts are new; every other pair comes from the store
        assert trace["origin"] == ("engine" if qid == "q02" else "store"), (qid, docid)


def test_a_cascade_reasons_on_the_best_pair_of_each_query_as_a_full_rerank_would(reranked, tmp_path):
    """--reason-top 1: the reasoned pair of each query is judged exactly as the full rerank judged it
    (here from the store it made), the other comes from budget 0; a second run generates nothing."""
    folder, store, stdout, _ = reranked
    shutil.copy(store, tmp_path / "store.sqlite")
    full = {(f[0], f[2]): float(f[4]) for f in run_lines(stdout)}
    command = ["rerank", SAMPLE / "run.bm25.trec", *TRANSFORMERS, "--store", tmp_path / "store.sqlite",
               "--reason-top", "1"]
    proc, _ = rank1(*command, "-o", tmp_path / "cascade.trec", timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "cascade: reasoned on 25 of 50 pairs" in proc.stderr
    traces = [json.loads(line) for line in (tmp_path / "cascade.traces.jsonl").read_text().splitlines()]
    reasoned = [t for t in traces if t["settings"]["max_reasoning_tokens"] == 32]
    screened = [t for t in traces if t["settings"]["max_reasoning_tokens"] == 0]
    assert len(reasoned) == len(screened) == 25 and len(traces) == 50
    assert all(t["origin"] == "store" and t["score"] == pytest.approx(full[(t["qid"], t["docid"])], abs=1e-12)
               for t in reasoned)
    assert all((t["origin"], t["completion"], t["output_tokens"], t["reasoning"]) == ("engine", "forced", 0, "")
               for t in screened)
    lines = run_lines((tmp_path / "cascade.trec").read_text())
    first = {}
    for f in lines:
        first.setdefault(f[0], f[2])
    assert {(t["qid"], t["docid"]) for t in reasoned} == set(first.items())      # the reasoned pair ranks first

    again, _ = rank1(*command, "-o", tmp_path / "again.trec", timeout=600)
    assert again.returncode == 0 and "store: 50 pairs from" in again.stderr, again.stderr
    assert (tmp_path / "again.trec").read_text() == (tmp_path / "cascade.trec").read_text()
