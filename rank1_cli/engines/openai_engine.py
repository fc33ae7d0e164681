"""Engine for vLLM servers through their OpenAI-compatible completions API (`--backend openai`).

One or more servers (`vllm serve MODEL` or `python -m vllm.entrypoints.openai.api_server`), all
serving the same model, share the prompts: every server runs `concurrency` requests at a time,
taken from one common queue, so a fast server simply takes more. A request that fails on a
connection error, a timeout or a 5xx is retried with exponential backoff; when a server still
fails it is dropped, and its requests (those it was running and those it would have taken) go
to the servers left. With no server left, the engine raises `ServersUnavailable`, naming every
server and the last error (the rerank pipeline then saves what finished and says how to resume).

Requests ask for exactly what the offline engine computes: greedy decoding, the top-20 raw
logprobs of each generated token, special tokens kept in the text, the stop string left out,
and every sampling default a server might take from the model's generation_config pinned to
the neutral value. Tokens come back as "token_id:N" (vLLM's `return_tokens_as_token_ids`), so
logprobs are keyed by token id exactly as in the offline engine.

The API key is read from the environment variable named by `api_key_env` and sent as a Bearer
token; it never appears in logs, traces or error messages (neither does a password in a URL).
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import InputError, OptionError
from .base import EngineConfig, Generation, GenerationSettings, Prompt, VerdictLogprobs

log = logging.getLogger(__name__)

TOKEN_ID_PREFIX = "token_id:"
# Sampling defaults a server may take from the model's generation_config.json when a request
# leaves them unset (vLLM does); the offline engine never applies them, so every request pins them.
NEUTRAL_SAMPLING = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0,
                    "presence_penalty": 0.0, "frequency_penalty": 0.0, "n": 1}
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
VERDICT_MODES = ("auto", "allowed_token_ids", "logit_bias")


class ServersUnavailable(RuntimeError):
    """Every server failed; the message names them and the last error."""


class RequestRejected(RuntimeError):
    """A server answered a request with an error that retrying cannot fix (4xx, bad JSON)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def redact_url(url: str) -> str:
    """The URL without any user:password part."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def normalize_base_url(url: str) -> str:
    """'http://host:8000', 'http://host:8000/' and 'http://host:8000/v1' all mean the server root."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OptionError(f"{{base_url}} {redact_url(url)!r}: expected http://HOST:PORT (the vLLM server's address)")
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def parse_token(token: str, fallback: Callable[[str], int | None] | None = None) -> int | None:
    """'token_id:1234' -> 1234; any other string through `fallback` (a server that ignored the flag)."""
    if token.startswith(TOKEN_ID_PREFIX):
        try:
            return int(token[len(TOKEN_ID_PREFIX):])
        except ValueError:
            return None
    return fallback(token) if fallback else None


@dataclass(eq=False)
class _Server:
    url: str                        # normalized, may hold credentials (never shown)
    client: Any                     # httpx.Client
    alive: bool = True
    last_error: str | None = None
    requests: int = 0               # requests sent (tries included)
    completed: int = 0              # answers received
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def shown(self) -> str:
        return redact_url(self.url)


@dataclass(frozen=True, slots=True)
class Options:
    """The openai engine's own settings: which vLLM servers, and how hard to drive them."""

    base_urls: tuple[str, ...] = ()
    api_key_env: str = "OPENAI_API_KEY"   # the variable holding the servers' key (never shown)
    concurrency: int = 32                 # requests in flight per server
    served_model: str | None = None       # default: asked from the servers

    def __post_init__(self) -> None:
        if not self.base_urls:
            raise OptionError("{backend:openai} needs at least one {base_url} http://HOST:PORT of a vLLM server")
        for url in self.base_urls:
            normalize_base_url(url)
        if self.concurrency < 1:
            raise OptionError(f"{{concurrency}} must be at least 1, found {self.concurrency}")


def default_dtype() -> str:
    return "auto"           # the servers load the model; the dtype only names the store's records


def create(config: EngineConfig, options: Options) -> "OpenAIEngine":
    return OpenAIEngine(config, options.base_urls, options.api_key_env, options.concurrency, options.served_model)


