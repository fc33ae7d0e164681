"""rank1 in PyTerrier pipelines (`pip install rank1-cli[pyterrier]`): a `pt.Transformer` that
reranks a results DataFrame with a `Rank1` model.

    import pyterrier as pt
    from rank1_cli import Rank1
    from rank1_cli.pyterrier import Rank1Reranker

    rank1 = Rank1Reranker(Rank1("rank1-7b"))
    pipeline = bm25 % 100 >> pt.text.get_text(dataset, "text") >> rank1
    pt.Experiment([bm25, pipeline], topics, qrels, ["ndcg_cut_10"])

All queries of the frame are judged together (one engine batch, the store first), not one
query at a time. The output keeps every input column and adds `score` (rank1's P(true)),
`rank`, `verdict`, `reasoning` and `completion`; a query's ties keep their input order.
"""

from __future__ import annotations

import pyterrier as pt

from .api import Rank1


class Rank1Reranker(pt.Transformer):
    """Rerank (qid, query, docno, TEXT_FIELD) rows with rank1; see the module docstring."""

    def __init__(self, rank1: Rank1, text_field: str = "text", *, instruction_field: str | None = None) -> None:
        self.rank1 = rank1
        self.text_field = text_field
        self.instruction_field = instruction_field

    def transform(self, results):
        missing = [c for c in ("qid", "query", "docno", self.text_field) if c not in results.columns]
        if missing:
            raise ValueError(f"Rank1Reranker needs the columns qid, query, docno and {self.text_field}; missing: "
                             f"{', '.join(missing)} (add the text with pt.text.get_text)")
        frame = results.reset_index(drop=True).copy()
        if frame.empty:
            for column in ("score", "verdict", "reasoning", "completion"):
                frame[column] = []
            return pt.model.add_ranks(frame)
        instructions = ([value if isinstance(value, str) else None for value in frame[self.instruction_field]]
                        if self.instruction_field else [None] * len(frame))
        judgements = self.rank1.score(list(zip(frame["query"], frame[self.text_field], instructions)))
        frame["score"] = [j.score for j in judgements]
        frame["verdict"] = [j.verdict for j in judgements]
        frame["reasoning"] = [j.reasoning for j in judgements]
        frame["completion"] = [j.completion for j in judgements]
        frame["_input_order"] = range(len(frame))
        frame = frame.sort_values(["qid", "score", "_input_order"], ascending=[True, False, True], kind="stable")
        return pt.model.add_ranks(frame.drop(columns="_input_order").reset_index(drop=True))
