import gzip
import math
import re
from pathlib import Path

import numpy
import pytest

from rank1_cli.errors import InputError
from rank1_cli.io import trec


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_run_is_ordered_by_score_then_rank(tmp_path):
    path = write(tmp_path / "run", "q1 Q0 a 3 1.0 t\nq1 Q0 b 1 2.0 t\nq1 Q0 c 2 1.0 t\nq2 Q0 x 1 5 t\n")
    run = trec.read_run(path)
    assert [e.docid for e in run["q1"]] == ["b", "c", "a"]
    assert list(run) == ["q1", "q2"]


def test_gzip_and_stdin_runs(tmp_path, monkeypatch):
    gz = tmp_path / "run.gz"
    with gzip.open(gz, "wt") as handle:
        handle.write("q1 Q0 a 1 1.0 t\n")
    assert trec.read_run(str(gz))["q1"][0].docid == "a"


@pytest.mark.parametrize("text, lines", [
    ("q1 Q0 a 1 3 t\nq1 Q0 b 2 9 t\nq1 Q0 a 3 1 t\n", (3, 1)),  # within one query's lines
    ("q1 Q0 a 1 3 t\nq2 Q0 a 1 9 t\nq1 Q0 a 2 1 t\n", (3, 1)),  # the query's lines apart
    ("q1 Q0 a 1 3 t\nq1 Q0 a 2 3 t extra words\n", (2, 1)),  # line-by-line path
])
def test_a_document_twice_in_a_query_is_refused_like_trec_eval(tmp_path, text, lines):
    path = write(tmp_path / "run", text)
    for reader in (trec.read_run, trec.read_run_scores):
        with pytest.raises(InputError, match=rf"run:{lines[0]}: document 'a' is given twice for query 'q1' "
                                             rf"\(first at line {lines[1]}\); trec_eval refuses"):
            reader(path)


def test_a_bom_crlf_tabs_comments_and_scattered_queries_read_as_trec_eval_does(tmp_path):
    text = ("\ufeffq01 Q0 a 1 2.5 t\r\n# a comment line\r\n  \r\nq02\tQ0\tb\t1\t-1e-3\tt\r\n"
            "q01 Q0 c 2 +.5 t\r\n")
    path = tmp_path / "run"
    path.write_bytes(text.encode())
    assert trec.read_run_scores(str(path)) == {"q01": {"a": 2.5, "c": 0.5}, "q02": {"b": -0.001}}
    run = trec.read_run(str(path))
    assert list(run) == ["q01", "q02"] and [e.docid for e in run["q01"]] == ["a", "c"]


def test_only_ascii_whitespace_separates_columns_as_in_trec_eval(tmp_path):
    # A no-break space is part of the docid for trec_eval (C isspace); Python's str.split would cut there.
    path = tmp_path / "run"
    path.write_bytes("q1 Q0 doc\u00a0one 1 1.0 t\n".encode())
    assert trec.read_run_scores(str(path)) == {"q1": {"doc\u00a0one": 1.0}}


def reference_run(text: bytes) -> dict[str, dict[str, float]]:
    """trec_eval's reading, spelled out: C whitespace, '#' comments, blank lines, words after 6 ignored."""
    run: dict[str, dict[str, float]] = {}
    for line in text.split(b"\n"):
        fields = line.split()
        if fields and not fields[0].startswith(b"#"):
            run.setdefault(fields[0].decode(), {})[fields[2].decode()] = float(fields[4])
    return run


