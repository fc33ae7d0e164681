"""An ir_datasets dataset whose files are not downloaded, on a machine that is offline.

Its one mirror fails as requests does without a network; nothing is ever fetched.
"""

import contextlib
from pathlib import Path

DATASET_ID = "rank1-cli-offline"


def register(cache_dir: Path) -> str:
    import ir_datasets
    from ir_datasets.datasets.base import Dataset
    from ir_datasets.formats import TrecQrels, TsvDocs, TsvQueries
    from ir_datasets.util import Download
    from ir_datasets.util.download import BaseDownload

    class Offline(BaseDownload):
        @contextlib.contextmanager
        def stream(self):
            import requests

            raise requests.exceptions.ConnectionError(
                "HTTPSConnectionPool(host='ir-datasets.example', port=443): Max retries exceeded with url: "
                "/files/topics.tsv (Caused by NameResolutionError: Failed to resolve 'ir-datasets.example')")
            yield  # pragma: no cover

    if DATASET_ID in ir_datasets.registry:
        return DATASET_ID

    def download(name):
        return Download([Offline()], cache_path=str(cache_dir / name))

    ir_datasets.registry.register(DATASET_ID, Dataset(
        TsvDocs(download("docs.tsv"), namespace=DATASET_ID, lang="en"),
        TsvQueries(download("queries.tsv"), namespace=DATASET_ID, lang="en"),
        TrecQrels(download("qrels"), {0: "not relevant", 1: "relevant"})))
    return DATASET_ID
