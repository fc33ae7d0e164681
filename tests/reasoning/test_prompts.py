import hashlib
from pathlib import Path

import pytest

from rank1_cli.errors import InputError
from rank1_cli.reasoning import prompts


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


# ---------------------------------------------------------------------------------------------
# Prompt bytes for unusual text: every character of the query and passage reaches the prompt

# The reference's prompt (rank1-algorithm.md), written out here rather than taken from the code:
#   "Determine if ... 'false'.\nQuery: " + query + "\nPassage: " + passage + "\n<think>"
# with passage = title + " " + text when there is a title, and the query
# f"{query} {instruction}".strip() unless query and instruction are equal after stripping.
HEAD = "Determine if the following passage is relevant to the query. Answer only with 'true' or 'false'.\nQuery: "

# (query, instruction, title, text, the prompt the reference builds)
UNUSUAL_TEXTS = [
    ("  bm25  ", None, None, "  ranks documents  ",
     HEAD + "  bm25  \nPassage:   ranks documents  \n<think>"),
    ("\tq\t", None, "\tTitle\t", "\ttext\t",
     HEAD + "\tq\t\nPassage: \tTitle\t \ttext\t\n<think>"),
    ("q\n", None, None, "\nline one\nline two\n\n",
     HEAD + "q\n\nPassage: \nline one\nline two\n\n\n<think>"),
    ("q\r", None, "T\r", "a\r\nb\r",
     HEAD + "q\r\nPassage: T\r a\r\nb\r\n<think>"),
    ("\u00a0q\u00a0", None, None, "\u00a0no-break\u00a0",
     HEAD + "\u00a0q\u00a0\nPassage: \u00a0no-break\u00a0\n<think>"),
    ("\U0001f525 hot \U0001f469\u200d\U0001f4bb", None, "\U0001f44d\U0001f3fd", "thumbs \U0001f600",
     HEAD + "\U0001f525 hot \U0001f469\u200d\U0001f4bb\nPassage: \U0001f44d\U0001f3fd thumbs \U0001f600\n<think>"),
    ("cafe\u0301", None, None, "n\u0303 and \u00f1",  # decomposed stays decomposed: no normalisation
     HEAD + "cafe\u0301\nPassage: n\u0303 and \u00f1\n<think>"),
    ("q", None, "", "text only", HEAD + "q\nPassage: text only\n<think>"),  # empty title: no space
    ("q", None, " ", "text", HEAD + "q\nPassage:   text\n<think>"),  # a title of a space is a title
    ("q", None, "Title only", "", HEAD + "q\nPassage: Title only \n<think>"),
    (" same ", "same\n", None, "p", HEAD + " same \nPassage: p\n<think>"),  # equal after stripping
    (" q ", " inst ", None, "p", HEAD + "q   inst\nPassage: p\n<think>"),  # joined, then stripped
    ("", " inst\t", None, "p", HEAD + "inst\nPassage: p\n<think>"),
    (" q\n", "", None, "p", HEAD + " q\n\nPassage: p\n<think>"),  # an empty instruction adds nothing
]


@pytest.mark.parametrize("query, instruction, title, text, expected", UNUSUAL_TEXTS)
def test_prompt_bytes_keep_every_character_of_unusual_texts(query, instruction, title, text, expected):
    prompt = prompts.build_prompt(prompts.rank1_query(query, instruction), prompts.passage_text(title, text))
    assert prompt.encode("utf-8") == expected.encode("utf-8")
    assert prompts.prompt_sha256(prompt) == hashlib.sha256(expected.encode("utf-8")).hexdigest()


def test_rerank_builds_the_same_prompt_bytes_from_query_and_document_records():
    # the path rank1 rerank takes: records -> build_pairs -> the prompts sent to the model
    from rank1_cli.io.collection import Document, Query
    from rank1_cli.io.trec import RunEntry
    from rank1_cli.reasoning.fitting import Budget
    from rank1_cli.workflows.rerank import RerankInputs, build_pairs

    def tokenizer(texts, add_special_tokens=True, verbose=True):  # one token per character: nothing is cut
        return {"input_ids": [list(text) for text in texts]}

    run, queries, documents = {}, {}, {}
    for i, (query, instruction, title, text, _) in enumerate(UNUSUAL_TEXTS):
        qid, docid = f"q{i}", f"d{i}"
        run[qid] = [RunEntry(docid, 1.0, 1)]
        queries[qid] = Query(qid, query, instruction)
        documents[docid] = Document(docid, title or "", text)
    pairs = build_pairs(RerankInputs(run, queries, {}, documents), tokenizer, Budget(100_000, 1_000), None, 10)
    assert [pair.prompt.encode("utf-8") for pair in pairs] == [case[-1].encode("utf-8") for case in UNUSUAL_TEXTS]