def test_bulk_and_line_by_line_parsing_agree(tmp_path, monkeypatch):
    import random

    rng = random.Random(7)
    gaps = [b" ", b"\t", b"  ", b" \t ", b"\x0b", b"\x0c"]
    for trial in range(30):
        lines = []
        for i in range(rng.randrange(1, 400)):
            words = [b"q%d" % rng.randrange(9), b"Q0", b"d%d" % i, b"%d" % (i + 1),
                     repr(rng.uniform(-5, 5)).encode(), b"tag"]
            if trial % 3 == 1 and rng.random() < 0.1:
                words.append(b"extra")
            gap = rng.choice(gaps) if trial % 3 == 2 else b" "
            line = gap.join(words)
            if trial % 3 == 2 and rng.random() < 0.1:
                line = rng.choice([b" ", b"\t"]) + line + rng.choice([b" ", b"\r"])
            lines.append(line)
            if trial % 3 != 1 and rng.random() < 0.05:
                lines.append(rng.choice([b"", b"  ", b"# a comment", b"  # indented comment", b"#q1 Q0 dcomment 1 0.5 tag"]))
        text = b"\n".join(lines) + rng.choice([b"\n", b"", b"\n\n"])
        path = tmp_path / f"run{trial}"
        path.write_bytes(text)
        assert trec.read_run_scores(str(path)) == reference_run(text), trial
        assert {q: {e.docid: e.score for e in entries} for q, entries in trec.read_run(str(path)).items()} \
            == reference_run(text)
    # a comment with six words, among plain lines, is still a comment
    text = b"q1 Q0 a 1 2.0 t\n#q1 Q0 b 2 1.0 t\nq1 Q0 c 3 0.5 t\n"
    path = tmp_path / "commented"
    path.write_bytes(text)
    assert trec.read_run_scores(str(path)) == reference_run(text) == {"q1": {"a": 2.0, "c": 0.5}}


def test_a_plain_run_is_parsed_in_bulk(tmp_path, monkeypatch):
    """The speed of rank1 eval rests on this: plain lines, tabs, CRLF never go line by line."""
    def line_by_line(*args, **kwargs):
        raise AssertionError("parsed line by line")

    monkeypatch.setattr(trec, "_run_rows_slow", line_by_line)
    monkeypatch.setattr(trec, "_qrels_rows_slow", line_by_line)
    run = write(tmp_path / "run", "".join(f"q{i % 7}\tQ0\td{i}\t{i}\t{-i / 3!r}\ttag\r\n" for i in range(5000)))
    assert sum(map(len, trec.read_run_scores(run).values())) == 5000
    assert sum(map(len, trec.read_run(run).values())) == 5000
    qrels = write(tmp_path / "qrels", "".join(f"q{i % 7} 0 d{i} {i % 3 - 1}\n" for i in range(5000)))
    assert sum(map(len, trec.read_qrels_file(qrels).values())) == 5000


@pytest.mark.parametrize("line, message", [
    ("q1 Q0 a 1 1.0", "run:2: expected 6 whitespace-separated columns"),
    ("q1 Q0 a 1 1.0 ", "run:2: expected 6 whitespace-separated columns"),  # a space is not a tag
    ("q1 Q0  a 1 1.0", "run:2: expected 6 whitespace-separated columns"),
    ("q1 Q0 a one 1.0 t", "run:2: rank (column 4) must be an integer"),
    ("q1 Q0 a 1 high t", "run:2: score (column 5) must be a number"),
    ("q1 Q0 a 1 nan t", "run:2: score (column 5) must be finite, found 'nan'"),
    ("q1 Q0 a 1 +inf t", "run:2: score (column 5) must be finite, found '+inf'"),
    ("q1 Q0 a 1 -Infinity t", "run:2: score (column 5) must be finite, found '-Infinity'"),
    ("q1 Q0 a 1 1e999 t", "run:2: score (column 5) must be finite, found '1e999'"),
    # Python's float() reads '2_0' as 20.0 (trec_eval's atof as 2.0): neither, an error
    ("q1 Q0 a 1 2_0 t", "run:2: score (column 5) must be a number written in decimal (like 12.5 or -3.1e-2), "
                        "found '2_0'"),
    ("q1 Q0 a 1 0x1p3 t", "run:2: score (column 5) must be a number"),
    ("q1 Q0 a 1 \u0661 t", "run:2: score (column 5) must be a number"),  # an Arabic-Indic digit one
    ("q1 Q0 a 1_0 1.0 t", "run:2: rank (column 4) must be an integer, found '1_0'"),
    ("q1 Q0 " + "x" * 1_000_000 + " 1", "run:2: expected 6 whitespace-separated columns"),
])
def test_malformed_lines_name_file_and_line(tmp_path, line, message):
    path = write(tmp_path / "run", "q1 Q0 z 1 1.0 t\n" + line + "\n")
    readers = [trec.read_run, trec.read_run_scores]
    if "rank (column 4)" in message:  # rerank orders ties by rank; eval ignores it, as trec_eval does
        assert trec.read_run_scores(path)["q1"]["a"] == 1.0
        readers.remove(trec.read_run_scores)
    for reader in readers:
        with pytest.raises(InputError, match=re.escape(message)) as error:
            reader(path)
        assert len(str(error.value)) < 400  # values are quoted up to 100 characters


