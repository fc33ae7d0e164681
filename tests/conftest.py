import os
import sys
import sys as _sys
import tempfile
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
# Tests never touch the user's reasoning store: commands that name none use this session's own.
os.environ["RANK1_STORE"] = str(Path(tempfile.mkdtemp(prefix="rank1-test-store-")) / "store.sqlite")
os.environ["MTEB_CACHE"] = tempfile.mkdtemp(prefix="rank1-test-mteb-")      # nor MTEB's result cache
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
_sys.path.insert(0, str(Path(__file__).resolve().parent))
SAMPLE = REPO / "sample_data"
TINY_MODEL = Path(os.environ.get("RANK1_TEST_MODEL", SAMPLE / "tiny-rank1"))
RANK1 = [sys.executable, "-m", "rank1_cli.cli"]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TINY_MODEL)


@pytest.fixture(scope="session")
def vllm_engine():
    """One real vLLM engine on tiny-rank1 for the whole test session (start-up takes a minute)."""
    from rank1_cli.engines import EngineConfig, engine_options, load_engine

    engine = load_engine("vllm", EngineConfig(model=str(TINY_MODEL), dtype="float32", max_model_len=4096),
                         engine_options("vllm", gpu_memory_utilization=0.1))
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def single_engine_traces(vllm_engine):
    """The sample rerank (top 20, reasoning 64) on the one session vLLM engine: (score, completion)
    per (qid, docid), what the engines that spread pairs over replicas must reproduce."""
    from commands import TOP_K

    from rank1_cli.io.collection import CollectionSource
    from rank1_cli.workflows.rerank import RerankOptions, prepare_rerank, rerank_with_engine

    prepared = prepare_rerank(str(SAMPLE / "run.bm25.trec"),
                              CollectionSource(corpus=str(SAMPLE / "corpus.jsonl"), queries=str(SAMPLE / "queries.tsv")),
                              RerankOptions(model=str(TINY_MODEL), top_k=TOP_K, dtype="float32", max_model_len=4096,
                                            max_reasoning_tokens=64))
    result = rerank_with_engine(prepared, vllm_engine)
    return {key: (trace.score, trace.completion) for key, trace in result.traces.items()}


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory):
    """sample_data/ registered as a local ir_datasets dataset (docstore built in a temp dir)."""
    import irds_sample

    return irds_sample.register(tmp_path_factory.mktemp("irds"))


# Fixtures that start a real inference engine: a test using one is an `engine` test, whatever its
# module (stand-in servers and scripted engines are not, and run in the fast set).
ENGINE_FIXTURES = {"vllm_engine", "servers", "service", "ray_cluster"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Mark tests that use an engine fixture `engine`, and run every engine test after the fast ones
    (a failure in the fast set shows in seconds, not after the engines' start-up)."""
    for item in items:
        if ENGINE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.engine)
    items.sort(key=lambda item: item.get_closest_marker("engine") is not None)


def table_column(table: str, index: int) -> str:
    """One column of a table as rich prints it, its lines joined: a value folded over lines reads whole."""
    import re

    return "".join(re.split("[│┃]", line)[index].strip() for line in table.splitlines() if re.search("[│┃]", line))
