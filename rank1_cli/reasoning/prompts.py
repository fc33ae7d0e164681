"""The rank1 prompt, byte for byte, and the query rewrites that precede it (pure functions)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from ..errors import InputError, OptionError

PROMPT_HEAD = "Determine if the following passage is relevant to the query. Answer only with 'true' or 'false'.\nQuery: "
PASSAGE_LABEL = "\nPassage: "
THINK_OPEN = "\n<think>"
STOP_TRUE = "</think> true"
STOP_FALSE = "</think> false"
STOP_STRINGS = (STOP_TRUE, STOP_FALSE)
QUERY_SLOT = "FILL_QUERY_HERE"


def build_prompt(query: str, passage: str) -> str:
    """The exact prompt the rank1 models were trained on (no chat template)."""
    return PROMPT_HEAD + query + PASSAGE_LABEL + passage + THINK_OPEN


def passage_text(title: str | None, text: str) -> str:
    """`title + " " + text` when the document has a title, else `text`."""
    return f"{title} {text}" if title else text


def with_instruction(query: str, instruction: str | None) -> str:
    """FollowIR-style instructions: appended to the query unless the two are the same text."""
    if not instruction or query.strip() == instruction.strip():
        return query
    return f"{query} {instruction}".strip()


def prompt_sha256(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class QueryTemplate:
    """A dataset prompt: text in which FILL_QUERY_HERE stands for the query."""

    name: str
    text: str

    def apply(self, query: str) -> str:
        return self.text.replace(QUERY_SLOT, query)


@cache
def dataset_templates() -> dict[str, str]:
    """The per-dataset query templates of the rank1 evaluation, shipped with the package."""
    data = resources.files("rank1_cli").joinpath("data/rank1_dataset_prompts.json").read_text("utf-8")
    return json.loads(data)


def dataset_template(spec: str) -> QueryTemplate | None:
    """The dataset prompt named `spec` in any case (a BRIGHT subset without a template of its own:
    the generic BrightRetrieval one, as the reference does), or None."""
    templates = dataset_templates()
    by_lower = {name.lower(): name for name in templates}
    name = by_lower.get(spec.lower())
    if name is None and spec.lower().startswith("brightretrieval_") and "BrightRetrieval" in templates:
        name = "BrightRetrieval"
    return None if name is None else QueryTemplate(name, templates[name])


def resolve_template(spec: str | None) -> QueryTemplate | None:
    """`--prompt`: a dataset name (SciFact, BrightRetrieval_leetcode, ...; see dataset_template) or a
    file with FILL_QUERY_HERE."""
    if spec is None:
        return None
    template = dataset_template(spec)
    if template is not None:
        return template
    path = Path(spec)
    if path.is_file():
        try:
            text = path.read_text("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{path}: prompt template is not valid UTF-8") from None
        if QUERY_SLOT not in text:
            raise InputError(f"{path}: a prompt template must contain {QUERY_SLOT} where the query goes")
        return QueryTemplate(str(path), text)
    known = ", ".join(sorted(dataset_templates()))
    raise OptionError(f"{{prompt}} {spec!r}: neither a dataset prompt nor a file. Dataset prompts: {known}")


def rank1_query(query: str, instruction: str | None = None, template: QueryTemplate | None = None) -> str:
    """The query text as it goes into the prompt: instruction appended, then the dataset template."""
    query = with_instruction(query, instruction)
    return template.apply(query) if template else query
