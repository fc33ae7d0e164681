"""The `rank1` command as a user runs it: exit codes, messages on stderr, nothing on stdout."""

import json
import os
import subprocess

import pytest
from commands import CORPUS, rank1
from conftest import RANK1, REPO, SAMPLE, TINY_MODEL


@pytest.fixture
def files(tmp_path):
    def make(name, content):
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return str(path)
    return make


GOOD = "q01 Q0 d001 1 3.0 bm25\nq01 Q0 d002 2 2.0 bm25\n"

BAD_RERANKS = {
    "malformed run line": (lambda f: [f("run", GOOD + "q01 Q0 d003 3\n")], r"run:3: expected 6 whitespace-separated columns"),
    "empty run": (lambda f: [f("run", "")], r"run: the run is empty"),
    "non-UTF-8 run": (lambda f: [f("run", b"q01 Q0 d\xff 1 1 t\n")], r"run:1: not valid UTF-8"),
    "missing run file": (lambda f: ["/no/such/run.trec"], r"/no/such/run.trec: no such file"),
    "qid without query text": (lambda f: [f("run", GOOD + "q99 Q0 d001 1 1 t\n")], r"1 queries of the run have no query text .*: q99"),
    "docid missing from corpus": (lambda f: [f("run", GOOD + "q01 Q0 zz1 3 1 t\nq01 Q0 zz2 4 0 t\n")],
                                  r"2 documents of the run's top 100 are not in .*: zz1, zz2 \(2 in all\)\. Pass --missing skip"),
    "unknown model alias": (lambda f: [f("run", GOOD), "--model", "rank1-7bb"], r"unknown model alias .*Did you mean rank1-7b"),
    "directory without config": (lambda f: [f("run", GOOD), "--model", str(SAMPLE)], r"has no config.json"),
    "zero top-k": (lambda f: [f("run", GOOD), "--top-k", "0"], r"--top-k must be a positive number"),
    "negative top-k": (lambda f: [f("run", GOOD), "--top-k", "-3"], r"--top-k must be a positive number"),
    "output directory missing": (lambda f: [f("run", GOOD), "-o", "/no/such/dir/out.trec"], r"output directory /no/such/dir does not exist"),
    "zero tensor-parallel": (lambda f: [f("run", GOOD), "--tensor-parallel", "0"], r"--tensor-parallel must be at least 1"),
    "zero data-parallel": (lambda f: [f("run", GOOD), "--data-parallel", "0"], r"--data-parallel must be at least 1"),
    "data-parallel with another backend": (lambda f: [f("run", GOOD), "--data-parallel", "2", "--backend", "openai",
                                                      "--base-url", "http://127.0.0.1:9"],
                                           r"the openai engine has no option --data-parallel; its options: --api-key-env, --base-url, --concurrency, --served-model"),
    "reason-top above top-k": (lambda f: [f("run", GOOD), "--top-k", "5", "--reason-top", "6"],
                               r"--reason-top \(6\) cannot exceed --top-k \(5\)"),
    "reason-top without reasoning": (lambda f: [f("run", GOOD), "--reason-top", "2", "--max-reasoning-tokens", "0"],
                                     r"--reason-top needs a reasoning budget: with --max-reasoning-tokens 0"),
    "early exit not increasing": (lambda f: [f("run", GOOD), "--early-exit", "64,16,8192"],
                                  r"--early-exit budgets must increase from at least 1 token, found 64,16,8192"),
    "early exit not ending at the budget": (lambda f: [f("run", GOOD), "--early-exit", "16,64"],
                                            r"the last --early-exit budget \(64\) must be --max-reasoning-tokens \(8192\)"),
    "confidence of 1": (lambda f: [f("run", GOOD), "--early-exit", "16,8192", "--confidence", "1"],
                        r"--confidence must be above 0.5 and below 1, found 1.0"),
    "negative reasoning budget": (lambda f: [f("run", GOOD), "--max-reasoning-tokens", "-1"],
                                  r"--max-reasoning-tokens must be at least 0 \(0: no reasoning"),
    "device with the vllm backend": (lambda f: [f("run", GOOD), "--device", "cuda:1"],
                                     r"the vllm engine has no option --device; its options: --data-parallel, --gpu-memory-utilization, --speculative, --tensor-parallel"),
    "nonsense dtype": (lambda f: [f("run", GOOD), "--dtype", "nonsense"], r"--dtype must be one of auto, float16, bfloat16, float32, found 'nonsense'"),
    "tiny context": (lambda f: [f("run", GOOD), "--max-model-len", "1"], r"--max-model-len must be at least 265 tokens"),
    "more replicas than cores": (lambda f: [f("run", GOOD), "--data-parallel", "4096"],
                                 r"--data-parallel 4096 needs (a CPU core per replica|\d+ GPUs)"),
}


