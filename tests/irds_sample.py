"""Register sample_data/ as a local ir_datasets dataset, so the --dataset path runs offline."""

from pathlib import Path
from typing import NamedTuple

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
DATASET_ID = "rank1-cli-sample"


class TitledDoc(NamedTuple):
    doc_id: str
    title: str
    text: str

    def default_text(self):
        return f"{self.title} {self.text}"


def register(store_dir: Path) -> str:
    """Register the dataset; its docstore index is built in `store_dir` (never in sample_data/)."""
    import ir_datasets
    from ir_datasets.datasets.base import Dataset
    from ir_datasets.formats import JsonlDocs, TrecQrels, TsvQueries
    from ir_datasets.util import LocalDownload

    if DATASET_ID in ir_datasets.registry:
        return DATASET_ID
    docs = JsonlDocs(LocalDownload(SAMPLE / "corpus.jsonl"), doc_cls=TitledDoc,
                     mapping={"doc_id": "doc_id", "title": "title", "text": "text"}, namespace=DATASET_ID, lang="en",
                     docstore_path=str(store_dir / "corpus.pklz4"))
    queries = TsvQueries(LocalDownload(SAMPLE / "queries.tsv"), namespace=DATASET_ID, lang="en")
    qrels = TrecQrels(LocalDownload(SAMPLE / "qrels.txt"), {0: "not relevant", 1: "relevant", 2: "highly relevant"})
    ir_datasets.registry.register(DATASET_ID, Dataset(docs, queries, qrels))
    return DATASET_ID
