"""Measure names: trec_eval names and families, common spellings, errors."""

import subprocess
import sys

import pytest

from rank1_cli.errors import InputError
from rank1_cli.evaluation.measures import (
    ALL_TREC,
    parse_measure,
    parse_measures,
    pytrec_requests,
    split_measure_list,
)


def columns(*names):
    return [(m.label, m.name) for m in parse_measures(names)]


@pytest.mark.parametrize("typed, name", [
    ("nDCG@10", "ndcg_cut_10"),
    ("ndcg@10", "ndcg_cut_10"),
    ("NDCG@20", "ndcg_cut_20"),
    ("nDCG", "ndcg"),
    ("AP", "map"),
    ("MAP", "map"),
    ("map", "map"),
    ("AP@100", "map_cut_100"),
    ("P@5", "P_5"),
    ("p@5", "P_5"),
    ("R@100", "recall_100"),
    ("Recall@1000", "recall_1000"),
    ("RR", "recip_rank"),
    ("MRR", "recip_rank"),
    ("RR@10", "RR@10"),
    ("MRR@10", "RR@10"),
    ("Judged@10", "Judged@10"),
    ("judged@5", "Judged@5"),
    ("Success@5", "success_5"),
    ("IPrec@0.5", "iprec_at_recall_0.50"),
    ("NumRelRet", "num_rel_ret"),
    ("rprec", "Rprec"),
    ("INFAP", "infAP"),
])
def test_common_spellings_keep_the_users_label(typed, name):
    assert columns(typed) == [(typed, name)]


@pytest.mark.parametrize("typed, names", [
    ("ndcg_cut.10", ["ndcg_cut_10"]),
    ("ndcg_cut_10", ["ndcg_cut_10"]),  # trec_eval's printed form
    ("P.5,10", ["P_5", "P_10"]),
    ("P.10,5,5", ["P_5", "P_10"]),  # sorted, deduplicated, like trec_eval
    ("P_5", ["P_5"]),
    ("recall.100", ["recall_100"]),
    ("ndcg_cut.10,20,23.4", ["ndcg_cut_10", "ndcg_cut_20", "ndcg_cut_23"]),  # atol, like trec_eval
    ("iprec_at_recall..10,.5", ["iprec_at_recall_0.10", "iprec_at_recall_0.50"]),
    ("iprec_at_recall_0.10", ["iprec_at_recall_0.10"]),
    ("Rprec_mult.5.0,0.2", ["Rprec_mult_0.20", "Rprec_mult_5.00"]),
    ("utility.2,-1,0,0", ["utility_2,-1,0,0"]),
    ("11pt_avg..25,.5,.75", ["11pt_avg_.25,.5,.75"]),
    ("ndcg.1=3,2=9,4=4.5", ["ndcg_1=3,2=9,4=4.5"]),
    ("relstring.20", ["relstring_20"]),
    ("rbp.p=0.8", ["rbp_p=0.8"]),
    ("unj", ["unj_5", "unj_10", "unj_20"]),
    ("success", ["success_1", "success_5", "success_10"]),
    ("P", ["P_5", "P_10", "P_15", "P_20", "P_30", "P_100", "P_200", "P_500", "P_1000"]),
])
def test_trec_eval_names_and_parameters(typed, names):
    assert columns(typed) == [(n, n) for n in names]


def test_official_is_what_plain_trec_eval_prints():
    names = [m.name for m in parse_measure("official")]
    assert names[:10] == ["runid", "num_q", "num_ret", "num_rel", "num_rel_ret", "map", "gm_map", "Rprec",
                          "bpref", "recip_rank"]
    assert len(names) == 30  # + 11 iprec_at_recall + 9 P, the 30 lines of out.test


def test_all_trec_is_what_trec_eval_10_prints():
    measures = parse_measure("all_trec")
    assert len(measures) == 100  # 99 `all` lines in out.test.a + relstring (per query only)
    names = [m.name for m in measures]
    assert names[-5:] == ["rbp", "rbp_resid", "unj_5", "unj_10", "unj_20"]
    assert "Judged@10" not in names and "RR" not in ALL_TREC


