import os
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"
TINY_MODEL = SAMPLE / "tiny-rank1"
RANK1 = [sys.executable, "-m", "rank1_cli.cli"]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TINY_MODEL)


@pytest.fixture(scope="session")
def vllm_engine():
    """One real vLLM engine on tiny-rank1 for the whole test session (start-up takes a minute)."""
    from rank1_cli.engines import EngineConfig, load_engine

    engine = load_engine("vllm", EngineConfig(model=str(TINY_MODEL), dtype="float32", max_model_len=4096,
                                              gpu_memory_utilization=0.1))
    yield engine
    engine.close()
