from pathlib import Path

import pytest

from rank1_cli import prompts
from rank1_cli.errors import InputError


def test_prompt_bytes_match_the_reference_template():
    expected = ("Determine if the following passage is relevant to the query. Answer only with 'true' or 'false'.\n"
                "Query: what is bm25\nPassage: BM25 is a ranking function.\n<think>")
    assert prompts.build_prompt("what is bm25", "BM25 is a ranking function.") == expected


def test_passage_is_title_space_text_only_when_there_is_a_title():
    assert prompts.passage_text("Okapi", "BM25 ranks.") == "Okapi BM25 ranks."
    assert prompts.passage_text("", "BM25 ranks.") == "BM25 ranks."
    assert prompts.passage_text(None, "BM25 ranks.") == "BM25 ranks."


def test_instruction_is_appended_unless_it_equals_the_query():
    assert prompts.with_instruction("q text", "only recent work") == "q text only recent work"
    assert prompts.with_instruction(" same ", "same") == " same "
    assert prompts.with_instruction("q", None) == "q"
    assert prompts.with_instruction("", " inst ") == "inst"


def test_dataset_template_replaces_the_query_slot():
    template = prompts.resolve_template("SciFact")
    assert template.apply("aspirin thins blood").startswith("Claim: aspirin thins blood\n\n")
    # case-insensitive names, and BRIGHT subsets without their own template use the generic one
    assert prompts.resolve_template("scifact").name == "SciFact"
    assert prompts.resolve_template("BrightRetrieval_nosuchsubset").name == "BrightRetrieval"
    assert prompts.resolve_template("BrightRetrieval_leetcode").name == "BrightRetrieval_leetcode"


def test_template_from_file_needs_the_slot(tmp_path: Path):
    good = tmp_path / "t.txt"
    good.write_text("Find FILL_QUERY_HERE please")
    assert prompts.resolve_template(str(good)).apply("cats") == "Find cats please"
    bad = tmp_path / "bad.txt"
    bad.write_text("no slot")
    with pytest.raises(InputError, match="FILL_QUERY_HERE"):
        prompts.resolve_template(str(bad))
    with pytest.raises(InputError, match="SciFact"):
        prompts.resolve_template("NoSuchDataset")


def test_instruction_then_template():
    template = prompts.QueryTemplate("t", "<<FILL_QUERY_HERE>>")
    assert prompts.rank1_query("q", "inst", template) == "<<q inst>>"
