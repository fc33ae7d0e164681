import re
import gzip
import math
from pathlib import Path

import pytest

from rank1_cli import trec
from rank1_cli.errors import InputError


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


def test_duplicates_keep_the_first_and_warn_once(tmp_path, caplog):
    path = write(tmp_path / "run", "q1 Q0 a 1 3 t\nq1 Q0 a 2 9 t\nq1 Q0 b 3 1 t\nq1 Q0 b 4 0 t\n")
    run = trec.read_run(path)
    assert [(e.docid, e.score) for e in run["q1"]] == [("a", 3.0), ("b", 1.0)]
    assert "2 duplicate (qid, docid) lines" in caplog.text


@pytest.mark.parametrize("line, message", [
    ("q1 Q0 a 1 1.0", "run:2: expected 6 whitespace-separated columns"),
    ("q1 Q0 a one 1.0 t", "run:2: rank (column 4) must be an integer"),
    ("q1 Q0 a 1 high t", "run:2: score (column 5) must be a number"),
    ("q1 Q0 a 1 nan t", "run:2: score (column 5) must be finite"),
])
def test_malformed_lines_name_file_and_line(tmp_path, line, message):
    path = write(tmp_path / "run", "q1 Q0 z 1 1.0 t\n" + line + "\n")
    with pytest.raises(InputError, match=re.escape(message)):
        trec.read_run(path)


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
    qrels = trec.read_qrels_file(write(tmp_path / "qrels", "q1 0 a 2\nq1 0 b 0\nq2 0 c 1.7\n"))
    assert qrels == {"q1": {"a": 2, "b": 0}, "q2": {"c": 1}}
    assert "non-integer" in caplog.text


def test_written_scores_strictly_decrease_so_trec_eval_keeps_our_order(tmp_path):
    # trec_eval breaks score ties by docid (descending): "z" would jump ahead of "a".
    out = tmp_path / "out.trec"
    trec.write_run(str(out), {"q1": [("a", 0.5), ("z", 0.5), ("m", 0.7)]}, "tag")
    rows = [line.split() for line in out.read_text().splitlines()]
    assert [r[2] for r in rows] == ["a", "z", "m"]
    assert [r[3] for r in rows] == ["1", "2", "3"]
    scores = [float(r[4]) for r in rows]
    assert scores[0] == 0.5 and scores[0] > scores[1] > scores[2]
    assert scores[1] == math.nextafter(0.5, -math.inf)
    reread = trec.read_run(str(out))
    assert [e.docid for e in reread["q1"]] == ["a", "z", "m"]


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
