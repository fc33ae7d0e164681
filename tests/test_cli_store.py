"""What a user computed or owns is never lost: `rank1 rerank` and `rank1 merge` through the CLI
with the reasoning store (the transformers engine on tiny-rank1: real generations, no vLLM start).

Each data-loss case of the traces-journal era is a test here."""

import json
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, SAMPLE, TINY_MODEL

from rank1_cli.reasoning.store import StoredGeneration

RUN = SAMPLE / "run.bm25.trec"
OTHER_RUN = SAMPLE / "run.bm25-notitle.trec"
INPUTS = ["--corpus", str(SAMPLE / "corpus.jsonl"), "--queries", str(SAMPLE / "queries.tsv")]


def rerank(*args, store, cwd=REPO):
    command = [sys.executable, "-m", "rank1_cli.cli", "rerank", "--model", str(TINY_MODEL), *INPUTS,
               "--backend", "transformers", "--device", "cpu", "--dtype", "float32", "--max-model-len", "1024",
               "--max-reasoning-tokens", "48", "--store", str(store), *args]    # later options win
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)


def summary_number(stderr: str, before: str) -> int:
    """The number in the summary line just before `before` (e.g. ' distinct prompts')."""
    return int(stderr.split(before)[0].rsplit(" ", 1)[1])


def from_store(stderr: str) -> int:
    return int(stderr.split("store: ")[1].split()[0])


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """The sample run's top 6 reranked once: (folder, store)."""
    tmp = tmp_path_factory.mktemp("first")
    store = tmp / "store.sqlite"
    proc = rerank(str(RUN), "--top-k", "6", "-o", str(tmp / "a.trec"), store=store)
    assert proc.returncode == 0, proc.stderr
    assert summary_number(proc.stderr, " distinct prompts") == 150 and from_store(proc.stderr) == 0
    return tmp, store


def copy_store(first, tmp_path):
    folder, store = first
    shutil.copy(store, tmp_path / "store.sqlite")
    return tmp_path / "store.sqlite"


def test_a_smaller_top_k_reuses_the_stored_reasoning_and_keeps_the_rest(first, tmp_path):
    store = copy_store(first, tmp_path)
    proc = rerank(str(RUN), "--top-k", "3", "-o", str(tmp_path / "b.trec"), store=store)
    assert proc.returncode == 0, proc.stderr
    assert summary_number(proc.stderr, " distinct prompts") == 0 and from_store(proc.stderr) == 75
    deeper = rerank(str(RUN), "--top-k", "6", "-o", str(tmp_path / "c.trec"), store=store)
    assert summary_number(deeper.stderr, " distinct prompts") == 0 and from_store(deeper.stderr) == 150
    assert (tmp_path / "c.trec").read_bytes() == (first[0] / "a.trec").read_bytes()
    origins = {json.loads(line)["origin"] for line in (tmp_path / "c.traces.jsonl").read_text().splitlines()}
    assert origins == {"store"}


def test_another_first_stage_run_generates_only_the_pairs_it_does_not_share(first, tmp_path):
    store = copy_store(first, tmp_path)
    proc = rerank(str(OTHER_RUN), "--top-k", "6", "-o", str(tmp_path / "other.trec"), store=store)
    assert proc.returncode == 0, proc.stderr
    top = {}
    for path in (RUN, OTHER_RUN):
        pairs = set()
        for line in path.read_text().splitlines():
            qid, _, docid, rank, _, _ = line.split()
            if int(rank) <= 6:
                pairs.add((qid, docid))
        top[path] = pairs
    shared = len(top[RUN] & top[OTHER_RUN])
    assert 0 < shared < 150
    assert from_store(proc.stderr) == shared and summary_number(proc.stderr, " distinct prompts") == 150 - shared


