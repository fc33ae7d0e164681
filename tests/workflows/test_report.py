"""`rank1 report`: the join of run, first stage, qrels and traces; the measures (compare's);
the bounds on what is embedded; bad inputs; and the HTML itself, opened in a real browser
(Debian's headless chromium: `make browser` installs it)."""

import importlib.util
import io
import json
import re
import subprocess
import sys
import time

import pytest
from browser import Chromium
from conftest import RANK1, REPO, SAMPLE, TINY_MODEL

from rank1_cli.errors import InputError
from rank1_cli.evaluation.compare import compare_runs
from rank1_cli.io.collection import load_qrels
from rank1_cli.io.traces import Trace, read_traces
from rank1_cli.io.trec import read_run
from rank1_cli.workflows.report import Names, ReportLimits, build_report, render_html

PAYLOAD = "</script><script>window.pwned = 1</script><b>bold</b>"


def _generator():
    spec = importlib.util.spec_from_file_location("bench_report_size", REPO / "bench" / "report_size.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


generate = _generator().generate


def rank1(*args, timeout=120):
    return subprocess.run([*RANK1, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def page_data(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    return json.loads(found.group(1))


def trace(qid, docid, rank, score, verdict, reasoning="", completion="stop", tokens=10):
    lt, lf = (-0.1, -2.0) if verdict == "true" else (-2.0, -0.1)
    return Trace(qid, docid, rank, score, verdict, reasoning, lt, lf, completion, tokens, False, "m", "0" * 64,
                 {"format": "rank1-cli/1"}, "engine")


# Two queries, four first-stage documents each; the top 3 reranked, the 4th kept below them.
BASELINE = {"q1": ["d1", "d2", "d3", "d4"], "q2": ["e1", "e2", "e3", "e4"]}
JUDGEMENTS = {  # (qid, docid): (score, verdict)
    ("q1", "d1"): (0.6, "true"), ("q1", "d2"): (0.1, "false"), ("q1", "d3"): (0.9, "true"),
    ("q2", "e1"): (0.8, "true"), ("q2", "e2"): (0.7, "true"), ("q2", "e3"): (0.2, "false"),
}
QRELS = {"q1": {"d1": 0, "d2": 2, "d3": 1}, "q2": {"e1": 1, "e3": 0, "e4": 1}}


def small_inputs(folder):
    """(run, baseline, traces) in memory, the runs read back from TREC files written in `folder`."""
    baseline = {q: [(d, 10.0 - i) for i, d in enumerate(docs)] for q, docs in BASELINE.items()}
    traces = [trace(q, d, BASELINE[q].index(d) + 1, *JUDGEMENTS[(q, d)], reasoning=f"why {q} {d}")
              for q in BASELINE for d in BASELINE[q][:3]]
    ranking = {}
    for q, docs in BASELINE.items():
        top = sorted(docs[:3], key=lambda d: -JUDGEMENTS[(q, d)][0])
        ranking[q] = [(d, 4.0 - i) for i, d in enumerate(top + docs[3:])]
    return read_run(trec_file(folder / "run.trec", ranking)), read_run(trec_file(folder / "baseline.trec", baseline)), traces


def trec_file(path, ranking):
    path.write_text("".join(f"{q} Q0 {d} {i} {s} t\n" for q, docs in ranking.items() for i, (d, s) in enumerate(docs, 1)))
    return path


def test_documents_are_joined_with_their_ranks_grades_and_judgements(tmp_path):
    run, baseline, traces = small_inputs(tmp_path)
    report = build_report(run, baseline, QRELS, traces, measures=["nDCG@10"])
    q1 = next(q for q in report.queries if q.qid == "q1")
    assert [(d.docid, d.new_rank, d.first_stage_rank, d.grade, d.verdict) for d in q1.documents] == [
        ("d3", 1, 3, 1, "true"), ("d1", 2, 1, 0, "true"), ("d2", 3, 2, 2, "false")]
    assert q1.unreranked == 1 and q1.documents[0].reasoning == "why q1 d3"
    q2 = next(q for q in report.queries if q.qid == "q2")
    assert q2.documents[1].grade is None and q2.documents[1].agrees(1) is None      # e2 is unjudged
    relevant_false, nonrelevant_true = report.disagreements()
    assert [(q, d.docid) for q, d in relevant_false] == [("q1", "d2")]
    assert [(q, d.docid) for q, d in nonrelevant_true] == [("q1", "d1")]
    assert report.completions == {"stop": 6, "forced": 0, "fallback": 0}


def test_relevance_level_decides_what_counts_as_relevant(tmp_path):
    run, baseline, traces = small_inputs(tmp_path)
    report = build_report(run, baseline, QRELS, traces, measures=["nDCG@10"], relevance_level=2)
    relevant_false, nonrelevant_true = report.disagreements()
    assert [(q, d.docid) for q, d in relevant_false] == [("q1", "d2")]
    assert sorted((q, d.docid) for q, d in nonrelevant_true) == [("q1", "d1"), ("q1", "d3"), ("q2", "e1")]


def test_queries_run_from_the_worst_delta_to_the_best(tmp_path):
    files = generate(tmp_path, queries=12, docs=15, reasoning_chars=50)
    report = build_report(read_run(files.run), read_run(files.baseline), load_qrels(str(files.qrels)),
                          read_traces(files.traces), measures=["AP", "nDCG@10"])
    deltas = [q.run["AP"] - q.baseline["AP"] for q in report.queries if q.judged]
    assert deltas == sorted(deltas) and len(set(deltas)) > 1


def test_measures_are_those_of_rank1_compare(tmp_path):
    """The table's numbers are compare_runs' on the same files: one source for the statistics."""
    files = generate(tmp_path, queries=12, docs=15, reasoning_chars=50)
    with files.qrels.open("a") as qrels_file:
        qrels_file.write("q9999 0 d9 1\n")                 # a query neither run answers: 0 for both
    qrels = load_qrels(str(files.qrels))
    measures = ["nDCG@10", "AP", "P@5"]
    report = build_report(read_run(files.run), read_run(files.baseline), qrels, read_traces(files.traces),
                          measures=measures, test="wilcoxon", correction="bonferroni",
                          names=Names(str(files.run), str(files.baseline)))
    expected = compare_runs(files.baseline, [files.run], qrels, measures, test="wilcoxon", correction="bonferroni")
    assert report.comparison == expected             # rows, per-query values, missing queries, settings
    table = render_html(report, bundle="")
    for row in expected.rows:
        assert f">{row.delta:+.4f}{'*' if row.significant else '&nbsp;'}</td>" in table
        assert f"<td>{row.p_adjusted:.4f}</td>" in table or f"<td>{row.p_adjusted:.1e}</td>" in table
    assert "Wilcoxon signed-rank test, Bonferroni-corrected over 3 comparisons" in table
    assert expected.missing == {str(files.baseline): 1, str(files.run): 1} and "Queries missing (counted as 0)" in table


def test_embedded_reasoning_is_bounded_by_the_limits(tmp_path):
    files = generate(tmp_path, queries=12, docs=15, reasoning_chars=300)
    run, baseline, qrels, traces = (read_run(files.run), read_run(files.baseline), load_qrels(str(files.qrels)),
                                    read_traces(files.traces))
    limits = ReportLimits(top=2, max_disagreements=5, reasoning_chars=100)
    report = build_report(run, baseline, qrels, traces, limits=limits)
    data = page_data(render_html(report, bundle=""))
    embedded = {(qid, row[0]) for qid, rows in data["docs"].items() for row in rows if row[9] >= 0}
    top = {(q.qid, d.docid) for q in report.queries for d in q.documents[:2]}
    shown = {(qid, data["docs"][qid][i][0]) for found in data["disagreements"].values() for qid, i in found["shown"]}
    relevant_false, nonrelevant_true = report.disagreements()
    assert len(relevant_false) > 5 and len(nonrelevant_true) > 5
    assert len(shown) == 5 and embedded == top | shown
    assert len(data["reasoning"]) == len(embedded)
    assert sum(len(found["shown"]) for found in data["disagreements"].values()) == 5
    assert data["disagreements"]["relevantFalse"]["total"] == len(relevant_false)
    # the two kinds in turn, each the most confident first
    assert [data["docs"][q][i][0] for q, i in data["disagreements"]["relevantFalse"]["shown"]] == \
        [d.docid for _, d in relevant_false[:3]]
    assert all(len(text) <= 100 + len("\n[... cut: 1,000 characters in all]") for text in data["reasoning"])
    assert "cut: " in data["reasoning"][0]
    assert "top 2 documents" in render_html(report, bundle="") and "at most 5 disagreements" in render_html(report, bundle="")


def test_a_20000_pair_rerank_makes_a_report_of_a_few_megabytes(tmp_path):
    files = generate(tmp_path, queries=200, docs=100, reasoning_chars=1500)
    output = tmp_path / "report.html"
    proc = rank1("report", files.run, "--baseline", files.baseline, "--qrels", files.qrels, "-o", output)
    assert proc.returncode == 0, proc.stderr
    assert files.traces.stat().st_size > 40e6
    assert 2e6 < output.stat().st_size < 8e6        # 5.5 MB: bundle 0.9, reasoning of 2,000 top + 500 disagreements


def test_traces_of_another_rerank_are_said_not_to_belong_to_the_run(tmp_path):
    run, baseline, traces = small_inputs(tmp_path)
    scores = {"d1": 0.9, "d3": 0.6}  # another model scored d1 above d3; another first stage also swapped d1 and d2
    for ranks in ({}, {"d1": 2, "d2": 1}):
        rerank = [trace(t.qid, t.docid, ranks.get(t.docid, t.first_stage_rank), scores.get(t.docid, t.score),
                        t.verdict) for t in traces]
        with pytest.raises(InputError) as error:
            build_report(run, baseline, QRELS, rerank, names=Names("run.trec", "bm25.trec", "qrels", "t.jsonl"))
        assert str(error.value) == (
            "t.jsonl: the traces do not belong to the run run.trec: in 1 queries the run orders the traced documents "
            "otherwise than their scores in the traces (q1: 'd3' above 'd1', scored 0.6 and 0.9); give the traces "
            "written with that run")


BAD = {
    "traces of another run": ("stray", "traced pairs are not in the run"),
    "a query of the run without traces": ("untraced", "queries of the run"),
    "a baseline that is not the first stage": ("baseline", "is not the first stage the traces were made from"),
    "a pair traced twice": ("twice", "is traced twice"),
    "an empty traces file": ("empty", "no traces; give the traces file"),
    "a baseline without a query of the run": ("short baseline", "1 queries of the run"),
    "qrels of other topics": ("other qrels", "judges no query of the run"),
    "traces that are not traces": ("garbage", "not a rank1 trace record"),
    "no traces file": ("missing", "no such file"),
    "the report over its traces": ("over", "the report would overwrite the traces"),
    "a negative cap": ("cap", "--max-disagreements must be 0 or more"),
    "an alpha beyond 1": ("alpha", "--alpha 2.0 must lie strictly between 0 and 1"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_inputs_are_one_clear_line_and_exit_2(case, tmp_path):
    files = generate(tmp_path, queries=4, docs=5, reasoning_chars=20)
    how, message = BAD[case]
    lines = files.traces.read_text().splitlines(keepends=True)
    output = tmp_path / "report.html"
    extra = []
    if how == "stray":
        files.traces.write_text(lines[0].replace('"docid": "d0001-000"', '"docid": "elsewhere"') + "".join(lines[1:]))
    elif how == "untraced":
        files.traces.write_text("".join(line for line in lines if '"qid": "q0002"' not in line))
    elif how == "baseline":
        files.baseline.write_text(files.baseline.read_text().replace("d0001-000", "dX").replace("d0001-001", "d0001-000")
                                  .replace("dX", "d0001-001"))
    elif how == "twice":
        files.traces.write_text("".join(lines) + lines[0])
    elif how == "empty":
        files.traces.write_text("")
    elif how == "short baseline":
        files.baseline.write_text("".join(line for line in files.baseline.read_text().splitlines(keepends=True)
                                          if not line.startswith("q0002 ")))
    elif how == "other qrels":
        files.qrels.write_text("elsewhere 0 d1 1\n")
    elif how == "garbage":
        files.traces.write_text("[1, 2]\n")
    elif how == "missing":
        files.traces.unlink()
    elif how == "over":
        output = files.traces
    elif how == "cap":
        extra = ["--max-disagreements", "-1"]
    elif how == "alpha":
        extra = ["--alpha", "2"]
    before = files.traces.read_bytes() if files.traces.exists() else None
    proc = rank1("report", files.run, "--baseline", files.baseline, "--qrels", files.qrels, "-o", output, *extra)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "report.html").exists()
    assert (files.traces.read_bytes() if files.traces.exists() else None) == before


def test_the_report_looks_for_the_traces_rerank_wrote_beside_the_run(tmp_path):
    files = generate(tmp_path, queries=4, docs=5, reasoning_chars=20)
    runs = tmp_path / "runs.v2"
    runs.mkdir()
    files.run.rename(runs / "rank1.3.trec")
    files.traces.unlink()
    proc = rank1("report", runs / "rank1.3.trec", "--baseline", files.baseline, "--qrels", files.qrels,
                 "-o", tmp_path / "report.html")
    # Without --traces the report reads those rerank -o runs.v2/rank1.3.trec wrote: here, none.
    assert (proc.returncode, proc.stderr) == (2, f"rank1: error: {runs / 'rank1.3.traces.jsonl'}: no such file\n")
    assert not (tmp_path / "report.html").exists()


def test_help_explains_every_option():
    proc = rank1("report", "--help")
    assert proc.returncode == 0
    for option in ("--baseline", "--qrels", "--output", "--traces", "--measure", "--test", "--correction", "--alpha",
                   "--rounds", "--seed", "--relevance-level", "--top", "--max-disagreements", "--reasoning-chars"):
        assert option in proc.stdout


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    """A report made by `rank1 report` (one reasoning text is a script-injection attempt), opened
    in headless chromium once rendering is done (document.body.dataset.ready)."""
    folder = tmp_path_factory.mktemp("report")
    files = generate(folder, queries=12, docs=15, reasoning_chars=200)
    lines = files.traces.read_text().splitlines(keepends=True)
    first = json.loads(lines[0])
    first["reasoning"] = PAYLOAD
    files.traces.write_text(json.dumps(first) + "\n" + "".join(lines[1:]))
    output = folder / "report.html"
    proc = rank1("report", files.run, "--baseline", files.baseline, "--qrels", files.qrels, "-o", output,
                 "-m", "nDCG@10", "-m", "AP", "--queries", files.queries, "--corpus", files.corpus)
    assert proc.returncode == 0, proc.stderr
    with Chromium() as browser:
        yield browser.open(output), output, first


def choose_query(page, qid):
    """Pick a query in the drop-down list, as a person does (the change event follows)."""
    page.evaluate(f"(() => {{ const s = document.getElementById('query'); s.value = {json.dumps(qid)}; "
                  "s.dispatchEvent(new Event('change')); })()")


def test_the_report_opens_offline_with_no_console_error(browser_page):
    page, output, _ = browser_page
    assert page.evaluate("document.body.dataset.ready") == "true"
    assert page.problems == []
    assert page.evaluate("document.title") == f"rank1 report: {output.parent / 'run.trec'} against {output.parent / 'baseline.trec'}"
    # nothing to load from elsewhere (page.problems lists any request but the file's own, too)
    assert page.evaluate("document.querySelectorAll('script[src], link[href], img[src], iframe').length") == 0


def test_every_chart_is_drawn(browser_page):
    page, _, _ = browser_page
    marks = page.evaluate("Object.fromEntries([...document.querySelectorAll('.chart')].map(c => "
                          "[c.id, c.querySelectorAll('svg path, svg line, svg rect').length]))")
    assert set(marks) == {"chart-lengths", "chart-deltas", "chart-reliability", "chart-calibration", "chart-agreement"}
    assert all(count > 10 for count in marks.values()), marks
    bars = page.evaluate("document.querySelectorAll('#chart-deltas .mark-rect path').length")
    assert bars == 12


def test_selecting_a_query_shows_its_documents_and_reasoning(browser_page):
    page, output, _ = browser_page
    data = page_data(output.read_text())
    worst, best = data["queries"][0][0], data["queries"][-1][0]
    assert page.evaluate("document.getElementById('query').value") == worst        # the worst query first
    page.click("[...document.querySelectorAll('#chart-deltas .mark-rect path')].pop()")   # the best query's bar
    page.wait_for(f"document.getElementById('query').value === {json.dumps(best)}")
    rows = page.evaluate("[...document.querySelectorAll('#query-docs tr')].slice(1).map(r => "
                         "[...r.children].map(c => c.textContent))")
    assert [r[3] for r in rows] == [d[0] for d in data["docs"][best]]
    assert [int(r[0]) for r in rows] == list(range(1, 16))
    reasoning = data["reasoning"][data["docs"][best][0][9]]
    assert rows[0][9].startswith(reasoning.strip()[:90] + "…")                     # the summary,
    assert rows[0][9].endswith("Reasoning" + reasoning)                            # passage, then the full text
    assert rows[-1][9] == "not embedded"                                           # rank 15 > --top 10, agrees
    choose_query(page, worst)
    assert page.evaluate("document.querySelector('#query-docs tr:nth-child(2) td:nth-child(4)').textContent") == \
        data["docs"][worst][0][0]
    assert page.problems == []


def test_a_click_shows_the_query_the_passage_with_its_terms_marked_and_the_reasoning(browser_page):
    page, output, _ = browser_page
    data = page_data(output.read_text())
    qid = data["queries"][1][0]
    choose_query(page, qid)
    query = dict(line.split("\t") for line in (output.parent / "queries.tsv").read_text().splitlines())[qid]
    assert page.evaluate("document.getElementById('query-text').textContent") == \
        "Query (as the model saw it): " + query
    assert page.evaluate("document.getElementById('query-text').hidden") is False
    assert page.evaluate("document.querySelector('#query-docs details pre.passage').checkVisibility()") is False
    page.click("document.querySelector('#query-docs details summary')")
    page.wait_for("document.querySelector('#query-docs details').open")
    corpus = {r["doc_id"]: r for r in map(json.loads, (output.parent / "corpus.jsonl").read_text().splitlines())}
    first = data["docs"][qid][0]
    shown = page.evaluate("(() => { const d = document.querySelector('#query-docs details'); return {"
                          "passage: d.querySelector('pre.passage').innerText, state: d.querySelector('.state').textContent,"
                          "reasoning: d.querySelector('pre.reasoning').innerText,"
                          "visible: d.querySelector('pre.passage').checkVisibility() && d.querySelector('pre.reasoning').checkVisibility(),"
                          "marks: [...d.querySelectorAll('pre.passage mark')].map(m => m.textContent.toLowerCase())}; })()")
    doc = corpus[first[0]]
    assert shown["visible"]
    assert shown["passage"] == (doc["title"] + " " + doc["text"])[:2000]
    assert shown["reasoning"] == data["reasoning"][first[9]]
    expected = "truncated" if first[8] else "as the model saw it"
    assert expected in shown["state"]
    terms = set(re.findall(r"\w{3,}", query.lower())) - {"the", "and", "but", "not", "what"}     # stop words left out
    in_passage = {t for t in terms if re.search(rf"\b{t}\b", shown["passage"].lower())}
    assert in_passage and set(shown["marks"]) == in_passage, (shown["marks"], terms)
    assert page.problems == []


def table_cells(page, table_id):
    return page.evaluate(f"[...document.querySelectorAll('#{table_id} tr')].slice(1).map(r => "
                         "[...r.children].map(c => c.textContent))")


def test_the_per_query_table_has_every_measure_sorts_and_filters(browser_page):
    page, output, _ = browser_page
    data = page_data(output.read_text())
    headers = page.evaluate("[...document.querySelectorAll('#query-table th')].map(t => t.textContent)")
    assert headers == ["query", "text", "nDCG@10 baseline", "nDCG@10 rank1", "Δ nDCG@10", "AP baseline", "AP rank1", "Δ AP"]
    rows = table_cells(page, "query-table")
    assert [r[0] for r in rows] == [q[0] for q in data["queries"]]
    report_rows = {q[0]: q for q in data["queries"]}
    for row in rows:
        (base_ndcg, run_ndcg), (base_ap, run_ap) = report_rows[row[0]][6]
        assert [float(v) for v in row[2:]] == pytest.approx([base_ndcg, run_ndcg, run_ndcg - base_ndcg, base_ap, run_ap,
                                                             run_ap - base_ap], abs=1e-4)
    page.click("[...document.querySelectorAll('#query-table th')][7]")          # Δ AP, ascending
    ascending = [float(r[7]) for r in table_cells(page, "query-table")]
    assert ascending == sorted(ascending)
    page.click("[...document.querySelectorAll('#query-table th')][7]")          # again: descending
    assert [float(r[7]) for r in table_cells(page, "query-table")] == sorted(ascending, reverse=True)
    qid = data["queries"][3][0]
    word = data["queries"][3][5].split()[0]
    page.evaluate(f"(() => {{ const f = document.getElementById('query-filter'); f.value = {json.dumps(word)}; "
                  "f.dispatchEvent(new Event('input')); })()")
    filtered = [r[0] for r in table_cells(page, "query-table")]
    assert qid in filtered and set(filtered) <= {q[0] for q in data["queries"] if word in q[5].lower()}
    page.evaluate(f"(() => {{ const f = document.getElementById('query-filter'); f.value = {json.dumps(qid)}; "
                  "f.dispatchEvent(new Event('input')); })()")
    assert [r[0] for r in table_cells(page, "query-table")] == [qid]
    assert page.evaluate("document.getElementById('query-count').textContent") == f"1 of {len(data['queries'])} queries"
    page.click("document.querySelector('#query-table a.qid')")
    page.wait_for(f"document.getElementById('query').value === {json.dumps(qid)}")
    assert page.problems == []


def download(page, link, folder):
    """Click a download link, as a person does, and return the file chromium saved."""
    folder.mkdir()
    page.browser.send("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(folder)})
    page.click(link)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done = [f for f in folder.iterdir() if not f.name.endswith(".crdownload")]
        if done:
            return done[0]
        time.sleep(0.1)
    raise AssertionError(f"no file downloaded into {folder}")


def test_the_csv_downloads_hold_the_tables_rows(browser_page, tmp_path):
    import csv

    page, output, _ = browser_page
    data = page_data(output.read_text())
    page.evaluate("(() => { const f = document.getElementById('query-filter'); f.value = ''; "
                  "f.dispatchEvent(new Event('input')); })()")
    shown = table_cells(page, "query-table")
    saved = download(page, "document.getElementById('queries-csv')", tmp_path / "queries")
    assert saved.name == "per-query.csv"
    rows = list(csv.reader(saved.open(newline="", encoding="utf-8")))
    assert rows[0] == page.evaluate("[...document.querySelectorAll('#query-table th')].map(t => t.textContent)")
    assert [r[0] for r in rows[1:]] == [r[0] for r in shown]
    assert [r[1] for r in rows[1:]] == [q[5] for q in sorted(data["queries"], key=lambda q: [r[0] for r in shown].index(q[0]))]
    assert [[float(v) for v in r[2:]] for r in rows[1:]] == [[float(v) for v in r[2:]] for r in shown]

    saved = download(page, "document.getElementById('nonrelevantTrue-csv')", tmp_path / "disagreements")
    rows = list(csv.reader(saved.open(newline="", encoding="utf-8")))
    listed = data["disagreements"]["nonrelevantTrue"]["shown"]
    assert rows[0][:3] == ["query", "docid", "new rank"] and len(rows) == len(listed) + 1
    for row, (qid, i) in zip(rows[1:], listed):
        doc = data["docs"][qid][i]
        assert row[:3] == [qid, doc[0], str(doc[1])] and row[6] == "true"
        assert row[10] == data["reasoning"][doc[9]]            # multi-line reasoning, quoted, comes back whole
    assert page.problems == []


def test_a_document_is_found_by_its_id_or_its_passage(browser_page):
    page, output, _ = browser_page
    data = page_data(output.read_text())

    def search(text):
        page.evaluate(f"(() => {{ const f = document.getElementById('doc-search'); f.value = {json.dumps(text)}; "
                      "f.dispatchEvent(new Event('input')); })()")
        return table_cells(page, "doc-results")

    qid, row = next((q, r) for q, rows in data["docs"].items() for r in rows if r[10] >= 0)
    found = search(row[0])
    assert [(r[0], r[4]) for r in found] == [(qid, row[0])]
    assert page.evaluate("document.getElementById('doc-count').textContent") == "1 found"
    passage = data["passages"][row[10]]
    words = " ".join(passage.split()[2:6])                    # words of its text, past the title
    found = search(words)
    assert (qid, row[0]) in [(r[0], r[4]) for r in found]
    assert all(words in data["passages"][d[10]] for q, rows in data["docs"].items() for d in rows
               if (q, d[0]) in {(r[0], r[4]) for r in found})
    assert search("") == []


def test_a_three_run_report_renders_with_each_run_beside_the_first(tmp_path):
    first, others = three_runs(tmp_path)
    output = tmp_path / "report.html"
    args = [first.run, *(f.run for f in others), "--baseline", first.baseline, "--qrels", first.qrels, "-o", output,
            "--queries", first.queries, "--corpus", first.corpus]
    proc = rank1("report", *args, "--traces", first.traces)
    assert proc.returncode == 2 and "give one --traces per run" in proc.stderr
    proc = rank1("report", *args)                            # each run's traces found beside it
    assert proc.returncode == 0, proc.stderr
    data = page_data(output.read_text())
    with Chromium() as browser:
        page = browser.open(output)
        assert page.evaluate("document.body.dataset.ready") == "true" and page.problems == []
        rows = page.evaluate("[...document.querySelectorAll('table.measures tr')].slice(1).map(r => r.children[0].textContent)")
        assert [r for r in rows if r] == data["runs"]
        headers = page.evaluate("[...document.querySelectorAll('#query-docs th')].map(t => t.textContent)")
        assert headers[-4:] == [f"rank, score, verdict ({data['runs'][1]})", f"reasoning ({data['runs'][1]})",
                                f"rank, score, verdict ({data['runs'][2]})", f"reasoning ({data['runs'][2]})"]
        qid = page.evaluate("document.getElementById('query').value")
        cells = table_cells(page, "query-docs")
        for row, doc in zip(cells, data["docs"][qid]):
            for k in (0, 1):
                rank, score, verdict, completion = data["otherDocs"][k][qid][doc[0]][:4]
                assert row[10 + 2 * k] == f"#{rank} · {score:.4f} · {verdict or completion}"
        page.click("[...document.querySelectorAll('#query-docs td:nth-child(12) details summary')][0]")
        page.wait_for("document.querySelector('#query-docs td:nth-child(12) details').open")
        assert page.evaluate("document.querySelector('#query-docs td:nth-child(12) pre.reasoning').checkVisibility()")
        assert page.evaluate("document.getElementById('splits-section').hidden") is False
        listed = table_cells(page, "splits")
        assert len(listed) == len(data["splits"]["shown"]) > 0
        for row in listed:
            verdicts = {row[7]} | {cell.split(" · ")[2] for cell in (row[11], row[13]) if " · " in cell}
            assert len(verdicts & {"true", "false"}) == 2          # the runs do not agree
        bars = page.evaluate("document.querySelectorAll('#chart-deltas .mark-rect path').length")
        assert bars == 3 * sum(1 for q in data["queries"] if q[1] is not None)
        headers = page.evaluate("[...document.querySelectorAll('#query-table th')].map(t => t.textContent)")
        assert headers[2:6] == ["nDCG@10 baseline", *(f"nDCG@10 {run}" for run in data["runs"])]
        (tmp_path / "three-runs.png").write_bytes(page.screenshot())
        assert page.problems == []


def test_disagreements_are_listed_and_lead_to_their_query(browser_page):
    page, output, _ = browser_page
    data = page_data(output.read_text())
    for kind in ("relevantFalse", "nonrelevantTrue"):
        shown = data["disagreements"][kind]["shown"]
        assert shown and page.evaluate(f"document.querySelectorAll('#{kind} tr').length") == len(shown) + 1
    qid, index = data["disagreements"]["nonrelevantTrue"]["shown"][-1]
    verdicts = page.evaluate("[...document.querySelectorAll('#nonrelevantTrue tr')].slice(1).map(r => r.children[7].textContent)")
    assert set(verdicts) == {"true"}
    page.click("[...document.querySelectorAll('#nonrelevantTrue a.qid')].pop()")
    page.wait_for(f"document.getElementById('query').value === {json.dumps(qid)}")


def test_reasoning_text_cannot_inject_markup(browser_page):
    page, output, first = browser_page
    assert page.evaluate("window.pwned === undefined")
    assert PAYLOAD not in output.read_text()
    choose_query(page, first["qid"])
    texts = page.evaluate("[...document.querySelectorAll('#query-docs pre')].map(p => p.textContent)")
    assert PAYLOAD in texts
    assert page.evaluate("document.querySelectorAll('#query-docs b').length") == 0


def test_the_screenshot_shows_the_report(browser_page, tmp_path):
    from PIL import Image

    page, _, _ = browser_page
    png = page.screenshot()
    (tmp_path / "report.png").write_bytes(png)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.width == 1280 and image.height > 2500                     # the whole page, not the window
    top = image.crop((0, 0, 1280, 900))
    assert len(top.getcolors(1 << 16) or range(1 << 16)) > 50               # text and charts, not a blank page
    histogram = top.convert("L").histogram()
    assert sum(histogram[:128]) > 0.005 * top.width * top.height            # dark pixels: text is drawn


def test_calibration_is_measured_over_the_judged_scored_pairs(tmp_path):
    run, baseline, traces = small_inputs(tmp_path)
    report = build_report(run, baseline, QRELS, traces, measures=["nDCG@10"])
    # judged pairs (score, relevant): q1 d1 (.6, 0), d2 (.1, 1), d3 (.9, 1); q2 e1 (.8, 1), e3 (.2, 0); e2 unjudged
    found = report.calibration
    assert (found.pairs, found.relevant) == (5, 3)
    assert found.brier == pytest.approx((.36 + .81 + .01 + .04 + .04) / 5)
    assert found.ece == pytest.approx((.9 + .2 + .6 + .2 + .1) / 5)      # one pair in each of five bins of 0.1
    page = render_html(report, bundle="")
    assert "expected calibration error 0.4000, Brier score 0.2520" in page
    assert "10 equal-width bins of the score on [0, 1]" in page
    points = page_data(page)["charts"]["reliability"]["layer"][1]["data"]["values"]
    assert [(p["score"], p["relevant"], p["pairs"]) for p in points] == [
        (0.1, 1, 1), (0.2, 0, 1), (0.6, 0, 1), (0.8, 1, 1), (0.9, 1, 1)]
    stricter = build_report(run, baseline, QRELS, traces, measures=["nDCG@10"], relevance_level=2).calibration
    assert stricter.relevant == 1 and stricter.brier == pytest.approx((.36 + .81 + .81 + .64 + .04) / 5)


def test_passages_are_those_the_model_saw_or_marked(tmp_path):
    """The generator hashes each untruncated prompt as rerank does: those passages check as seen;
    a passage edited in the corpus, or its document removed, is marked; the texts are bounded."""
    from rank1_cli.io.collection import CollectionSource
    from rank1_cli.workflows.report import read_texts

    files = generate(tmp_path, queries=4, docs=6, reasoning_chars=50, passage_chars=300)
    lines = files.corpus.read_text().splitlines()
    edited = json.loads(lines[0])
    edited["text"] = "an edited text"
    files.corpus.write_text("\n".join([json.dumps(edited), *lines[2:]]) + "\n")   # the second document removed
    report = build_report(read_run(files.run), read_run(files.baseline), load_qrels(str(files.qrels)),
                          read_traces(files.traces), measures=["AP"], limits=ReportLimits(passage_chars=100))
    report.texts = read_texts(report, CollectionSource(corpus=str(files.corpus), queries=str(files.queries)))
    data = page_data(render_html(report, bundle=""))
    states = {row[0]: (row[8], row[11]) for rows in data["docs"].values() for row in rows}
    assert states["d0001-000"][1] == ("truncated" if states["d0001-000"][0] else "differs")
    assert states["d0001-001"][1] == "absent"
    others = [state for docid, (truncated, state) in states.items() if docid not in ("d0001-000", "d0001-001")]
    assert set(others) <= {"seen", "truncated"} and others.count("seen") > len(others) / 2
    assert all(len(p) <= 100 + len("\n[... cut: 1,000 characters in all]") for p in data["passages"])
    queries = dict(line.split("\t") for line in files.queries.read_text().splitlines())
    assert [q[4] for q in data["queries"]] == [queries[q[0]] for q in data["queries"]]
    page = render_html(report, bundle="")
    assert "cut to 100 characters" in page and "1 differ" in page and "1 not in the collection" in page


def test_texts_come_from_an_ir_datasets_id_or_local_files_alike(tmp_path, sample_dataset):
    """--dataset and --queries/--corpus read the collection with rerank's readers: the same texts,
    and every passage checks against the prompt hashes of traces made from sample_data."""
    from rank1_cli.io.collection import CollectionSource, read_corpus_docs, read_queries_file
    from rank1_cli.reasoning import prompts
    from rank1_cli.workflows.report import read_texts

    first_stage = read_run(SAMPLE / "run.bm25.trec")
    baseline = {qid: first_stage[qid][:3] for qid in ("q01", "q02")}
    queries = read_queries_file(SAMPLE / "queries.tsv")
    docs = read_corpus_docs(SAMPLE / "corpus.jsonl", {e.docid for entries in baseline.values() for e in entries})
    traces = []
    for qid, entries in baseline.items():
        for rank, e in enumerate(entries, start=1):
            prompt = prompts.build_prompt(queries[qid].text, prompts.passage_text(docs[e.docid].title, docs[e.docid].text))
            t = trace(qid, e.docid, rank, 0.9 - 0.2 * rank, "true" if rank == 1 else "false")
            t.prompt_sha256 = prompts.prompt_sha256(prompt)
            traces.append(t)
    run = {qid: [(e.docid, 3.0 - i) for i, e in enumerate(entries)] for qid, entries in baseline.items()}
    base = {qid: [(e.docid, e.score) for e in entries] for qid, entries in baseline.items()}
    report = build_report(read_run(trec_file(tmp_path / "run.trec", run)), read_run(trec_file(tmp_path / "b.trec", base)),
                          load_qrels(str(SAMPLE / "qrels.txt")), traces, measures=["nDCG@10"])
    from_dataset = read_texts(report, CollectionSource(dataset=sample_dataset))
    from_files = read_texts(report, CollectionSource(corpus=str(SAMPLE / "corpus.jsonl"),
                                                      queries=str(SAMPLE / "queries.tsv")))
    assert from_dataset.queries == from_files.queries == {q.qid: queries[q.qid].text for q in report.queries}
    assert from_dataset.passages == from_files.passages and len(from_files.passages) == 6
    report.texts = from_dataset
    states = {row[11] for rows in page_data(render_html(report, bundle=""))["docs"].values() for row in rows}
    assert states == {"seen"}


def test_a_truncated_passage_is_shown_up_to_where_the_model_saw_it(tmp_path, tiny_tokenizer):
    """Traces made as rerank makes them (fit_prompts with the model's tokenizer): the truncated
    passage is shown cut where the model's was, found again with the tokenizer of the model the
    traces name (sample_data/tiny-rank1, a local folder)."""
    from rank1_cli.io.collection import CollectionSource
    from rank1_cli.reasoning import prompts
    from rank1_cli.reasoning.fitting import Budget, fit_prompts
    from rank1_cli.workflows.report import read_texts

    run, baseline, traces = small_inputs(tmp_path)
    budget = Budget(max_model_len=900, max_reasoning_tokens=600)
    long = " ".join(f"word{i}" for i in range(2000))
    passages = {t.docid: long if t.docid == "d3" else f"a short passage about {t.docid}" for t in traces}
    for t in traces:
        fit = fit_prompts(tiny_tokenizer, [f"query {t.qid}"], [passages[t.docid]], budget.prompt_tokens)[0]
        t.model, t.truncated, t.prompt_sha256 = str(TINY_MODEL), fit.truncated, prompts.prompt_sha256(fit.prompt)
        t.settings = {"max_model_len": 900, "max_reasoning_tokens": 600}
        if t.docid == "d3":
            cut = fit.prompt
    (tmp_path / "queries.tsv").write_text("q1\tquery q1\nq2\tquery q2\n")
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"doc_id": d, "text": p}) + "\n" for d, p in passages.items()))
    report = build_report(run, baseline, QRELS, traces, measures=["nDCG@10"])
    report.texts = read_texts(report, CollectionSource(corpus=str(tmp_path / "corpus.jsonl"),
                                                       queries=str(tmp_path / "queries.tsv")))
    seen = report.texts.seen[("q1", "d3")]
    assert cut == prompts.build_prompt("query q1", seen) and 0 < len(seen) < len(long) and long.startswith(seen)
    data = page_data(render_html(report, bundle=""))
    row = next(r for r in data["docs"]["q1"] if r[0] == "d3")
    assert row[11] == "cut"
    assert data["passages"][row[10]] == seen + f"\n[the model's passage ends here: cut by tokens to fit the prompt; " \
        f"{len(long) - len(seen):,} more characters in the collection]"
    assert {r[11] for rows in data["docs"].values() for r in rows if r[0] != "d3"} == {"seen"}
    assert "1 truncated and shown up to the cut" in render_html(report, bundle="")


def test_the_measures_table_gives_the_effect_size(tmp_path):
    files = generate(tmp_path, queries=12, docs=15, reasoning_chars=50)
    report = build_report(read_run(files.run), read_run(files.baseline), load_qrels(str(files.qrels)),
                          read_traces(files.traces), measures=["AP"])
    [row] = report.comparison.rows
    page = render_html(report, bundle="")
    assert f"<td>{row.effect_size:+.3f}</td></tr>" in page and "Cohen&#x27;s d_z" in page


def three_runs(folder):
    """Three reranks of one baseline (the generator's baseline does not depend on the seed), the
    qrels and texts of the first."""
    first = generate(folder, queries=8, docs=12, reasoning_chars=80)
    others = [generate(folder / f"run{k}", queries=8, docs=12, reasoning_chars=80, seed=k) for k in (2, 3)]
    assert all(f.baseline.read_text() == first.baseline.read_text() for f in others)
    return first, others


def test_several_runs_are_compared_together_and_side_by_side(tmp_path):
    first, others = three_runs(tmp_path)
    qrels = load_qrels(str(first.qrels))
    report = build_report(read_run(first.run), read_run(first.baseline), qrels, read_traces(first.traces),
                          measures=["nDCG@10", "AP"], names=Names(str(first.run), str(first.baseline)),
                          others=[(read_run(f.run), read_traces(f.traces), Names(str(f.run), str(first.baseline),
                                                                                  traces=str(f.traces)))
                                  for f in others])
    expected = compare_runs(first.baseline, [first.run, *(f.run for f in others)], qrels, ["nDCG@10", "AP"])
    assert report.comparison == expected                   # Holm over 3 runs x 2 measures, as rank1 compare
    assert "Holm-corrected over 6 comparisons" in render_html(report, bundle="")
    # each run's own ranks, scores and verdicts beside the first run's documents
    data = page_data(render_html(report, bundle=""))
    assert data["runs"] == [str(first.run), *(str(f.run) for f in others)]
    second = {(t.qid, t.docid): t for t in read_traces(others[0].traces)}
    ranked = {q: {e.docid: i + 1 for i, e in enumerate(entries)} for q, entries in read_run(others[0].run).items()}
    for qid, rows in data["otherDocs"][0].items():
        for docid, (rank, score, verdict, completion, truncated, reasoning) in rows.items():
            assert (rank, verdict) == (ranked[qid][docid], second[(qid, docid)].verdict)
            assert score == pytest.approx(second[(qid, docid)].score, abs=1e-4)
            if reasoning >= 0:
                assert data["reasoning"][reasoning] == second[(qid, docid)].reasoning[:4000]
    # the verdict splits: the first run's documents another run judges otherwise
    splits = report.verdict_splits()
    by_hand = [(q.qid, d.docid) for q in report.queries for d in q.documents
               if len({x.verdict for x in (d, *(o.documents.get((q.qid, d.docid)) for o in report.others))
                       if x is not None and x.verdict is not None}) > 1]
    assert sorted((q, d.docid) for q, d in splits) == sorted(by_hand) and splits
    assert data["splits"]["total"] == len(splits)
    calibrations = [report.calibration, *(o.calibration for o in report.others)]
    assert all(c is not None for c in calibrations) and len({c.brier for c in calibrations}) == 3


def test_reasoning_length_groups_never_split_one_length(tmp_path):
    run, baseline, traces = small_inputs(tmp_path)
    for t, tokens in zip(traces, [30, 30, 30, 30, 30, 99]):
        t.output_tokens = tokens
    report = build_report(run, baseline, QRELS, traces, measures=["nDCG@10"])
    groups = page_data(render_html(report, bundle=""))["charts"]["agreement"]["data"]["values"]
    judged = [(d.output_tokens, d.agrees(1)) for d in report.documents if d.agrees(1) is not None]
    assert [(g["from"], g["to"], g["pairs"]) for g in groups] == [(30, 30, 4), (99, 99, 1)]
    assert groups[0]["agreement"] == sum(a for t, a in judged if t == 30) / 4


def test_without_the_report_extra_the_error_says_what_to_install(tmp_path, monkeypatch):
    run, baseline, traces = small_inputs(tmp_path)
    report = build_report(run, baseline, QRELS, traces)
    monkeypatch.setitem(sys.modules, "vl_convert", None)         # as if vl-convert-python were not installed
    with pytest.raises(InputError, match=r"pip install 'rank1-cli\[report\]'"):
        render_html(report)