class OpenAIEngine:
    """Greedy generation on vLLM servers; see the module docstring."""

    name = "openai"

    def __init__(self, config: EngineConfig, base_urls: Sequence[str] | str = (), api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 32, served_model: str | None = None, *, request_timeout: float = 3600.0,
                 connect_timeout: float = 10.0, max_tries: int = 5, backoff: float = 0.5, max_backoff: float = 8.0,
                 verdict_mode: str = "auto", check_tokenizer: bool = True) -> None:
        import httpx

        # httpx logs every request at INFO; a rerank makes thousands.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("httpcore").setLevel(logging.WARNING)
        if isinstance(base_urls, str):
            base_urls = [base_urls]
        urls = list(dict.fromkeys(normalize_base_url(u) for u in base_urls))
        if not urls:
            raise OptionError("{backend:openai} needs at least one {base_url} http://HOST:PORT of a vLLM server")
        if concurrency < 1:
            raise OptionError(f"{{concurrency}} must be at least 1, found {concurrency}")
        if max_tries < 1:
            raise ValueError("max_tries must be at least 1")
        if verdict_mode not in VERDICT_MODES:
            raise ValueError(f"verdict_mode must be one of {', '.join(VERDICT_MODES)}, found {verdict_mode!r}")
        self.config = config
        self.concurrency = concurrency
        self.max_tries = max_tries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.verdict_mode = verdict_mode
        self._api_key_env = api_key_env
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(api_key_env) if api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        timeout = httpx.Timeout(request_timeout, connect=connect_timeout)
        limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2)
        self._servers = [_Server(url, httpx.Client(base_url=url, headers=headers, timeout=timeout, limits=limits,
                                                   trust_env=False))
                         for url in urls]
        self._tokenizer = None
        self._string_ids: dict[str, int] | None = None
        self._stop = threading.Event()
        try:
            self.served_model = self._discover_model(served_model)
            if check_tokenizer:
                self._check_tokenizer()
        except BaseException:
            self.close()
            raise

    # --- setup ---------------------------------------------------------------------------------

    def _discover_model(self, wanted: str | None) -> str:
        """The model every reachable server serves (GET /v1/models); unreachable servers are dropped."""
        import httpx

        served: dict[str, list[str]] = {}
        for server in self._servers:
            try:
                response = server.client.get("/v1/models", timeout=30.0)
            except httpx.HTTPError as exc:
                server.alive = False
                server.last_error = _describe(exc)
                if len(self._servers) > 1:
                    log.warning("vLLM server %s does not answer (%s); going on without it",
                                server.shown, server.last_error)
                continue
            if response.status_code in (401, 403):
                raise InputError(self._auth_message(server, response.status_code))
            if response.status_code == 404 and wanted:
                continue                                   # not vLLM, but told which model to ask for
            if response.status_code != 200:
                server.alive = False
                server.last_error = f"HTTP {response.status_code} on GET /v1/models"
                log.warning("vLLM server %s answered %s; going on without it", server.shown, server.last_error)
                continue
            try:
                data = response.json()["data"]
                models = [entry["id"] for entry in data]
                context = {entry["id"]: entry.get("max_model_len") for entry in data}
            except (ValueError, KeyError, TypeError):
                raise OptionError(f"{{base_url}} {server.shown}: GET /v1/models did not answer like an "
                                 "OpenAI-compatible server") from None
            if not models:
                raise OptionError(f"{{base_url}} {server.shown}: the server serves no model")
            if wanted and wanted not in models:
                raise OptionError(f"{{base_url}} {server.shown} does not serve {wanted!r}; it serves {', '.join(models)}")
            served[server.url] = models
            self._check_context(server, context)
        alive = [s for s in self._servers if s.alive]
        if not alive:
            raise InputError("no vLLM server answered: " + self._server_errors()
                             + ". Start them first (python -m vllm.entrypoints.openai.api_server --model ...), "
                               "or check --base-url.")
        if wanted:
            return wanted
        first = served[alive[0].url][0]
        others = {url: models for url, models in served.items() if first not in models}
        if others:
            detail = "; ".join(f"{redact_url(u)} serves {', '.join(m)}" for u, m in others.items())
            raise InputError(f"the servers serve different models: {alive[0].shown} serves {first}; {detail}")
        return first

    def _check_tokenizer(self) -> None:
        """The prompts are cut and the verdict tokens found with --model's tokenizer: the servers must
        tokenize the same way (vLLM's POST /tokenize; servers without it are trusted)."""
        import httpx

        probe = "Passage: ocean tides\n<think>\nThe query asks.\n</think> true</think> false"
        try:
            local = list(self.tokenizer(probe, add_special_tokens=False)["input_ids"])
        except Exception:
            return
        for server in self._servers:
            if not server.alive:
                continue
            try:
                response = server.client.post("/tokenize", json={"model": self.served_model, "prompt": probe,
                                                                  "add_special_tokens": False}, timeout=30.0)
                remote = response.json().get("tokens") if response.status_code == 200 else None
            except (httpx.HTTPError, ValueError, AttributeError):
                continue
            if isinstance(remote, list) and remote != local:
                raise OptionError(f"{{base_url}} {server.shown} serves {self.served_model!r}, whose tokenizer differs "
                                 f"from that of --model {self.config.model}: give --model the model the servers serve")

    def _check_context(self, server: _Server, context: dict[str, int | None]) -> None:
        lengths = [n for n in context.values() if isinstance(n, int)]
        if lengths and min(lengths) < self.config.max_model_len:
            raise OptionError(f"{{base_url}} {server.shown} serves a context of {min(lengths)} tokens, less than "
                             f"--max-model-len {self.config.max_model_len}: pass --max-model-len {min(lengths)} "
                             "(prompts are cut to fit it) or start the server with a larger --max-model-len")

    def _auth_message(self, server: _Server, status: int) -> str:
        if os.environ.get(self._api_key_env or ""):
            return (f"--base-url {server.shown} refused the API key from ${self._api_key_env} (HTTP {status})")
        return (f"--base-url {server.shown} needs an API key (HTTP {status}): put it in the environment "
                f"variable {self._api_key_env or 'OPENAI_API_KEY'} (or name another with --api-key-env)")

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.config.model)
        return self._tokenizer

    @property
    def servers(self) -> list[str]:
        """The servers' addresses (credentials removed) and whether each is still in use."""
        return [f"{s.shown} ({'up' if s.alive else 'down: ' + (s.last_error or '?')})" for s in self._servers]

    # --- the engine interface ------------------------------------------------------------------

    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> Iterator[tuple[int, Generation]]:
        base = {"max_tokens": settings.max_tokens, "logprobs": settings.logprobs, "stop": list(settings.stop)}
        payloads = [self._payload(prompt, **base) for prompt in prompts]
        for index, response in self._dispatch(payloads):
            yield index, self._generation(response)

    def force_verdict(self, prompts: Sequence[str], true_id: int, false_id: int) -> list[VerdictLogprobs]:
        if not prompts:
            return []
        found: list[list[float | None]] = [[None, None] for _ in prompts]
        todo = list(range(len(prompts)))
        if self.verdict_mode == "auto":
            # One request decides whether the servers honour allowed_token_ids (vLLM does); a server
            # that rejects it, or ignores it and picks another token, gets logit_bias instead.
            first = self._verdict_payload(prompts[0], (true_id, false_id), "allowed_token_ids")
            try:
                [(_, response)] = list(self._dispatch([first]))
            except RequestRejected as exc:
                log.warning("the server rejected allowed_token_ids (%s); forcing verdicts with logit_bias", exc)
                self.verdict_mode = "logit_bias"
            else:
                if self._chosen_token(response) in (true_id, false_id):
                    self.verdict_mode = "allowed_token_ids"
                    found[0] = self._token_logprobs(response, (true_id, false_id))
                    todo = todo[1:]
                else:
                    log.warning("the server ignored allowed_token_ids; forcing verdicts with logit_bias")
                    self.verdict_mode = "logit_bias"
        payloads = [self._verdict_payload(prompts[i], (true_id, false_id), self.verdict_mode) for i in todo]
        for j, response in self._dispatch(payloads):
            found[todo[j]] = self._token_logprobs(response, (true_id, false_id))
        # The token not chosen can fall outside the top 20 (vLLM reports raw, unrestricted
        # logprobs); forcing that token alone returns its own raw logprob, exactly.
        for token_id, slot in ((true_id, 0), (false_id, 1)):
            missing = [i for i, lps in enumerate(found) if lps[slot] is None]
            if not missing:
                continue
            payloads = [self._verdict_payload(prompts[i], (token_id,), self.verdict_mode, logprobs=1) for i in missing]
            for j, response in self._dispatch(payloads):
                found[missing[j]][slot] = self._token_logprobs(response, (token_id,))[0]
        return [VerdictLogprobs(lt, lf) for lt, lf in found]

    def close(self) -> None:
        self._stop.set()
        for server in getattr(self, "_servers", []):
            try:
                server.client.close()
            except Exception:
                pass

    # --- requests ------------------------------------------------------------------------------

    def _payload(self, prompt: Prompt, **fields: Any) -> dict[str, Any]:
        # Token ids go as a list of ints, which the completions API takes as the prompt's tokens.
        return {"model": getattr(self, "served_model", None),
                "prompt": prompt if isinstance(prompt, str) else list(prompt), **NEUTRAL_SAMPLING,
                "skip_special_tokens": False, "include_stop_str_in_output": False,
                "return_tokens_as_token_ids": True, **fields}

    def _verdict_payload(self, prompt: str, token_ids: tuple[int, ...], mode: str, logprobs: int = 20) -> dict[str, Any]:
        payload = self._payload(prompt, max_tokens=1, logprobs=logprobs)
        if mode == "logit_bias":
            # The same bias on both tokens leaves their logprob difference (so the score) unchanged
            # even on a server that reports processed rather than raw logprobs.
            payload["logit_bias"] = {str(t): 100.0 for t in token_ids}
        else:
            payload["allowed_token_ids"] = list(token_ids)
        return payload

    def _dispatch(self, payloads: list[dict[str, Any]]) -> Iterator[tuple[int, dict[str, Any]]]:
        """POST every payload to /v1/completions over the live servers; yield (index, JSON) as each
        answers. Raises ServersUnavailable when every server is down, RequestRejected on a 4xx."""
        if not payloads:
            return
        self._revive()
        servers = [s for s in self._servers if s.alive]
        if not servers:
            raise ServersUnavailable(self._all_down_message())
        work: queue.Queue[int] = queue.Queue()
        for index in range(len(payloads)):
            work.put(index)
        results: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
        done = threading.Event()

        def worker(server: _Server) -> None:
            while not done.is_set() and not self._stop.is_set() and server.alive:
                try:
                    index = work.get(timeout=0.05)
                except queue.Empty:
                    continue
                try:
                    response = self._post(server, payloads[index], done)
                except _ServerDown:
                    work.put(index)          # to the servers left
                    return
                except BaseException as exc:  # a rejected request, a bad answer: the run stops
                    results.put(("error", index, exc))
                    return
                if response is None:          # stopped while retrying
                    return
                server.completed += 1
                results.put(("ok", index, response))

        threads = [threading.Thread(target=worker, args=(server,), daemon=True, name=f"rank1-openai-{n}-{k}")
                   for n, server in enumerate(servers) for k in range(min(self.concurrency, len(payloads)))]
        for thread in threads:
            thread.start()
        received = 0
        try:
            while received < len(payloads):
                try:
                    kind, index, value = results.get(timeout=0.2)
                except queue.Empty:
                    if not any(s.alive for s in servers):
                        raise ServersUnavailable(self._all_down_message()) from None
                    if not any(t.is_alive() for t in threads):
                        raise ServersUnavailable(self._all_down_message()) from None
                    continue
                if kind == "error":
                    raise value
                received += 1
                yield index, value
        finally:
            done.set()

    def _post(self, server: _Server, payload: dict[str, Any], done: threading.Event) -> dict[str, Any] | None:
        """One request with retries; _ServerDown when the server keeps failing (it is then marked down)."""
        import httpx

        last = "no attempt"
        for attempt in range(self.max_tries):
            if attempt:
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                if self._wait(delay, done) or not server.alive:
                    if not server.alive:
                        raise _ServerDown()
                    return None
            server.requests += 1
            try:
                response = server.client.post("/v1/completions", json=payload)
            except httpx.TransportError as exc:       # connection refused/reset, timeouts
                last = _describe(exc)
                continue
            if response.status_code == 200:
                try:
                    data = response.json()
                    finish = data["choices"][0].get("finish_reason")
                except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                    raise RequestRejected(f"{server.shown}: /v1/completions answered 200 without a completion: "
                                          f"{response.text[:200]!r}") from None
                if finish == "abort":                 # the server gave up on it (shutting down): not an answer
                    last = "request aborted by the server"
                    continue
                return data
            if response.status_code in RETRY_STATUS:
                last = f"HTTP {response.status_code}: {_error_text(response)}"
                continue
            if response.status_code in (401, 403):
                raise RequestRejected(self._auth_message(server, response.status_code), response.status_code)
            raise RequestRejected(f"{server.shown} rejected a request with HTTP {response.status_code}: "
                                  f"{_error_text(response)}", response.status_code)
        with server.lock:
            if server.alive:
                server.alive = False
                server.last_error = last
                log.warning("vLLM server %s failed %d times (%s); its requests go to the other servers",
                            server.shown, self.max_tries, last)
        raise _ServerDown()

    def _wait(self, seconds: float, done: threading.Event) -> bool:
        """Sleep; True when the dispatch ended meanwhile."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if done.is_set() or self._stop.is_set():
                return True
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))
        return False

    def _revive(self) -> None:
        """Servers dropped earlier get another chance if they answer /health now."""
        import httpx

        for server in self._servers:
            if server.alive:
                continue
            try:
                response = server.client.get("/health", timeout=5.0)
            except httpx.HTTPError:
                continue
            if response.status_code == 200:
                log.info("vLLM server %s answers again", server.shown)
                server.alive = True

    def _server_errors(self) -> str:
        return "; ".join(f"{s.shown} ({s.last_error or 'unknown error'})" for s in self._servers)

    def _all_down_message(self) -> str:
        return f"every vLLM server failed: {self._server_errors()}"

    # --- answers -------------------------------------------------------------------------------

    def _token_id(self, token: str) -> int | None:
        return parse_token(token, self._id_of_string)

    def _id_of_string(self, text: str) -> int | None:
        """Token text -> id, for a server that ignores return_tokens_as_token_ids (first id wins)."""
        if self._string_ids is None:
            tokenizer = self.tokenizer
            ids: dict[str, int] = {}
            for token_id in range(len(tokenizer)):
                ids.setdefault(tokenizer.decode([token_id]), token_id)
            self._string_ids = ids
        return self._string_ids.get(text)

    def _last_logprobs(self, choice: dict[str, Any]) -> dict[int, float] | None:
        logprobs = choice.get("logprobs") or {}
        top = logprobs.get("top_logprobs") or []
        if not top or not top[-1]:
            return None
        last: dict[int, float] = {}
        for token, value in top[-1].items():
            token_id = self._token_id(token)
            if token_id is not None and value is not None:
                last[token_id] = _logprob(value)
        tokens = logprobs.get("tokens") or []
        values = logprobs.get("token_logprobs") or []
        if tokens and values and values[-1] is not None:   # the generated token itself
            token_id = self._token_id(tokens[-1])
            if token_id is not None:
                last.setdefault(token_id, _logprob(values[-1]))
        return last or None

    def _generation(self, response: dict[str, Any]) -> Generation:
        choice = response["choices"][0]
        stop_reason = choice.get("stop_reason")
        usage = response.get("usage") or {}
        output_tokens = usage.get("completion_tokens")
        if output_tokens is None:
            output_tokens = len((choice.get("logprobs") or {}).get("tokens") or [])
        return Generation(
            text=choice.get("text") or "",
            output_tokens=int(output_tokens),
            finish_reason=choice.get("finish_reason") or "length",
            stop_reason=stop_reason if isinstance(stop_reason, str) else None,
            last_logprobs=self._last_logprobs(choice),
        )

    def _chosen_token(self, response: dict[str, Any]) -> int | None:
        tokens = ((response["choices"][0].get("logprobs") or {}).get("tokens")) or []
        return self._token_id(tokens[-1]) if tokens else None

    def _token_logprobs(self, response: dict[str, Any], token_ids: tuple[int, ...]) -> list[float | None]:
        last = self._last_logprobs(response["choices"][0]) or {}
        return [last.get(t) for t in token_ids]


class _ServerDown(Exception):
    """Internal: the server failed every try; the request goes back to the queue."""


def _logprob(value: float) -> float:
    # vLLM clamps -inf to -9999.0 for JSON; give the offline engine's value back.
    value = float(value)
    return -math.inf if value <= -9999.0 else value


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _error_text(response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:300].strip() or response.reason_phrase
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            return str(error.get("message") or error)[:500]
        if isinstance(data.get("message"), str):
            return data["message"][:500]
        return str(error)[:500]
    return str(data)[:500]