def test_two_reranks_on_one_traces_file_lose_no_reasoning(first, tmp_path):
    store = copy_store(first, tmp_path)
    traces = tmp_path / "shared.traces.jsonl"
    for run, out in ((RUN, "a.trec"), (OTHER_RUN, "b.trec")):
        proc = rerank(str(run), "--top-k", "6", "-o", str(tmp_path / out), "--traces", str(traces), store=store)
        assert proc.returncode == 0, proc.stderr
    again = rerank(str(RUN), "--top-k", "6", "-o", str(tmp_path / "a2.trec"), store=store)
    assert summary_number(again.stderr, " distinct prompts") == 0 and from_store(again.stderr) == 150


CORPUS = str(SAMPLE / "corpus.jsonl")


@pytest.mark.parametrize("case", ["traces is the output", "traces is the corpus", "output is the run",
                                  "output is the store",
                                  "overwrite with traces on the corpus", "traces is a notes file",
                                  "traces is a one-line settings.json", "traces reformatted as one JSON array"])
def test_rank1_never_writes_to_a_file_it_reads_or_did_not_write(case, tmp_path):
    run = tmp_path / "run.trec"
    shutil.copy(RUN, run)
    corpus = tmp_path / "corpus.jsonl"
    shutil.copy(CORPUS, corpus)
    notes = tmp_path / "notes.txt"
    notes.write_text("call Ana about the qrels\n")
    settings = tmp_path / "settings.json"
    settings.write_text('{"model": "rank1-7b", "top_k": 100}\n')
    array = tmp_path / "traces.json"
    array.write_text(json.dumps([{"qid": "q01", "docid": "d001", "reasoning": "..."}]) + "\n")
    output = tmp_path / "out.trec"
    args, message = {
        "traces is the output": (["-o", str(output), "--traces", str(output)],
                                 "named both as the output run and as the traces"),
        "traces is the corpus": (["-o", str(output), "--traces", str(corpus)], "the traces would overwrite the corpus"),
        "output is the run": (["-o", str(run)], "the output run would overwrite the first-stage run"),
        "output is the store": (["-o", str(tmp_path / "store.sqlite")],
                                "the output run would overwrite the reasoning store"),
        "overwrite with traces on the corpus": (["-o", str(output), "--traces", str(corpus), "--overwrite"],
                                                "the traces would overwrite the corpus"),
        "traces is a notes file": (["-o", str(output), "--traces", str(notes)], "exists and is not a rank1 traces file"),
        "traces is a one-line settings.json": (["-o", str(output), "--traces", str(settings)],
                                               "exists and is not a rank1 traces file"),
        "traces reformatted as one JSON array": (["-o", str(output), "--traces", str(array)],
                                                 "exists and is not a rank1 traces file"),
    }[case]
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    command = [sys.executable, "-m", "rank1_cli.cli", "rerank", str(run), "--model", str(TINY_MODEL),
               "--corpus", str(corpus), "--queries", str(SAMPLE / "queries.tsv"), "--store",
               str(tmp_path / "store.sqlite"), *args]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before        # nothing written, nothing changed