def test_families_and_names_are_case_insensitive():
    assert columns("ALL_TREC") == columns("all_trec")
    assert columns("Official") == columns("official")
    assert [m.name for m in parse_measures(["NDCG_CUT.10"])] == ["ndcg_cut_10"]


def test_duplicates_are_dropped_but_different_labels_kept():
    assert columns("map", "map", "AP") == [("map", "map"), ("AP", "map")]
    assert [label for label, _ in columns("P.5", "all_trec")].count("P_5") == 1


def test_comma_separated_lists_keep_trec_eval_parameter_lists_together():
    assert split_measure_list("nDCG@10,P.5,10,map") == ["nDCG@10", "P.5,10", "map"]
    assert split_measure_list("utility.2,-1,0,0, iprec_at_recall..1,.5") == [
        "utility.2,-1,0,0", "iprec_at_recall..1,.5"]
    assert columns("nDCG@10,AP,RR@10") == [("nDCG@10", "ndcg_cut_10"), ("AP", "map"), ("RR@10", "RR@10")]


def test_pytrec_requests_merge_cutoffs_and_skip_python_measures():
    requests = pytrec_requests(parse_measures(["P.5", "P@10", "nDCG@10", "Judged@10", "RR@5", "map",
                                               "iprec_at_recall", "num_q", "runid"]))
    assert requests == {"P.5,10", "ndcg_cut.10", "map"}


def test_unknown_measure_lists_the_known_names():
    with pytest.raises(InputError) as info:
        parse_measures(["nDCG@10", "ndcgg@10x"])
    message = str(info.value)
    assert "unknown measure 'ndcgg@10x'" in message
    for known in ("ndcg_cut", "recip_rank", "all_trec", "official", "nDCG@k", "Judged@k", "RR@k"):
        assert known in message


def test_unknown_measure_suggests_a_close_name():
    with pytest.raises(InputError, match="Did you mean 'ndcg_cut'"):
        parse_measures(["ndcg_cutt"])


@pytest.mark.parametrize("typed, message", [
    ("P.0", "cutoffs must be positive"),
    ("P@0", "cutoffs must be positive"),
    ("nDCG@x", "cutoff after '@' must be a positive integer"),
    ("ndcg_cut.ten", "'ten' is not a number"),
    ("map.5", "map takes no parameters"),
    ("utility.1,2", "utility takes 4 numbers"),
    ("ndcg.1=x", "'x' is not a number"),
    ("ndcg.high=3", "gains are grade=gain pairs"),
    ("rbp.p=1.5", "strictly between 0 and 1"),
    ("Judged", "needs a cutoff"),
    ("iprec_at_recall.1.5", "recall levels lie in [0, 1]"),
    ("", "empty measure name"),
])
def test_bad_parameters_say_what_is_wrong(typed, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_measure(typed)


def test_one_parameter_string_per_pytrec_measure():
    with pytest.raises(InputError, match="one parameter string per evaluation"):
        parse_measures(["ndcg", "ndcg.1=3,2=9"])


def test_importing_measures_and_evaluate_stays_light():
    code = ("import sys, rank1_cli.evaluation.measures, rank1_cli.evaluation.trec_eval; "
            "print(sorted(m for m in ('torch', 'vllm', 'transformers', 'pytrec_eval', 'pytrec_eval_ext', "
            "'numpy', 'rich') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("typed, message", [
    ("utility.2,-1,0,x", "measure 'utility.2,-1,0,x': 'x' is not a number"),
    ("utility.1,2", "measure 'utility.1,2': utility takes 4 numbers a,b,c,d (utility.2,-1,0,0)"),
    ("ndcg.3", "measure 'ndcg.3': parameters are name=value pairs (ndcg.1=3,2=9)"),
    ("ndcg.a=1", "measure 'ndcg.a=1': gains are grade=gain pairs (ndcg.1=3,2=9)"),
    ("rbp.q=0.5", "measure 'rbp.q=0.5': rbp takes one parameter p (rbp.p=0.8)"),
    ("rbp.p", "measure 'rbp.p': parameters are name=value pairs (rbp.p=0.8)"),
    ("rbp.p=0", "measure 'rbp.p=0': rbp's p lies strictly between 0 and 1"),
    ("rbp.p=1", "measure 'rbp.p=1': rbp's p lies strictly between 0 and 1"),
    ("relstring.5,6", "measure 'relstring.5,6': relstring takes one length (relstring.20)"),
    ("relstring.0", "measure 'relstring.0': the length must be at least 1"),
    ("relstring.x", "measure 'relstring.x': 'x' is not a number"),
    ("11pt_avg.-0.5", "measure '11pt_avg.-0.5': values must not be negative, found '-0.5'"),
    ("iprec_at_recall.1.5", "measure 'iprec_at_recall.1.5': recall levels lie in [0, 1], found '1.5'"),
    ("P.-3", "measure 'P.-3': cutoffs must be positive integers, found '-3'"),
    ("P.inf", "measure 'P.inf': 'inf' is not a finite number"),
    ("nDCG@x", "measure 'nDCG@x': the cutoff after '@' must be a positive integer, e.g. nDCG@10"),
    ("RR@ten", "measure 'RR@ten': the cutoff after '@' must be a positive integer, e.g. RR@10"),
    ("Success@", "measure 'Success@': the cutoff after '@' must be a positive integer, e.g. Success@10"),
    ("Iprec@x", "measure 'Iprec@x': the recall level after '@' must be a number in [0, 1], e.g. IPrec@0.5"),
    ("IPrec@2", "measure 'IPrec@2': recall levels lie in [0, 1], found '2'"),
    ("ndcg_cut.", "measure 'ndcg_cut.': empty parameter list after '.'"),
    ("ndcg.1=x", "measure 'ndcg.1=x': 'x' is not a number"),
    ("ndcg.1=2=3", "measure 'ndcg.1=2=3': '2=3' is not a number"),
    ("nDCG@10@5", "measure 'nDCG@10@5': the cutoff after '@' must be a positive integer, e.g. nDCG@10"),
    ("Judged", "measure 'Judged' needs a cutoff, e.g. Judged@10"),
])
def test_bad_parameters_get_the_whole_message(typed, message):
    with pytest.raises(InputError) as error:
        parse_measure(typed)
    assert str(error.value) == message