@pytest.mark.parametrize("case", list(BAD_RERANKS))
def test_bad_rerank_input_is_a_clear_error_before_the_model_loads(case, files, tmp_path):
    make_args, message = BAD_RERANKS[case]
    args = make_args(files)
    if "--model" not in args:
        args += ["--model", str(TINY_MODEL)]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "out.trec")]
    proc, seconds = rank1("rerank", *args, *CORPUS)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("rank1: error: ")
    import re
    assert re.search(message, proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "out.trec").exists()
    assert seconds < 5, f"{case} took {seconds:.1f}s to report"


@pytest.mark.parametrize("output, traces", [("rank1.3.trec", "rank1.3.traces.jsonl"),
                                             ("runs.v2/bm25 dl19.trec.gz", "runs.v2/bm25 dl19.traces.jsonl"),
                                             ("résultats/rünk1.trec", "résultats/rünk1.traces.jsonl")])
def test_rerank_writes_its_traces_beside_the_output_under_the_derived_name(output, traces, files, tmp_path):
    # A notes file where the default traces go: rerank must refuse that very path (--dry-run: no model, whatever
    # goes wrong).
    (tmp_path / output).parent.mkdir(exist_ok=True)
    notes = tmp_path / traces
    notes.write_text("my notes\n")
    proc, _ = rank1("rerank", files("run", GOOD), "--model", TINY_MODEL, "-o", tmp_path / output, *CORPUS, "--dry-run")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"rank1: error: {notes}: exists and is not a rank1 traces file; it is left as it is. " \
                          "Choose another path for the traces, or move that file away\n"
    assert notes.read_text() == "my notes\n" and not (tmp_path / output).exists()


@pytest.mark.parametrize("command", [["merge", "."], ["report", ".", "--baseline", "b.trec", "--qrels", "q.txt", "-o", "r.html"]])
def test_a_folder_given_as_the_run_is_one_line_not_a_traceback(command):
    proc, _ = rank1(*command)
    assert (proc.returncode, proc.stderr) == (2, "rank1: error: .: a folder, not a run file; give the traces with --traces\n")


def test_unknown_dataset_id(files, tmp_path):
    proc, _ = rank1("rerank", files("run", GOOD), "--model", TINY_MODEL, "--dataset", "beir/scifakt/test",
                    "-o", tmp_path / "o.trec")
    assert proc.returncode == 2 and "unknown ir_datasets id" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_measure_lists_the_known_ones(files):
    proc, _ = rank1("eval", files("run", GOOD), "--qrels", SAMPLE / "qrels.txt", "-m", "nDCG@ten")
    assert proc.returncode == 2 and "nDCG@ten" in proc.stderr and "e.g. nDCG@10" in proc.stderr
    proc, _ = rank1("eval", files("run", GOOD), "--qrels", SAMPLE / "qrels.txt", "-m", "ndcg_cutt.10")
    assert proc.returncode == 2 and "ndcg_cutt.10" in proc.stderr
    assert "ndcg_cut" in proc.stderr and "Judged@k" in proc.stderr.replace("Judged@10", "Judged@k")
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_run_and_qrels_without_common_query_warn(files):
    proc, _ = rank1("eval", files("run", "zz Q0 d001 1 1 t\n"), "--qrels", SAMPLE / "qrels.txt", "-f", "tsv")
    stderr = " ".join(proc.stderr.split())
    assert "no query of the run is in the" in stderr and "--complete" in stderr