def test_empty_and_non_utf8_and_missing_runs(tmp_path):
    with pytest.raises(InputError, match="empty"):
        trec.read_run(write(tmp_path / "empty", "\n"))
    bad = tmp_path / "latin1"
    bad.write_bytes("q1 Q0 caf\xe9 1 1 t\n".encode("latin-1"))
    with pytest.raises(InputError, match="latin1:1: not valid UTF-8"):
        trec.read_run(str(bad))
    with pytest.raises(InputError, match="no such file"):
        trec.read_run(str(tmp_path / "nope"))


def test_qrels_grades_and_non_integer_warning(tmp_path, caplog):
    qrels = trec.read_qrels_file(write(tmp_path / "qrels", "# judged by NIST\nq1 0 a 2\nq1 0 b 0\nq2 0 c 1.7\n"
                                                              "q2 0 d -1\nq2 0 e 2e1\nq2 0 f .5\n"))
    # trec_eval reads grades with atol: 1.7 -> 1, 2e1 -> 2, .5 -> 0
    assert qrels == {"q1": {"a": 2, "b": 0}, "q2": {"c": 1, "d": -1, "e": 2, "f": 0}}
    assert f"{tmp_path / 'qrels'}: 3 non-integer relevance grades cut to their integer part" in caplog.text


def test_qrels_with_a_bom_keep_the_first_query(tmp_path):
    path = tmp_path / "qrels"
    path.write_bytes(b"\xef\xbb\xbfq01 0 a 1\r\nq01 0 b 0\r\n")
    assert trec.read_qrels_file(str(path)) == {"q01": {"a": 1, "b": 0}}


@pytest.mark.parametrize("second", ["q1 0 a 0", "q1 0 a 2"])
def test_qrels_with_a_document_twice_are_refused_like_trec_eval(tmp_path, second):
    path = write(tmp_path / "qrels", f"q1 0 a 2\nq1 0 b 1\n{second}\n")
    with pytest.raises(InputError, match=r"qrels:3: document 'a' is given twice for query 'q1' \(first at line 1\)"):
        trec.read_qrels_file(path)


@pytest.mark.parametrize("line, message", [
    ("q1 0 a 2_0", "qrels:2: grade (column 4) must be a number, found '2_0'"),
    ("q1 0 a", "qrels:2: expected 4 whitespace-separated columns 'qid iter docid grade', found 3: 'q1 0 a'"),
    ("q1 0 \u00e9 x", "qrels:2: grade (column 4) must be a number, found 'x'"),          # the line-by-line path
    ("q1 0 \u00e9", "qrels:2: expected 4 whitespace-separated columns 'qid iter docid grade', found 3: 'q1 0 \u00e9'"),
    ("q1 0 a high", "qrels:2: grade (column 4) must be a number, found 'high'"),
    ("q1 0 a", "qrels:2: expected 4 whitespace-separated columns"),
    ("q1 0 a 1 extra", "qrels:2: expected 4 whitespace-separated columns"),
])
def test_malformed_qrels_lines_name_file_and_line(tmp_path, line, message):
    with pytest.raises(InputError, match=re.escape(message)):
        trec.read_qrels_file(write(tmp_path / "qrels", f"q0 0 z 1\n{line}\n"))


