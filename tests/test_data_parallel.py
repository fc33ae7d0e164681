import pytest

from rank1_cli.engines import EngineConfig
from rank1_cli.engines.data_parallel import DataParallelEngine, gpu_slices
from rank1_cli.rerank import execute_rerank
from rank1_cli.traces import TraceJournal

from conftest import TINY_MODEL
from test_vllm_engine import sample_job


def test_replicas_get_consecutive_gpu_groups():
    assert gpu_slices(2, 2, "0,1,2,3") == ["0,1", "2,3"]
    assert gpu_slices(4, 1, "3,2,1,0") == ["3", "2", "1", "0"]
    assert gpu_slices(2, 1, None) == [None, None]
    with pytest.raises(ValueError, match="needs 4 GPUs; 3 are visible"):
        gpu_slices(2, 2, "0,1,2")


@pytest.mark.engine
def test_two_replicas_score_like_one_engine(vllm_engine):
    job = sample_job(top_k=3)
    single = execute_rerank(job, vllm_engine, TraceJournal(None, job.settings))
    engine = DataParallelEngine("vllm", EngineConfig(model=str(TINY_MODEL), dtype="float32", max_model_len=4096,
                                                     gpu_memory_utilization=0.1), replicas=2)
    try:
        parallel = execute_rerank(job, engine, TraceJournal(None, job.settings))
    finally:
        engine.close()
    assert parallel.traces.keys() == single.traces.keys()
    close = sum(abs(parallel.traces[k].score - single.traces[k].score) <= 1e-3 for k in single.traces)
    assert close >= 0.95 * len(single.traces)