@pytest.mark.parametrize("typed, suggestion", [
    ("ndcg_cutt", " Did you mean 'ndcg_cut' or 'ndcg'? "),
    ("NDCG_CUTT", " Did you mean 'ndcg_cut' or 'ndcg'? "),      # case differs: compared in lower case
    ("Recip_Rankk", " Did you mean 'recip_rank'? "),
    ("mapp", " Did you mean 'map' or 'gm_map'? "),
    ("xyzzy", " "),
    ("num_re", " Did you mean 'num_ret' or 'num_rel' or 'num_q'? "),         # at most three
    ("NUM_RE", " Did you mean 'num_ret' or 'num_rel' or 'num_q'? "),
    # The common spellings are suggested as written in the docs.
    ("nDGC@10", " Did you mean 'nDCG@10'? "),
    ("ADP", " Did you mean 'AP' or 'MAP'? "),
    ("MAPP", " Did you mean 'MAP' or 'AP'? "),
    ("Pp@10", " Did you mean 'P@10' or 'RR@10' or 'R@100'? "),
    ("Recal@100", " Did you mean 'Recall@100' or 'R@100'? "),
    ("RRx", " Did you mean 'RR' or 'MRR'? "),
    ("MRRR", " Did you mean 'MRR' or 'RR'? "),
    ("Judgd@10", " Did you mean 'Judged@10'? "),
])
def test_an_unknown_name_gets_close_names_and_the_whole_list(typed, suggestion):
    with pytest.raises(InputError) as error:
        parse_measure(typed)
    message = str(error.value)
    assert message.startswith(f"unknown measure {typed!r}.{suggestion}Known: trec_eval measures (add .PARAMS, "
                              "e.g. ndcg_cut.10, P.5,10): runid, num_q, num_ret, num_rel, num_rel_ret, map, ")
    assert message.endswith("rbp, rbp_resid, unj; families: official, all_trec, set; other names "
                            "(case-insensitive): nDCG@k, nDCG, AP, MAP, AP@k, P@k, R@k, Recall@k, RR, MRR, RR@k, "
                            "MRR@k, Success@k, IPrec@r, Judged@k, Unj@k, NumQ, NumRet, NumRel, NumRelRet")