def test_help_explains_every_rerank_option_and_starts_fast():
    proc, seconds = rank1("rerank", "--help")
    assert proc.returncode == 0
    for option in ("--model", "--output", "--dataset", "--corpus", "--queries", "--traces", "--top-k", "--backend",
                   "--dtype", "--max-model-len", "--max-reasoning-tokens", "--tensor-parallel", "--data-parallel",
                   "--gpu-memory-utilization", "--prompt", "--instructions", "--keep-tail", "--tag", "--missing",
                   "--chunk-size", "--overwrite", "--quiet"):
        assert option in proc.stdout
    assert seconds < 3


def test_cli_never_imports_torch_vllm_or_the_server_for_help_and_eval(files):
    code = ("import sys; from rank1_cli import cli; sys.argv=['rank1','eval','%s','--qrels','%s'];\n"
            "try:\n    cli.main()\nexcept SystemExit: pass\n"
            "print('HEAVY', [m for m in ('torch', 'vllm', 'transformers', 'starlette', 'uvicorn') if m in sys.modules])")
    proc = subprocess.run([RANK1[0], "-c", code % (SAMPLE / "run.bm25.trec", SAMPLE / "qrels.txt")],
                          capture_output=True, text=True, cwd=REPO)
    assert "HEAVY []" in proc.stdout, proc.stdout + proc.stderr


USAGE_ERRORS = {
    "unknown option": (["rerank", "x", "--bogus"], "No such option"),
    "unknown command": (["nosuchcmd"], "No such command"),
    "eval without arguments": (["eval"], "Missing"),
}


@pytest.mark.parametrize("case", list(USAGE_ERRORS))
def test_usage_errors_print_usage_and_exit_2(case):
    args, message = USAGE_ERRORS[case]
    proc, _ = rank1(*args)
    assert proc.returncode == 2, proc.stderr
    assert "Usage: " in proc.stderr and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("which", ["run", "qrels"])
