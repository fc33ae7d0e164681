"""The guards for the files rank1 writes; here: a traces file being replaced keeps its reasoning
(through the CLI: test_cli_store.py)."""

import pytest

from rank1_cli.errors import InputError
from rank1_cli.outputs import keep_replaced_traces
from rank1_cli.store import Store, StoredGeneration

from test_store import KEY, SETTINGS, sha, trace_line


def traces_file(tmp_path, count=3, **changes):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(trace_line(i, **changes) + "\n" for i in range(count)))
    return path


def test_the_replaced_traces_go_into_the_store_and_what_is_there_stays(tmp_path):
    path, store = traces_file(tmp_path), tmp_path / "s.sqlite"
    with Store(store) as opened:
        opened.put_many(KEY, [StoredGeneration(sha(1), "fallback", None, None, None, 0, "mine")])
    report = keep_replaced_traces(str(path), store, set())
    assert (report.lines, report.added, report.already) == (3, 2, 1)
    with Store(store) as opened:
        assert opened.count() == 3
        assert [g.reasoning for g in opened.get_many(KEY, [sha(i) for i in range(3)]).values()] == \
            ["reasoning 0.", "mine", "reasoning 2."]


def test_without_a_store_traces_the_rerank_writes_again_may_be_replaced(tmp_path):
    path = traces_file(tmp_path)
    assert keep_replaced_traces(str(path), None, {(KEY, sha(i)) for i in range(3)}) is None
    with pytest.raises(InputError) as error:
        keep_replaced_traces(str(path), None, {(KEY, sha(0)), (KEY, sha(1))})
    assert str(error.value) == (
        f"{path} holds 1 generations of rank1 traces that this rerank would replace and not write again; with "
        f"--no-store they would be lost. To keep them: rerank with a store (without --no-store: they are imported "
        f"into it first), move {path} away, or name another --traces")


@pytest.mark.parametrize("store", [True, False])
def test_traces_no_store_can_take_are_never_replaced(tmp_path, store):
    old = {k: v for k, v in SETTINGS.items() if k not in ("model_revision", "engine")}
    path = traces_file(tmp_path, settings=old)
    with pytest.raises(InputError) as error:
        keep_replaced_traces(str(path), tmp_path / "s.sqlite" if store else None, {(KEY, sha(i)) for i in range(3)})
    assert str(error.value) == (
        f"{path} holds rank1 traces that this rerank would replace, and they cannot be imported into a store "
        f"({path}:1: not a rank1 trace: the settings do not say which model revision and engine made it (traces of "
        "an older rank1-cli): name the model they were made with (--model)). To keep them: import them with "
        f"`rank1 store import {path} --model M` (M: the model that made them) and move the file away, or name "
        "another --traces")
    assert not (tmp_path / "s.sqlite").exists()


def test_nothing_to_keep_without_a_traces_file(tmp_path):
    assert keep_replaced_traces(None, tmp_path / "s.sqlite", set()) is None
    assert keep_replaced_traces("-", tmp_path / "s.sqlite", set()) is None
    assert keep_replaced_traces(str(tmp_path / "new.jsonl"), tmp_path / "s.sqlite", set()) is None
    assert not (tmp_path / "s.sqlite").exists()