def test_recall_levels_take_1_itself_and_values_must_be_numbers():
    assert [m.name for m in parse_measure("iprec_at_recall.1")] == ["iprec_at_recall_1.00"]
    assert [m.name for m in parse_measure("11pt_avg.0,1")] == ["11pt_avg_0,1"]
    assert [m.name for m in parse_measure("relstring.1")] == ["relstring_1"]
    with pytest.raises(InputError) as error:
        parse_measure("11pt_avg.x")
    assert str(error.value) == "measure '11pt_avg.x': 'x' is not a number"


@pytest.mark.parametrize("printed, name", [
    ("map_cut_10", "map_cut_10"), ("ndcg_cut_5", "ndcg_cut_5"), ("relative_P_5", "relative_P_5"),
    ("iprec_at_recall_.5", "iprec_at_recall_0.50"), ("recall_+5", "recall_5"), ("P_5", "P_5"),
])
def test_trec_evals_printed_names_read_back_as_the_longest_family(printed, name):
    assert [m.name for m in parse_measure(printed)] == [name]


def test_parameter_lists_continue_after_a_printed_name_or_a_sign():
    assert split_measure_list("P_5,10,map") == ["P_5,10", "map"]
    assert split_measure_list("P.5,+10") == ["P.5,+10"]
    assert split_measure_list("map,5") == ["map", "5"]          # map has no parameters to continue


def test_no_measure_and_two_parameter_strings_for_one_family_are_refused():
    with pytest.raises(InputError) as error:
        parse_measures([])
    assert str(error.value).startswith("no measure given. Known: trec_eval measures (add .PARAMS")
    for first, already in (("ndcg.1=3", "'1=3'"), ("ndcg", "'the default'")):
        with pytest.raises(InputError) as error:
            parse_measures([first, "ndcg.2=5"])
        assert str(error.value) == ("measure 'ndcg.2=5': ndcg can be computed with one parameter string per "
                                    f"evaluation, already have {already}")


# ---------------------------------------------------------------------------------------------
# Every alias computes the measure it names


def _ranking(*docids):
    return {docid: float(len(docids) - i) for i, docid in enumerate(docids)}


# Docids say what the qrels make them: r relevant, n judged non-relevant, u not in the qrels,
# p pooled but unjudged (grade -1). Built so that the measures an alias could be confused with
# give different per-query values (asserted below, so the fixture cannot silently degrade).
SEPARATING_RUN = {
    "q1": _ranking("u1", "n1", "r1", "n2", "r2", "r3", "n3", "u2"),  # 3 of 6 relevant retrieved
    "q2": _ranking("r4", "n4", "u3"),  # fewer than 5 documents; the relevant one first
    "q3": _ranking("n5", "p1", "n6", "u4", "n7", "r5", "r6"),  # the first relevant one at rank 6
}
SEPARATING_QRELS = {
    "q1": {"r1": 2, "r2": 1, "r3": 1, "r7": 1, "r8": 1, "r9": 2, "n1": 0, "n2": 0, "n3": 0},
    "q2": {"r4": 1, "n4": 0, "r8": 2},
    "q3": {"r5": 1, "r6": 2, "n5": 0, "n6": 0, "n7": 0, "p1": -1},
}

