"""rank1 as an MTEB 2.x reranker (`pip install rank1-cli[mteb]`).

    import mteb
    from rank1_cli.mteb import Rank1MTEB

    model = Rank1MTEB("rank1-7b")                       # keywords as for rank1_cli.Rank1
    task = mteb.get_task("NFCorpus").convert_to_reranking("bm25_predictions/", top_k=100)
    mteb.evaluate(model, task)

It implements MTEB's `CrossEncoderProtocol`: `predict` receives the (query, document) pairs of a
task's first-stage candidates (`top_ranked`, or a previous run through `convert_to_reranking`;
the paper used top_k=100, MTEB's default is 10) and returns rank1's P(true) per pair. The
dataset prompt of the rank1 evaluation is applied per task (and per BRIGHT subset) as the
reference does; FollowIR-style instructions in the queries are appended. Every pair goes
through the reasoning store like `rank1 rerank`, and the model's metadata names it, so results
are saved under rank1's name.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mteb.models import ModelMeta

from .api import Rank1
from .reasoning import prompts
from .reasoning.models import MODELS


class Rank1MTEB:
    """A rank1 model behind MTEB's CrossEncoderProtocol; see the module docstring."""

    def __init__(self, model_name: str = "rank1-7b", revision: str | None = None, device: str | None = None,
                 *, rank1: Rank1 | None = None, **rank1_options: Any) -> None:
        if rank1 is None:
            if device is not None and rank1_options.get("backend") == "transformers":
                rank1_options.setdefault("device", device)   # vLLM places itself
            rank1 = Rank1(model_name, **rank1_options)
        self.rank1 = rank1
        self.model_name = model_name
        self.revision = revision or rank1.scoring.key.model_revision

    @property
    def mteb_model_meta(self) -> ModelMeta:
        info = MODELS.get(self.model_name) or next((m for m in MODELS.values() if m.hf_id == self.model_name), None)
        name = info.hf_id if info else self.model_name
        return ModelMeta(
            loader=None, name=name if "/" in name else f"local/{name}", revision=self.revision, release_date="2025-02-25",
            languages=["eng-Latn"], n_parameters=int(info.params_b * 1e9) if info else None,
            memory_usage_mb=info.weights_gb * 1024 if info else None,
            max_tokens=float(self.rank1.scoring.budget.max_model_len), embed_dim=None, license="mit",
            open_weights=True, public_training_code="https://github.com/orionw/rank1",
            public_training_data="https://huggingface.co/datasets/jhu-clsp/rank1-training-data",
            framework=["PyTorch"], similarity_fn_name=None, use_instructions=True, training_datasets=set(),
        )

    def predict(self, inputs1, inputs2, *, task_metadata, hf_split: str, hf_subset: str, prompt_type=None,
                **kwargs: Any) -> np.ndarray:
        queries, instructions, passages = [], [], []
        for batch in inputs1:
            # MTEB appends a query's instruction to its "text" and keeps both parts ("query",
            # "instruction"); rank1 joins them itself, as the reference does.
            raw = batch.get("query")
            queries += list(raw if raw is not None else batch["text"])
            given = batch.get("instruction") if raw is not None else None
            instructions += list(given) if given is not None else [None] * len(batch["text"])
        for batch in inputs2:
            # MTEB's "text" is already title + " " + body, which is rank1's passage text.
            passages += list(batch["text"])
        if len(queries) != len(passages):
            raise ValueError(f"MTEB gave {len(queries)} queries and {len(passages)} documents; expected pairs")
        judgements = self.rank1.score(list(zip(queries, passages, instructions)),
                                      prompt=dataset_prompt(task_metadata.name, hf_subset))
        return np.array([j.score for j in judgements], dtype=np.float64)


def dataset_prompt(task_name: str, hf_subset: str) -> str | None:
    """The rank1 evaluation's prompt for an MTEB task (BRIGHT: per subset), or None."""
    templates = prompts.dataset_templates()
    for name in (f"{task_name}_{hf_subset}", task_name):
        if name in templates:
            return name
    if task_name == "BrightRetrieval" and "BrightRetrieval" in templates:
        return "BrightRetrieval"
    return None