def test_a_truncated_gzip_input_is_one_line_naming_the_file(files, which):
    import gzip

    good = {"run": "".join(f"q01 Q0 x{i} {i + 1} {-i} t\n" for i in range(20000)),
            "qrels": "".join(f"q01 0 x{i} {i % 2}\n" for i in range(20000))}
    data = gzip.compress(good[which].encode())
    broken = files(f"{which}.gz", data[: len(data) // 2])
    args = {"run": [broken, "--qrels", SAMPLE / "qrels.txt"], "qrels": [files("run", GOOD), "--qrels", broken]}
    proc, _ = rank1("eval", *args[which])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"rank1: error: {broken}:") and "cannot read" in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("args", [["-", "-"], ["-", "--qrels", "-"]])
def test_stdin_given_twice_is_an_error_not_an_empty_run(args):
    if "--qrels" not in args:
        args = [*args, "--qrels", SAMPLE / "qrels.txt"]
    proc, _ = rank1("eval", *args, stdin=GOOD)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == "rank1: error: '-' (stdin) is given 2 times, but stdin can be read only once; give a " \
                          "file for all inputs but one\n"
    assert proc.stdout == ""


def test_a_bom_changes_no_number(files):
    run, qrels = (SAMPLE / "run.bm25.trec").read_bytes(), (SAMPLE / "qrels.txt").read_bytes()
    plain, _ = rank1("eval", files("run", run), "--qrels", files("qrels", qrels), "-m", "nDCG@10", "-q", "-f", "tsv")
    bom = b"\xef\xbb\xbf"
    with_bom, _ = rank1("eval", files("run.bom", bom + run), "--qrels", files("qrels.bom", bom + qrels),
                        "-m", "nDCG@10", "-q", "-f", "tsv")
    assert plain.returncode == with_bom.returncode == 0
    assert with_bom.stdout == plain.stdout and "\ufeff" not in with_bom.stdout
    assert with_bom.stderr == plain.stderr


BAD_EVALS = {
    "run is a directory": (lambda f, tmp: [tmp, "--qrels", SAMPLE / "qrels.txt"], r"is a directory"),
    "empty run": (lambda f, tmp: [f("run", ""), "--qrels", SAMPLE / "qrels.txt"], r"run: the run is empty"),
    "empty qrels": (lambda f, tmp: [f("run", GOOD), "--qrels", f("qrels", "\n")], r"qrels: the qrels file is empty"),
    "document twice in the run": (lambda f, tmp: [f("run", GOOD + "q01 Q0 d001 3 1.0 bm25\n"), "--qrels",
                                                  SAMPLE / "qrels.txt"],
                                  r"run:3: document 'd001' is given twice for query 'q01' \(first at line 1\)"),
    "grade twice in the qrels": (lambda f, tmp: [f("run", GOOD), "--qrels", f("qrels", "q01 0 d001 2\nq01 0 d001 0\n")],
                                 r"qrels:2: document 'd001' is given twice for query 'q01' \(first at line 1\)"),
    "score 2_0": (lambda f, tmp: [f("run", GOOD + "q01 Q0 d003 3 2_0 bm25\n"), "--qrels", SAMPLE / "qrels.txt"],
                  r"run:3: score \(column 5\) must be a number written in decimal"),
    "a 1 MB docid": (lambda f, tmp: [f("run", "q01 Q0 " + "d" * 1_000_000 + " 1\n"), "--qrels", SAMPLE / "qrels.txt"],
                     r"run:1: expected 6 whitespace-separated columns .*\(1000009 characters\)"),
}


@pytest.mark.parametrize("case", list(BAD_EVALS))
def test_bad_eval_input_is_one_line_exit_2(case, files, tmp_path):
    import re

    make_args, message = BAD_EVALS[case]
    proc, _ = rank1("eval", *make_args(files, tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("rank1: error: ") and proc.stderr.count("\n") == 1, proc.stderr[:500]
    assert re.search(message, proc.stderr), proc.stderr[:500]
    assert len(proc.stderr) < 500 and proc.stdout == ""


# ---------------------------------------------------------------------------------------------
# Every command end to end: exit code, stdout, stderr

TREC_EVAL_DATA = REPO / "tests" / "data" / "trec_eval"


@pytest.fixture(scope="module")
def eval_inputs(tmp_path_factory):
    """trec_eval's results.test without query 303 (so -c matters), its qrels with grades 0-4 (-l)."""
    folder = tmp_path_factory.mktemp("eval")
    lines = [line for line in (TREC_EVAL_DATA / "results.test").read_text().splitlines(keepends=True)
             if not line.startswith("303")]
    (folder / "run.trec").write_text("".join(lines))
    return folder / "run.trec", TREC_EVAL_DATA / "qrels.rel_level"


def library_tsv(run, qrels, measures, per_query=False, **options):
    from rank1_cli.evaluation.trec_eval import evaluate_run, format_tsv
    from rank1_cli.io.trec import read_qrels_file, read_run_scores

    return format_tsv(evaluate_run(read_run_scores(run), read_qrels_file(qrels), measures, **options),
                      per_query=per_query)


EVAL_OPTIONS = {
    "-q": (["-q"], {"per_query": True}),
    "-c": (["-c"], {"complete": True}),
    "--complete": (["--complete"], {"complete": True}),
    "-l 2": (["-l", "2"], {"relevance_level": 2}),
    "-J": (["-J"], {"judged_only": True}),
    "-q -c -l 2 -J": (["-q", "-c", "-l", "2", "-J"],
                      {"per_query": True, "complete": True, "relevance_level": 2, "judged_only": True}),
}


@pytest.mark.parametrize("case", list(EVAL_OPTIONS))
def test_eval_options_reach_the_evaluator(case, eval_inputs):
    run, qrels = eval_inputs
    flags, options = EVAL_OPTIONS[case]
    measures = ["num_q", "map", "P.10", "ndcg_cut.10", "num_rel"]
    proc, _ = rank1("eval", run, "--qrels", qrels, *[a for m in measures for a in ("-m", m)], *flags, "-f", "tsv")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == library_tsv(run, qrels, measures, **options)
    # query 303 is in the qrels only: a warning says what became of it
    said = "they count as empty rankings" if options.get("complete") else "are left out of the means ('303')"
    assert said in " ".join(proc.stderr.split()) and proc.stderr.count("WARNING") == 1, proc.stderr
    assert proc.stdout != library_tsv(run, qrels, measures)          # the option changes the numbers


def test_eval_json_holds_the_options_aggregates_and_per_query_values(eval_inputs):
    run, qrels = eval_inputs
    proc, _ = rank1("eval", run, "--qrels", qrels, "-m", "map", "-m", "num_ret", "-m", "runid", "-q", "-c", "-f", "json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    tsv = cells(library_tsv(run, qrels, ["map", "num_ret"], per_query=True, complete=True))
    assert (out["complete"], out["relevance_level"], out["judged_only"]) == (True, 1, False)
    [entry] = out["runs"]
    assert entry["run"] == str(run) and entry["runid"] == "STANDARD" and entry["num_q"] == 3
    assert f"{entry['measures']['map']:.4f}" == tsv[("map", "all")]
    assert entry["measures"]["num_ret"] == 1000 and isinstance(entry["measures"]["num_ret"], int)
    assert sorted(entry["per_query"]) == ["301", "302", "303"]
    assert {q: f"{v['map']:.4f}" for q, v in entry["per_query"].items()} == \
        {q: tsv[("map", q)] for q in ("301", "302", "303")}


def cells(tsv: str) -> dict[tuple[str, str], str]:
    return {(m.strip(), q): v for m, q, v in (line.split("\t") for line in tsv.splitlines())}


def test_eval_reads_stdin_and_gzip_by_suffix_or_by_content(eval_inputs, tmp_path):
    import gzip

    run, qrels = eval_inputs
    plain, _ = rank1("eval", run, "--qrels", qrels, "-m", "map", "-q", "-f", "tsv")
    assert plain.returncode == 0 and plain.stdout.count("\n") == 3
    (tmp_path / "run.trec.gz").write_bytes(gzip.compress(run.read_bytes()))
    (tmp_path / "gzipped-without-suffix.trec").write_bytes(gzip.compress(run.read_bytes()))
    (tmp_path / "qrels.gz").write_bytes(gzip.compress(qrels.read_bytes()))
    for args in ([tmp_path / "run.trec.gz", "--qrels", qrels], [tmp_path / "gzipped-without-suffix.trec", "--qrels", qrels],
                 [run, "--qrels", tmp_path / "qrels.gz"]):
        proc, _ = rank1("eval", *args, "-m", "map", "-q", "-f", "tsv")
        assert (proc.returncode, proc.stdout) == (0, plain.stdout), args
    piped, _ = rank1("eval", "-", "--qrels", qrels, "-m", "map", "-q", "-f", "tsv", stdin=run.read_text())
    assert (piped.returncode, piped.stdout) == (0, plain.stdout)


def test_eval_of_several_runs_is_a_block_per_run_and_a_table_by_default(eval_inputs):
    run, qrels = eval_inputs
    proc, _ = rank1("eval", run, TREC_EVAL_DATA / "results.test", "--qrels", qrels, "-m", "map", "-f", "tsv")
    assert proc.returncode == 0, proc.stderr
    blocks = proc.stdout.split("run                   \tall\t")
    assert len(blocks) == 3 and blocks[1].startswith(f"{run}\nmap ") and "results.test\nmap " in blocks[2]
    table, _ = rank1("eval", run, TREC_EVAL_DATA / "results.test", "--qrels", qrels, "-m", "map")
    assert table.returncode == 0 and "run.trec" in table.stdout and "results.test" in table.stdout
    want = cells(library_tsv(run, qrels, ["map"]))[("map", "all")]
    assert want in table.stdout


def test_models_lists_the_aliases_on_stdout():
    proc, _ = rank1("models", env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0
    for alias, hf_id in (("rank1-7b", "jhu-clsp/rank1-7b"), ("rank1-32b-awq", "jhu-clsp/rank1-32b-awq")):
        line = next(line for line in proc.stdout.splitlines() if f" {alias} " in f" {line} ")
        assert hf_id in line
    assert "Memory is for the weights" in proc.stderr and "Memory" not in proc.stdout