# Per alias pattern of the parser's table: spellings it accepts and what each must compute, a
# trec_eval measure (its canonical name) or, for our own measures, the values worked out by hand.
RR_AT_5 = (1 / 3, 1.0, 0.0)  # 1/rank of the first relevant document in the top 5
JUDGED_AT_5 = (4 / 5, 2 / 3, 4 / 5)  # top-5 documents in the qrels (p1 too) over min(5, retrieved)
ALIAS_EXPECTATIONS = {
    r"ndcg@(\d+)": [("nDCG@5", "ndcg_cut.5"), ("NDCG@5", "ndcg_cut.5")],
    r"m?ap@(\d+)": [("AP@5", "map_cut.5"), ("MAP@5", "map_cut.5")],
    r"m?ap": [("AP", "map"), ("ap", "map")],
    r"p@(\d+)": [("P@5", "P.5"), ("p@5", "P.5")],
    r"(?:r|recall)@(\d+)": [("R@5", "recall.5"), ("Recall@5", "recall.5")],
    r"m?rr": [("RR", "recip_rank"), ("MRR", "recip_rank")],
    r"m?rr@(\d+)": [("RR@5", RR_AT_5), ("MRR@5", RR_AT_5)],
    r"success@(\d+)": [("Success@5", "success.5"), ("success@1", "success.1")],
    r"iprec@([0-9.]+)": [("IPrec@0.5", "iprec_at_recall.0.5"), ("iprec@.5", "iprec_at_recall.0.5")],
    r"judged@(\d+)": [("Judged@5", JUDGED_AT_5), ("judged@5", JUDGED_AT_5)],
    r"judged": [("Judged", InputError)],  # Judged needs a cutoff: the alias is there for the message
    r"unj@(\d+)": [("Unj@5", "unj.5"), ("UNJ@5", "unj.5")],
    r"numq": [("NumQ", "num_q")],
    r"numret": [("NumRet", "num_ret")],
    r"numrel": [("NumRel", "num_rel")],
    r"numrelret": [("NumRelRet", "num_rel_ret")],
}
# Measures an alias could plausibly be pointed at by mistake, beside the ones the table names.
NEIGHBOURS = ("ndcg", "Rprec", "bpref", "infAP", "ndcg_rel", "Rndcg", "relative_P.5", "set_P", "set_recall",
              "gm_map", "num_nonrel_judged_ret")


def _values(name: str):
    """(per-query values in query order, the aggregate) of one measure on the separating run."""
    from rank1_cli.evaluation.trec_eval import evaluate_run

    evaluation = evaluate_run(SEPARATING_RUN, SEPARATING_QRELS, [name])
    (measure,) = evaluation.measures
    per_query = tuple(evaluation.value(measure, qid) for qid in evaluation.queries) if measure.per_query else ()
    return per_query, evaluation.value(measure)


def test_the_alias_table_lists_every_alias_of_the_parser():
    from rank1_cli.evaluation.measures import _ALIASES

    assert [pattern.pattern for pattern, _, _ in _ALIASES] == list(ALIAS_EXPECTATIONS), (
        "add each new alias to ALIAS_EXPECTATIONS with the measure it must compute")


@pytest.mark.parametrize("pattern, typed, expected", [
    (pattern, typed, expected) for pattern, cases in ALIAS_EXPECTATIONS.items() for typed, expected in cases])
def test_each_alias_computes_the_measure_it_names(pattern, typed, expected):
    from rank1_cli.evaluation.measures import _ALIASES, _parse_trec

    # the spelling reaches this alias: not a trec_eval name, and no alias before it matches
    assert _parse_trec(typed) is None
    assert next(p.pattern for p, _, _ in _ALIASES if p.fullmatch(typed)) == pattern
    if expected is InputError:
        with pytest.raises(InputError, match="needs a cutoff"):
            parse_measure(typed)
        return
    assert [m.label for m in parse_measure(typed)] == [typed]  # shown as typed
    per_query, aggregate = _values(typed)
    if isinstance(expected, tuple):
        assert per_query == pytest.approx(expected)
        assert aggregate == pytest.approx(sum(expected) / len(expected))
    else:
        assert (per_query, aggregate) == _values(expected)


def test_the_separating_run_tells_every_measure_an_alias_names_apart():
    import itertools

    names = sorted({e for cases in ALIAS_EXPECTATIONS.values() for _, e in cases if isinstance(e, str)}
                   | set(NEIGHBOURS) | {"RR@5", "Judged@5"})
    values = {name: _values(name) for name in names}
    same = [(a, b) for a, b in itertools.combinations(names, 2) if values[a] == values[b]]
    assert same == []
    # the example, on one query: P@5, Judged@5, unjudged share, recall at 5 all differ
    q1 = [values[name][0][0] for name in ("P.5", "Judged@5", "unj.5", "recall.5", "ndcg_cut.5", "map",
                                          "recip_rank")]
    assert q1 == pytest.approx([2 / 5, 4 / 5, 1 / 5, 2 / 6, 0.30284669982444834, 0.20555555555555557, 1 / 3])
    assert len(set(q1[:6])) == 6
