"""Hugging Face transformers backend: greedy decoding with the same semantics as vLLM's offline
engine as rank1 uses it (temperature 0, stop strings, skip_special_tokens=False, raw logprobs).

How it works:
- prompts are tokenized like vLLM does (`tokenizer(prompt)`, default special tokens), sorted by
  length (longest first, so memory trouble shows at once) and decoded in a batch of up to
  `batch_size` rows with LEFT padding, explicit position ids and a KV cache;
- every step is one forward pass of the whole batch on the last tokens; the next token is the
  argmax of the raw logits; each row's text is detokenized incrementally (the tokenizers
  `DecodeStream`, primed with the prompt, as vLLM does) and checked for stop strings;
- finished rows leave the batch at once (their cache rows are dropped, leading all-padding
  columns trimmed) and, when enough rows are free, waiting prompts are prefilled and merged into
  the running batch (continuous batching), so a few long generations do not leave the batch
  mostly empty;
- only the logits of the current step are kept; log_softmax/top-k are computed for a row only at
  the step that finishes it;
- prefill is chunked along the sequence so one forward pass sees at most about
  `prefill_chunk_tokens` new tokens (bounds the attention-mask and activation memory on long
  prompts); only the last position's logits are computed.

torch and transformers are imported only when the engine is created.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import OptionError
from .base import EngineConfig, Generation, GenerationSettings, Prompt, VerdictLogprobs

_DTYPES = {
    "float16": "float16", "half": "float16", "fp16": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float32": "float32", "float": "float32", "fp32": "float32",
}


@dataclass(frozen=True, slots=True)
class Options:
    """The transformers engine's own settings."""

    batch_size: int = 16                 # sequences generated together
    device: str | None = None            # "cpu", "cuda", "cuda:1" ... (None: cuda if available)
    prefill_chunk_tokens: int = 8192     # new tokens per prefill forward pass at most
    refill: bool = True                  # continuous batching: refill finished rows at once

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise OptionError(f"{{batch_size}} must be at least 1, found {self.batch_size}")
        if self.prefill_chunk_tokens < 1:
            raise OptionError(f"{{prefill_chunk_tokens}} must be at least 1, found {self.prefill_chunk_tokens}")


def default_dtype() -> str:
    from . import paper_dtype

    return paper_dtype()


def create(config: EngineConfig, options: Options) -> "TransformersEngine":
    return TransformersEngine(config, options)


def _check_stop_strings(text: str, new_char_count: int, stop: Sequence[str]) -> tuple[str, int] | None:
    """vLLM's stop-string check on the text after new characters were appended: the stop string
    that completes earliest in the new text wins (ties: list order). Returns (stop string, index
    of its start) or None."""
    if not new_char_count or not stop:
        return None
    best: tuple[str, int] | None = None
    best_end = None
    for s in stop:
        if not s:
            continue
        idx = text.find(s, max(0, len(text) + 1 - new_char_count - len(s)))
        if idx == -1:
            continue
        end = idx + len(s)
        if best_end is None or end < best_end:
            best, best_end = (s, idx), end
    return best


class _Detokenizer:
    """Incremental detokenization of one sequence, special tokens kept (like vLLM)."""

    def __init__(self, tokenizer: Any, prompt_ids: list[int]):
        self._fast = None
        backend = getattr(tokenizer, "_tokenizer", None)
        if backend is not None:
            try:
                from tokenizers.decoders import DecodeStream
            except ImportError:  # very old tokenizers
                DecodeStream = None
            if DecodeStream is not None:
                try:
                    self._stream = DecodeStream(ids=list(prompt_ids), skip_special_tokens=False)
                except TypeError:  # older tokenizers: no prefill; prime with the prompt's tail
                    self._stream = DecodeStream(skip_special_tokens=False)
                    for tid in prompt_ids[-8:]:
                        self._stream.step(backend, tid)
                self._fast = backend
        if self._fast is None:
            # prefix/read offsets over the full id list (vLLM's slow path)
            self._tok = tokenizer
            self._ids = list(prompt_ids)
            self._prefix = max(len(self._ids) - 5, 0)
            self._read = len(self._ids)

    def step(self, token_id: int) -> str:
        if self._fast is not None:
            try:
                return self._stream.step(self._fast, token_id) or ""
            except Exception as exc:  # invalid-prefix edge case: restart the stream (as vLLM does)
                if "Invalid prefix" not in str(exc):
                    raise
                from tokenizers.decoders import DecodeStream

                self._stream = DecodeStream(skip_special_tokens=False)
                return self._stream.step(self._fast, token_id) or ""
        self._ids.append(token_id)
        dec = lambda ids: self._tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)  # noqa: E731
        prefix_text = dec(self._ids[self._prefix:self._read])
        new_text = dec(self._ids[self._prefix:])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return new_text[len(prefix_text):]
        return ""