def test_written_scores_strictly_decrease_so_trec_eval_keeps_our_order(tmp_path):
    # trec_eval breaks score ties by docid (descending): "z" would jump ahead of "a".
    out = tmp_path / "out.trec"
    trec.write_run(str(out), {"q1": [("a", 0.5), ("z", 0.5), ("m", 0.7)]}, "tag")
    rows = [line.split() for line in out.read_text().splitlines()]
    assert [r[2] for r in rows] == ["a", "z", "m"]
    assert [r[3] for r in rows] == ["1", "2", "3"]
    scores = [float(r[4]) for r in rows]
    assert scores[0] == 0.5 and scores[0] > scores[1] > scores[2]
    assert scores[1] == float(numpy.nextafter(numpy.float32(0.5), numpy.float32(-1)))  # one C float step
    reread = trec.read_run(str(out))
    assert [e.docid for e in reread["q1"]] == ["a", "z", "m"]


def test_written_scores_strictly_decrease_for_float_readers_too(tmp_path):
    """pytrec_eval and ir_measures read C floats: near 1.0 a float step is 6e-8, so scores one double
    step apart (or 1e-9 apart) would tie there and be reordered by docid."""
    import random

    rng = random.Random(3)
    scores = sorted((rng.choice([1.0, 1.0 - 1e-9, 0.99999999, 0.5, 0.5, 1e-30, 0.0, -2.5])
                     for _ in range(300)), reverse=True)
    ranking = {"q1": [(f"d{i:03d}", s) for i, s in enumerate(scores)]}
    out = tmp_path / "out.trec"
    trec.write_run(str(out), ranking, "tag")
    written = [line.split()[4] for line in out.read_text().splitlines()]
    doubles = [float(w) for w in written]
    floats = [numpy.float32(w) for w in written]  # parsed from the text, as a float reader does
    assert all(a > b for a, b in zip(doubles, doubles[1:]))
    assert all(a > b for a, b in zip(floats, floats[1:]))
    assert [repr(d) for d in doubles] == written  # repr: the text round-trips
    assert all(d <= s for d, s in zip(doubles, scores))
    # only what must change changes: a score already below the previous one, as a float too, stays
    original = [0.9, 0.5, 0.5, 0.1]
    lowered = trec.strictly_decreasing(original)
    assert lowered[:2] == [0.9, 0.5] and lowered[3] == 0.1
    assert lowered[2] == float(numpy.nextafter(numpy.float32(0.5), numpy.float32(-1)))
    assert trec.strictly_decreasing([0.99999999, 0.99999998]) == [0.99999999, float(
        numpy.nextafter(numpy.float32(0.99999999), numpy.float32(-1)))]
    assert trec.strictly_decreasing([3e38, 3e38, -3.4e38, -3.4e38])[3] < -3.4e38  # float range ends
    # Beyond the float range (a float reader sees inf) only the double can step down.
    assert trec.strictly_decreasing([1e39, 1e39]) == [1e39, math.nextafter(1e39, -math.inf)]
    assert trec.strictly_decreasing([-1e39, -1e39]) == [-1e39, math.nextafter(-1e39, -math.inf)]


def test_write_is_atomic(tmp_path):
    out = tmp_path / "out.trec"
    out.write_text("old\n")

    class Boom(Exception):
        pass

    def ranking():
        yield "q1", [("a", 1.0)]
        raise Boom

    with pytest.raises(Boom):
        with trec.atomic_writer(out) as handle:
            handle.write("partial\n")
            raise Boom
    assert out.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.trec"]


def test_missing_output_directory_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        trec.write_run(str(tmp_path / "nodir" / "x.trec"), {"q": [("d", 1.0)]}, "t")


@pytest.mark.parametrize("tag", ["", "two words", "tab\there"])
def test_a_run_tag_must_be_one_word(tmp_path, tag):
    with pytest.raises(InputError, match=r"the run tag \(column 6\) must be one word"):
        trec.write_run(str(tmp_path / "out.trec"), {"q": [("d", 1.0)]}, tag)
    assert not (tmp_path / "out.trec").exists()


def test_a_document_twice_on_stdin_is_named_without_line_numbers(monkeypatch):
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"q1 Q0 a 1 3 t\nq1 Q0 b 2 2 t\nq1 Q0 a 3 1 t\n")))
    with pytest.raises(InputError) as error:
        trec.read_run("-")
    message = str(error.value)
    assert message.startswith("<stdin>: document 'a' is given twice for query 'q1'; trec_eval refuses"), message
    assert "line" not in message.split(";")[0]


