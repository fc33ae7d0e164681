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
    assert prompts.resolve_template(str(good)).name == str(good)           # the name the traces record
    bad = tmp_path / "bad.txt"
    bad.write_text("no slot")
    with pytest.raises(InputError, match="FILL_QUERY_HERE"):
        prompts.resolve_template(str(bad))
    with pytest.raises(InputError, match="SciFact"):
        prompts.resolve_template("NoSuchDataset")


def test_instruction_then_template():
    template = prompts.QueryTemplate("t", "<<FILL_QUERY_HERE>>")
    assert prompts.rank1_query("q", "inst", template) == "<<q inst>>"


def test_prompt_hash_is_sha256_of_the_utf8_bytes():
    assert prompts.prompt_sha256("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert prompts.prompt_sha256("é") == "4a99557e4033c3539de2eb65472017cad5f9557f7a0625a09f1c3f6e2ba69c4c"


def test_an_unknown_prompt_lists_every_dataset_prompt(tmp_path):
    from rank1_cli.errors import OptionError

    with pytest.raises(OptionError) as error:
        prompts.resolve_template("NoSuch")
    names = ", ".join(sorted(prompts.dataset_templates()))
    assert error.value.for_command_line() == (f"--prompt 'NoSuch': neither a dataset prompt nor a file. "
                                              f"Dataset prompts: {names}")
    assert names.startswith("ArguAna, BrightRetrieval, BrightRetrieval_aops") and names.endswith("Touche2020")
    assert prompts.resolve_template(None) is None
    assert prompts.resolve_template("brightretrieval_new_subset").name == "BrightRetrieval"   # any case


def test_a_template_file_that_is_not_utf8_is_named(tmp_path):
    bad = tmp_path / "t.txt"
    bad.write_bytes(b"Find FILL_QUERY_HERE \xff")
    with pytest.raises(InputError) as error:
        prompts.resolve_template(str(bad))
    assert str(error.value) == f"{bad}: prompt template is not valid UTF-8"
    noslot = tmp_path / "noslot.txt"
    noslot.write_text("no slot")
    with pytest.raises(InputError) as error:
        prompts.resolve_template(str(noslot))
    assert str(error.value) == f"{noslot}: a prompt template must contain FILL_QUERY_HERE where the query goes"


def test_the_instruction_joins_with_one_space_and_the_ends_are_trimmed():
    assert prompts.with_instruction("q text", " only recent ") == "q text  only recent"
    assert prompts.with_instruction("same", " same ") == "same"
    assert prompts.with_instruction("q", "") == "q"
    assert prompts.rank1_query("q", "inst") == "q inst"