@dataclass(slots=True)
class _Seq:
    index: int
    prompt_ids: list[int]
    max_new: int
    detok: _Detokenizer
    text: str = ""
    n_out: int = 0
    out_ids: list[int] = field(default_factory=list)
    result: Generation | None = field(default=None)


class TransformersEngine:
    """A transformers causal LM behind the `Engine` interface (see module docstring)."""

    name = "transformers"

    def __init__(self, config: EngineConfig, options: Options = Options()):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.config = config
        self.prefill_chunk_tokens = options.prefill_chunk_tokens
        self.refill = options.refill
        self.batch_size = options.batch_size
        self.max_model_len = int(config.max_model_len)
        device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(device)
        torch.manual_seed(config.seed)

        dtype_name = (config.dtype or "auto").lower()
        if dtype_name == "auto":
            dtype: Any = "auto"
        elif dtype_name in _DTYPES:
            dtype = getattr(torch, _DTYPES[dtype_name])
        else:
            raise ValueError(f"unknown dtype {config.dtype!r}; use auto, float16, bfloat16 or float32")

        self._tokenizer = AutoTokenizer.from_pretrained(config.model)
        try:
            model = AutoModelForCausalLM.from_pretrained(config.model, dtype=dtype)
        except TypeError:  # transformers < 4.56 calls it torch_dtype
            model = AutoModelForCausalLM.from_pretrained(config.model, torch_dtype=dtype)
        if dtype == "auto" and model.dtype not in (torch.float16, torch.bfloat16, torch.float32):
            model = model.to(torch.float32)
        self._model = model.to(self.device).eval()

        # End-of-sequence ids as vLLM collects them: the tokenizer's eos plus generation_config's.
        eos: set[int] = set()
        if self._tokenizer.eos_token_id is not None:
            eos.add(int(self._tokenizer.eos_token_id))
        gen_cfg = getattr(self._model, "generation_config", None)
        gen_eos = getattr(gen_cfg, "eos_token_id", None) if gen_cfg is not None else None
        if isinstance(gen_eos, int):
            eos.add(gen_eos)
        elif gen_eos:
            eos.update(int(t) for t in gen_eos)
        self._eos_ids = frozenset(eos)
        pad = self._tokenizer.pad_token_id
        self._pad_id = int(pad if pad is not None else (min(eos) if eos else 0))

    # ------------------------------------------------------------------ interface

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> Iterator[tuple[int, Generation]]:
        if self._model is None:
            raise RuntimeError("the engine was closed")
        prompt_ids = self._encode_all(prompts)
        seqs = []
        for i, ids in enumerate(prompt_ids):
            # vLLM stops at max_tokens or when prompt + output reaches max_model_len (>= 1 token).
            max_new = max(1, min(int(settings.max_tokens), self.max_model_len - len(ids)))
            seqs.append(_Seq(i, ids, max_new, _Detokenizer(self._tokenizer, ids)))
        seqs.sort(key=lambda s: -len(s.prompt_ids))
        return self._generate(seqs, settings)

    def force_verdict(self, prompts: Sequence[str], true_id: int, false_id: int) -> list[VerdictLogprobs]:
        if self._model is None:
            raise RuntimeError("the engine was closed")
        torch = self._torch
        prompt_ids = self._encode_all(prompts)
        order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))
        out: list[VerdictLogprobs | None] = [None] * len(prompt_ids)
        for start in range(0, len(order), self.batch_size):
            group = order[start:start + self.batch_size]
            with torch.inference_mode():
                logits, _, _ = self._prefill([prompt_ids[i] for i in group], keep_cache=False)
                lp = torch.log_softmax(logits.float(), dim=-1)
                pair = lp[:, [int(true_id), int(false_id)]].tolist()
            for i, (lt, lf) in zip(group, pair):
                out[i] = VerdictLogprobs(float(lt), float(lf))
        return out  # type: ignore[return-value]

    def close(self) -> None:
        model, self._model = getattr(self, "_model", None), None
        if model is not None:
            del model
            gc.collect()
            torch = self._torch
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    # ------------------------------------------------------------------ internals

    def _encode_all(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        out = []
        for i, p in enumerate(prompts):
            ids = list(self._tokenizer(p)["input_ids"]) if isinstance(p, str) else list(p)
            if not ids:
                raise ValueError(f"prompt {i} is empty")
            if len(ids) > self.max_model_len:
                raise ValueError(
                    f"prompt {i} has {len(ids)} tokens, more than max_model_len={self.max_model_len}; "
                    "truncate it or raise max_model_len")
            out.append(ids)
        return out

    @property
    def _input_device(self):
        return self._model.get_input_embeddings().weight.device

    def _new_cache(self):
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self._model.config)
        except TypeError:  # older transformers
            return DynamicCache()

    def _prefill(self, id_lists: list[list[int]], keep_cache: bool = True):
        """Left-padded (chunked) prefill. Returns (last-position logits [B, V], cache, mask [B, L])."""
        torch = self._torch
        dev = self._input_device
        b = len(id_lists)
        length = max(len(x) for x in id_lists)
        ids = torch.full((b, length), self._pad_id, dtype=torch.long)
        mask = torch.zeros((b, length), dtype=torch.long)
        for r, x in enumerate(id_lists):
            ids[r, length - len(x):] = torch.tensor(x, dtype=torch.long)
            mask[r, length - len(x):] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = self._new_cache()
        chunk = max(1, self.prefill_chunk_tokens // b)
        logits = None
        for s in range(0, length, chunk):
            e = min(length, s + chunk)
            out = self._model(
                input_ids=ids[:, s:e], attention_mask=mask[:, :e], position_ids=positions[:, s:e],
                past_key_values=cache, use_cache=True, logits_to_keep=1,
            )
            cache = out.past_key_values
            logits = out.logits[:, -1, :]
        if not keep_cache:
            del cache
            return logits, None, None
        return logits, cache, mask

    # cache surgery (select rows, trim columns, merge batches) on transformers' DynamicCache. Merging
    # and trimming need plain full-attention layers (`layers[i].keys/values`, transformers >= 4.56);
    # other caches (sliding windows, older layouts) only get rows selected and no refill.

    @staticmethod
    def _plain_layers(cache) -> list | None:
        layers = getattr(cache, "layers", None)
        if not layers:
            return None
        for layer in layers:
            if type(layer).__name__ != "DynamicLayer" or not hasattr(layer, "keys"):
                return None
        return list(layers)

    def _merge(self, state, new):
        """Concatenate two decoding states along the batch, left-padding the shorter cache."""
        torch = self._torch
        cache_a, mask_a = state["cache"], state["mask"]
        cache_b, mask_b = new["cache"], new["mask"]
        la, lb = mask_a.shape[1], mask_b.shape[1]
        length = max(la, lb)

        def pad(t, n):
            if n == 0:
                return t
            z = t.new_zeros(t.shape[:-2] + (n, t.shape[-1]))
            return torch.cat([z, t], dim=-2)

        for la_obj, lb_obj in zip(self._plain_layers(cache_a), self._plain_layers(cache_b)):
            la_obj.keys = torch.cat([pad(la_obj.keys, length - la), pad(lb_obj.keys, length - lb)], dim=0)
            la_obj.values = torch.cat([pad(la_obj.values, length - la), pad(lb_obj.values, length - lb)], dim=0)
        mask = torch.cat([
            torch.cat([mask_a.new_zeros((mask_a.shape[0], length - la)), mask_a], dim=1),
            torch.cat([mask_b.new_zeros((mask_b.shape[0], length - lb)), mask_b], dim=1),
        ], dim=0)
        return {
            "cache": cache_a, "mask": mask,
            "pos": torch.cat([state["pos"], new["pos"]]), "last": torch.cat([state["last"], new["last"]]),
            "seqs": state["seqs"] + new["seqs"],
        }

    def _select(self, state, keep: list[int]):
        """Keep only the given rows; drop leading columns that are padding in every kept row."""
        torch = self._torch
        dev = state["mask"].device
        idx = torch.tensor(keep, dtype=torch.long, device=dev)
        mask = state["mask"].index_select(0, idx)
        cache = state["cache"]
        layers = self._plain_layers(cache)
        if layers is None:
            cache.batch_select_indices(idx)
        else:
            real = mask.any(dim=0).nonzero()
            first = int(real[0]) if real.numel() else 0
            if first:
                mask = mask[:, first:]
            for layer in layers:
                if layer.keys is None or not layer.keys.numel():
                    continue
                k, v = layer.keys.index_select(0, idx), layer.values.index_select(0, idx)
                if first:
                    k, v = k[..., first:, :].contiguous(), v[..., first:, :].contiguous()
                layer.keys, layer.values = k, v
        return {
            "cache": cache, "mask": mask,
            "pos": state["pos"].index_select(0, idx), "last": state["last"].index_select(0, idx),
            "seqs": [state["seqs"][i] for i in keep],
        }

    def _accept(self, seq: _Seq, token: int, settings: GenerationSettings) -> bool:
        """Append one generated token; return True when the sequence is finished (vLLM's rules)."""
        seq.n_out += 1
        seq.out_ids.append(token)
        if token in self._eos_ids:  # EOS: not detokenized, no stop string
            seq.result = Generation(seq.text, seq.n_out, "stop", None, None, tuple(seq.out_ids))
            return True
        piece = seq.detok.step(token)
        seq.text += piece
        hit = _check_stop_strings(seq.text, len(piece), settings.stop)
        if hit is not None:
            stop_str, idx = hit
            seq.result = Generation(seq.text[:idx], seq.n_out, "stop", stop_str, None, tuple(seq.out_ids))
            return True
        if seq.n_out >= seq.max_new:
            seq.result = Generation(seq.text, seq.n_out, "length", None, None, tuple(seq.out_ids))
            return True
        return False

    def _finish_logprobs(self, logits, rows: list[int], tokens: list[int], k: int | None) -> list[dict[int, float] | None]:
        """Raw logprobs (float32 log_softmax) at the current step for the given rows: top k plus
        the generated token."""
        torch = self._torch
        if k is None or k < 0:
            return [None] * len(rows)
        idx = torch.tensor(rows, dtype=torch.long, device=logits.device)
        lp = torch.log_softmax(logits.index_select(0, idx).float(), dim=-1)
        kk = min(int(k), lp.shape[-1])
        if kk:
            top_v, top_i = lp.topk(kk, dim=-1)
            top_v, top_i = top_v.tolist(), top_i.tolist()
        else:
            top_v = top_i = [[] for _ in rows]
        tok_lp = lp.gather(1, torch.tensor(tokens, dtype=torch.long, device=lp.device)[:, None])[:, 0].tolist()
        out = []
        for r in range(len(rows)):
            d = {int(t): float(v) for t, v in zip(top_i[r], top_v[r])}
            d.setdefault(int(tokens[r]), float(tok_lp[r]))
            out.append(d)
        return out

    def _process(self, state, logits, settings) -> tuple[list[tuple[int, Generation]], list[int]]:
        """Greedy next token of every row from `logits`; returns (finished results, rows kept)."""
        nxt = logits.argmax(dim=-1)
        tokens = nxt.tolist()
        state["last"] = nxt
        done_rows, kept = [], []
        for r, (seq, tok) in enumerate(zip(state["seqs"], tokens)):
            (done_rows if self._accept(seq, tok, settings) else kept).append(r)
        results = []
        if done_rows:
            lps = self._finish_logprobs(logits, done_rows, [tokens[r] for r in done_rows], settings.logprobs)
            for r, lp in zip(done_rows, lps):
                seq = state["seqs"][r]
                seq.result.last_logprobs = lp
                results.append((seq.index, seq.result))
        return results, kept

    def _admit(self, state, pending: list[_Seq], settings):
        """Prefill up to the free slots from `pending` and merge them into the running state."""
        free = self.batch_size - (len(state["seqs"]) if state else 0)
        group = [pending.pop(0) for _ in range(min(free, len(pending)))]
        logits, cache, mask = self._prefill([s.prompt_ids for s in group])
        pos = mask.sum(dim=1)  # position of the first generated token
        new = {"cache": cache, "mask": mask, "pos": pos, "last": None, "seqs": group}
        results, kept = self._process(new, logits, settings)
        if len(kept) < len(group):
            new = self._select(new, kept) if kept else None
        if new is None:
            return state, results
        if state is None:
            return new, results
        return self._merge(state, new), results

    def _decode_step(self, state, settings):
        torch = self._torch
        mask = torch.cat([state["mask"], state["mask"].new_ones((state["mask"].shape[0], 1))], dim=1)
        out = self._model(
            input_ids=state["last"][:, None], attention_mask=mask, position_ids=state["pos"][:, None],
            past_key_values=state["cache"], use_cache=True,
        )
        state["cache"] = out.past_key_values
        state["mask"] = mask
        state["pos"] = state["pos"] + 1
        logits = out.logits[:, -1, :]
        results, kept = self._process(state, logits, settings)
        del out, logits
        if len(kept) < len(state["seqs"]):
            state = self._select(state, kept) if kept else None
        return state, results

    def _generate(self, seqs: list[_Seq], settings: GenerationSettings) -> Iterator[tuple[int, Generation]]:
        torch = self._torch
        pending = list(seqs)
        state = None
        refill_min = max(1, self.batch_size // 4)
        can_merge = None
        while pending or state is not None:
            results: list[tuple[int, Generation]] = []
            with torch.inference_mode():
                active = len(state["seqs"]) if state is not None else 0
                if pending and self.refill and state is not None and can_merge is None:
                    can_merge = self._plain_layers(state["cache"]) is not None
                merge_ok = state is None or (self.refill and can_merge)
                if pending and merge_ok and (state is None or self.batch_size - active >= min(refill_min, len(pending))):
                    state, results = self._admit(state, pending, settings)
                if state is not None:
                    state, more = self._decode_step(state, settings)
                    results += more
            yield from results