def test_the_repeated_document_is_the_one_named(tmp_path):
    path = write(tmp_path / "run", "q1 Q0 a 1 3 t\nq1 Q0 b 2 2 t\nq1 Q0 c 3 2 t\nq1 Q0 b 4 1 t\n")
    with pytest.raises(InputError, match=r"run:4: document 'b' is given twice for query 'q1' \(first at line 2\)"):
        trec.read_run(path)


def test_a_non_utf8_qrels_line_is_named(tmp_path):
    path = tmp_path / "qrels"
    path.write_bytes(b"q1 0 a 1\nq1 0 \xff 1\n")
    with pytest.raises(InputError, match=r"qrels:2: not valid UTF-8"):
        trec.read_qrels_file(str(path))


def test_tied_scores_at_zero_and_below_step_down_one_float():
    assert trec.strictly_decreasing([0.0, 0.0]) == [0.0, -1.401298464324817e-45]     # the float closest below 0
    assert trec.strictly_decreasing([-1.0, -1.0]) == [-1.0, -1.0000001192092896]      # one C float below -1
    assert trec.strictly_decreasing([2.0, 2.0, 2.0]) == [2.0, 1.9999998807907104, 1.999999761581421]


def test_a_run_written_to_stdout_carries_its_tag_and_a_bad_tag_is_named():
    import io

    out = io.StringIO()
    trec.write_run("-", {"q1": [("d1", 2.0), ("d2", 1.0)]}, "mine", stdout=out)
    assert out.getvalue() == "q1 Q0 d1 1 2.0 mine\nq1 Q0 d2 2 1.0 mine\n"
    with pytest.raises(InputError) as error:
        trec.write_run("-", {"q1": [("d1", 2.0)]}, "my run", stdout=out)
    assert str(error.value) == "the run tag (column 6) must be one word without spaces, found 'my run'"


def test_a_ranking_of_extreme_scores_reads_back_in_its_order_as_doubles_and_as_c_floats(tmp_path):
    """Scores rank1 can give (1.0 for confident verdicts, subnormals, 0.0 below them) and ties among
    them, in the order the reranker decided: trec_eval (doubles; ties by docid descending) and float
    readers (pytrec_eval, ir_measures: the text parsed as a C float) both read that order back."""
    from rank1_cli.reasoning.scoring import relevance_score

    from_gaps = [relevance_score(0.0, -gap / 4) for gap in range(3200, -1, -1)]  # 1.0 (3054 times) ... 0.5
    from_gaps += [relevance_score(0.0, gap / 4) for gap in range(1, 3201)]  # 0.5 ... 5e-324, 0.0 (220 times)
    chosen = [1.0, 1.0, 1 - 1e-16, 1 - 2 ** -53, 1 - 1e-9, 0.5 + 1e-17, 0.5, 0.5, 1e-30, 1e-300,
              2.2250738585072014e-308, 5e-324, 0.0, 0.0, -0.0]
    scores = sorted(from_gaps + chosen, reverse=True)  # stable: equal scores keep their places
    # docids ascending down the ranking: a tie broken by docid descending would turn them around
    ranking = {"q1": [(f"d{i:05d}", score) for i, score in enumerate(scores)]}
    out = tmp_path / "out.trec"
    trec.write_run(str(out), ranking, "tag")
    rows = [line.split() for line in out.read_text().splitlines()]
    decided = [docid for docid, _ in ranking["q1"]]
    assert [row[2] for row in rows] == decided

    def trec_eval_order(read):
        by_docid = sorted(rows, key=lambda row: row[2], reverse=True)
        return [row[2] for row in sorted(by_docid, key=lambda row: read(row[4]), reverse=True)]

    assert trec_eval_order(float) == decided
    assert trec_eval_order(numpy.float32) == decided
    # scores are only ever lowered, and a score already below the one before it (as a float too) is kept
    written = [float(row[4]) for row in rows]
    assert all(w <= s for w, s in zip(written, scores))
    assert written[0] == 1.0 and written[scores.index(0.5)] == 0.5 and 1e-30 in written