def test_merge_never_writes_over_a_shard(tmp_path):
    shard = tmp_path / "s1.trec"
    shard.write_text("q01 Q0 d001 1 0.9 rank1\n")
    (tmp_path / "s1.traces.jsonl").write_text("")
    before = shard.read_bytes()
    proc = subprocess.run([sys.executable, "-m", "rank1_cli.cli", "merge", str(shard), "-o", str(shard)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "the merged run would overwrite the shard run 1" in proc.stderr, proc.stderr
    assert shard.read_bytes() == before


def test_a_failed_rerank_leaves_no_output_file(tmp_path):
    proc = rerank(str(RUN), "--top-k", "2", "-o", str(tmp_path / "out.trec"), "--device", "nonsense",
                  store=tmp_path / "store.sqlite")
    assert proc.returncode == 1 and "the transformers engine could not start" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("store.sqlite")) == []


def test_a_damaged_store_stops_the_rerank_before_any_model_loads(tmp_path):
    store = tmp_path / "store.sqlite"
    damaged = b"SQLite format 3\x00" + b"\x07" * 600
    store.write_bytes(damaged)
    proc = rerank(str(RUN), "--top-k", "2", "-o", str(tmp_path / "out.trec"), store=store)
    assert proc.returncode == 1 and f"{store}: the store is damaged" in proc.stderr, proc.stderr
    assert store.read_bytes() == damaged and not (tmp_path / "out.trec").exists()


def test_two_reranks_writing_one_store_at_once_lose_nothing(tmp_path):
    import sqlite3

    store = tmp_path / "store.sqlite"
    base = [sys.executable, "-m", "rank1_cli.cli", "rerank", "--model", str(TINY_MODEL), *INPUTS, "--backend",
            "transformers", "--device", "cpu", "--dtype", "float32", "--max-model-len", "1024",
            "--max-reasoning-tokens", "48", "--store", str(store), "--top-k", "5", "--chunk-size", "4"]
    procs = [subprocess.Popen([*base, str(run), "-o", str(tmp_path / f"{i}.trec")], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i, run in enumerate((RUN, OTHER_RUN))]
    outcomes = [proc.communicate(timeout=600) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outcomes
    traces = [[json.loads(line) for line in (tmp_path / f"{i}.traces.jsonl").read_text().splitlines()] for i in (0, 1)]
    distinct = {t["prompt_sha256"] for ts in traces for t in ts}
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT COUNT(*) FROM generations").fetchone() == (len(distinct),)
    # Both finished with every pair, and a third run finds all of them stored.
    assert [len(ts) for ts in traces] == [125, 125]
    again = rerank(str(OTHER_RUN), "--top-k", "5", "-o", str(tmp_path / "again.trec"), store=store)
    assert summary_number(again.stderr, " distinct prompts") == 0 and from_store(again.stderr) == 125


def test_store_export_never_writes_over_the_store(tmp_path):
    store = tmp_path / "store.sqlite"
    from rank1_cli.reasoning.store import Store

    with Store(store):
        pass
    before = store.read_bytes()
    proc = subprocess.run([sys.executable, "-m", "rank1_cli.cli", "store", "export", "--store", str(store), "-o",
                           str(store)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "the export would overwrite the store" in proc.stderr, proc.stderr
    assert store.read_bytes() == before


# --- a store rank1 cannot use stops every command before it writes anything ------------------

def cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "rank1_cli.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def notes(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("my notes, not a store\n")
    return path


def not_a_store(proc, path):
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (f"rank1: error: {path}: not a rank1 store (not an SQLite database: it begins with b'my notes, "
                           "not a '); it was left as it is. Choose another store path\n")
    assert path.read_text() == "my notes, not a store\n"


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_a_rerank_on_a_file_that_is_no_store_stops_before_the_model_loads(tmp_path, notes, dry_run):
    unloadable = tmp_path / "model"             # a config and no tokenizer: loading it would fail
    unloadable.mkdir()
    shutil.copy(TINY_MODEL / "config.json", unloadable)
    proc = rerank(str(RUN), "--top-k", "2", "-o", str(tmp_path / "out.trec"), "--model", str(unloadable), *dry_run,
                  store=notes)
    not_a_store(proc, notes)
    assert proc.stdout == "" and sorted(p.name for p in tmp_path.iterdir()) == ["model", "notes.txt"]


def test_a_store_under_a_file_stops_a_sweep_before_anything_is_written(tmp_path):
    (tmp_path / "afile").write_text("x")
    store = tmp_path / "afile" / "store.sqlite"
    proc = cli("sweep", str(RUN), "--model", TINY_MODEL, *INPUTS, "--backend", "transformers", "--budgets", "16,32",
               "--output-dir", tmp_path / "out", "--store", store)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"rank1: error: {store}: cannot create the store: {tmp_path / 'afile'} is a file, not a folder\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_merge_checks_the_store_before_it_writes_the_merged_run(tmp_path, notes):
    for name in ("a.trec", "b.trec"):
        shutil.copy(RUN, tmp_path / name)
        (tmp_path / name.replace(".trec", ".traces.jsonl")).write_text("")
    proc = cli("merge", tmp_path / "a.trec", tmp_path / "b.trec", "-o", tmp_path / "merged.trec", "--store", notes)
    not_a_store(proc, notes)
    assert not (tmp_path / "merged.trec").exists() and not (tmp_path / "merged.traces.jsonl").exists()


@pytest.mark.parametrize("command", [["info"], ["export", "-o", "{out}"], ["prune", "--model", "m"],
                                     ["import", "{traces}"]])
def test_every_store_command_says_a_file_is_no_store(tmp_path, notes, command):
    (tmp_path / "t.jsonl").write_text("")
    args = [arg.format(out=tmp_path / "out.jsonl", traces=tmp_path / "t.jsonl") for arg in command]
    not_a_store(cli("store", *args, "--store", notes), notes)
    assert not (tmp_path / "out.jsonl").exists()


# --- a traces file being replaced: its reasoning is kept ----------------------------------------

def tiny_rerank(*args):
    """A rerank of a handful of pairs: the first two queries, top 1, a 16-token budget."""
    command = [sys.executable, "-m", "rank1_cli.cli", "rerank", "--model", str(TINY_MODEL), *INPUTS,
               "--backend", "transformers", "--device", "cpu", "--dtype", "float32", "--max-model-len", "1024",
               "--max-reasoning-tokens", "16", "--top-k", "1", *map(str, args)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.fixture
def two_queries(tmp_path):
    run = tmp_path / "two.trec"
    run.write_text("".join(line for line in RUN.read_text().splitlines(keepends=True) if line.split()[0] in ("q01", "q02")))
    return run


def old_traces(tmp_path, **changes):
    """Traces another rerank wrote (other pairs, another configuration): their only copy."""
    from store_samples import trace_line

    traces = tmp_path / "t.jsonl"
    traces.write_text("".join(trace_line(i, **changes) + "\n" for i in range(3)))
    return traces


def test_a_rerank_with_no_store_never_replaces_traces_whose_reasoning_it_would_lose(tmp_path, two_queries):
    traces = old_traces(tmp_path)
    before = traces.read_bytes()
    proc = tiny_rerank(two_queries, "-o", tmp_path / "out.trec", "--traces", traces, "--no-store")
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert " ".join(proc.stderr.split()) == (
        f"rank1: error: {traces} holds 3 generations of rank1 traces that this rerank would replace and not write "
        f"again; with --no-store they would be lost. To keep them: rerank with a store (without --no-store: they are "
        f"imported into it first), move {traces} away, or name another --traces")
    assert traces.read_bytes() == before and not (tmp_path / "out.trec").exists()


def test_a_rerank_imports_the_traces_it_replaces_into_the_store(tmp_path, two_queries):
    from store_samples import KEY, sha

    from rank1_cli.reasoning.store import Store

    traces, store = old_traces(tmp_path), tmp_path / "store.sqlite"
    with Store(store) as opened:            # one of them is stored already: kept as it is, not doubled
        opened.put_many(KEY, [StoredGeneration(sha(0), "fallback", None, None, None, 0, "mine")])
    proc = tiny_rerank(two_queries, "-o", tmp_path / "out.trec", "--traces", traces, "--store", store)
    assert proc.returncode == 0, proc.stderr
    assert f"store: 2 generations of the traces being replaced ({traces}) imported (1 there already)" in \
        " ".join(proc.stderr.split())
    with Store(store) as opened:
        kept = opened.get_many(KEY, [sha(i) for i in range(3)])
        assert [kept[sha(i)].reasoning for i in range(3)] == ["mine", "reasoning 1.", "reasoning 2."]
        assert opened.count() == 3 + 2
    assert [json.loads(line)["qid"] for line in traces.read_text().splitlines()] == ["q01", "q02"]
