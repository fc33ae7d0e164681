"""`rank1 serve`: rank1 as a reranking service, `POST /v1/rerank` as Cohere's and vLLM's rerank APIs
speak it, in front of the same `Rank1` and reasoning store as the command line and Python.

Starlette on uvicorn: the request checks are rank1's own (messages that name the field at fault,
as every rank1 input check does), so FastAPI's pydantic layer would add a second set of messages
and a dependency and nothing else; Starlette is the ASGI toolkit FastAPI itself is built on.

The engine is blocking and owns its model, so it runs in the main thread (vLLM expects that) and
uvicorn serves from a second one. A third thread builds each request's prompts and looks them up
in the store through its own connection: a request the store answers whole is answered at once,
however busy the engine. The others queue their prompts; the main thread takes everything that
arrives within a short window (and everything that queued while the engine was busy) and judges
it in one engine batch, identical prompts once (`Scorer.judge`); every judgement is in the store
before any request is answered.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import json
import logging
import math
import os
import queue
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from typing import Any

from .api import Rank1
from .errors import EngineFailure, InputError, OptionError
from .reasoning.fitting import FittedPrompt
from .reasoning.prompts import dataset_template, dataset_templates, prompt_sha256
from .reasoning.scorer import Judgement, judgement_of
from .reasoning.store import PENDING, Store, StoreError

log = logging.getLogger(__name__)

RERANK_PATHS = ("/v1/rerank", "/rerank", "/v2/rerank")
POLL_SECONDS = 0.2          # how often the engine thread looks up from an empty queue to see if it should stop


@dataclass(frozen=True, slots=True)
class ServeLimits:
    """What one request may ask and how much may wait: the bounds that keep the service's memory
    bounded and every answer timely."""

    max_documents: int = 1000
    max_document_chars: int = 32_000        # also the query's and the instruction's limit
    max_queued_pairs: int = 4096
    batch_window: float = 0.01              # seconds the first request of a batch waits for others
    request_timeout: float = 600.0

    def check(self) -> None:
        for name in ("max_documents", "max_document_chars", "max_queued_pairs"):
            if getattr(self, name) < 1:
                raise OptionError(f"{{{name}}} must be at least 1, found {getattr(self, name)}")
        if self.max_queued_pairs < self.max_documents:
            raise OptionError(f"{{max_queued_pairs}} ({self.max_queued_pairs}) must be at least {{max_documents}} "
                              f"({self.max_documents}), or the largest request allowed could never be queued")
        if not 0 <= self.batch_window <= 10:
            raise OptionError(f"{{batch_window}} must be between 0 and 10 seconds, found {self.batch_window}")
        if not self.request_timeout > 0:
            raise OptionError(f"{{request_timeout}} must be above 0 seconds, found {self.request_timeout}")

    @property
    def max_body_bytes(self) -> int:
        """No valid request is longer: every character of the texts escaped as \\uXXXX, plus room for
        the JSON around them."""
        return 6 * self.max_document_chars * (self.max_documents + 2) + 64 * self.max_documents + 65_536


@dataclass(frozen=True, slots=True)
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key_env: str | None = None
    limits: ServeLimits = field(default_factory=ServeLimits)
    access_log: bool = True


# --- requests and responses (pure) ---------------------------------------------------------

class RequestError(InputError):
    """A request the service refuses: its HTTP status and what is wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class RerankRequest:
    query: str
    documents: list[str]
    top_n: int | None               # None: every document
    return_documents: bool
    return_reasoning: bool
    instruction: str | None
    prompt: str | None              # a dataset prompt name

    def pairs(self) -> list[tuple[str, str, str | None]]:
        return [(self.query, document, self.instruction) for document in self.documents]


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _text(value: Any, name: str, limits: ServeLimits) -> str:
    if not isinstance(value, str):
        raise RequestError(400, f"{name} is {_kind(value)}; it must be a string")
    if not value.strip():
        raise RequestError(400, f"{name} is empty")
    if len(value) > limits.max_document_chars:
        raise RequestError(413, f"{name} has {len(value):,} characters; this server takes at most "
                                f"{limits.max_document_chars:,} (rank1 serve --max-document-chars)")
    return value


def _flag(body: Mapping, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(400, f"{name} is {_kind(value)}; it must be true or false")
    return value


def parse_rerank_request(body: Any, served_model: str, limits: ServeLimits) -> RerankRequest:
    """A rerank request from its decoded JSON body, or a RequestError saying what is wrong (400 for
    a malformed request, 413 for one over the limits). Fields other than these are ignored, as
    clients send their own (rank_fields, max_chunks_per_doc)."""
    if not isinstance(body, dict):
        raise RequestError(400, f"the body is {_kind(body)}; it must be a JSON object with query and documents")
    for name in ("query", "documents"):
        if name not in body:
            raise RequestError(400, f"{name} is missing")
    model = body.get("model")
    if model is not None and model != served_model:
        raise RequestError(400, f"model {model!r} is not served here; this server serves {served_model!r} "
                                "(or leave model out)")
    query = _text(body["query"], "query", limits)
    documents = body["documents"]
    if not isinstance(documents, list):
        raise RequestError(400, f"documents is {_kind(documents)}; it must be an array of strings or {{\"text\": ...}} "
                                "objects")
    if not documents:
        raise RequestError(400, "documents is empty; give at least one document")
    if len(documents) > limits.max_documents:
        raise RequestError(413, f"documents has {len(documents):,} documents; this server takes at most "
                                f"{limits.max_documents:,} a request (rank1 serve --max-documents)")
    texts = []
    for i, document in enumerate(documents):
        if isinstance(document, dict):
            if "text" not in document:
                raise RequestError(400, f"documents[{i}] has no text; a document is a string or {{\"text\": ...}}")
            texts.append(_text(document["text"], f"documents[{i}].text", limits))
        else:
            texts.append(_text(document, f"documents[{i}]", limits))
    top_n = body.get("top_n")
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 0):
        raise RequestError(400, f"top_n is {json.dumps(top_n)}; it must be a whole number, at least 1 (0 or "
                                "null: every document)")
    instruction = body.get("instruction")
    prompt = body.get("prompt")
    if prompt is not None and (not isinstance(prompt, str) or dataset_template(prompt) is None):
        raise RequestError(400, f"prompt {json.dumps(prompt)[:100]} is not a dataset prompt; the dataset prompts: "
                                f"{', '.join(sorted(dataset_templates()))}")
    return RerankRequest(query=query, documents=texts, top_n=top_n or None,
                         return_documents=_flag(body, "return_documents", True),
                         return_reasoning=_flag(body, "return_reasoning", False),
                         instruction=None if instruction is None else _text(instruction, "instruction", limits),
                         prompt=prompt)


def rerank_response(request: RerankRequest, judged: list[tuple[Judgement, FittedPrompt]], served_model: str,
                    request_id: str) -> dict:
    """The answer: results by descending relevance_score (ties in the given order), cut to top_n,
    with rank1's own fields beside Cohere's and vLLM's; usage counts prompt and reasoning tokens."""
    order = sorted(range(len(judged)), key=lambda i: -judged[i][0].score)[:request.top_n]
    results = []
    for i in order:
        judgement, fitted = judged[i]
        result: dict[str, Any] = {"index": i, "relevance_score": judgement.score, "verdict": judgement.verdict,
                                  "completion": judgement.completion, "origin": judgement.origin,
                                  "truncated": fitted.truncated}
        if request.return_reasoning:
            result["reasoning"] = judgement.reasoning
        if request.return_documents:
            result["document"] = {"text": request.documents[i]}
        results.append(result)
    prompt_tokens = sum(fitted.tokens for _, fitted in judged)
    reasoning_tokens = sum(judgement.output_tokens for judgement, _ in judged)
    generated = sum(judgement.output_tokens for judgement, _ in judged if judgement.origin == "engine")
    return {"id": request_id, "model": served_model, "results": results,
            "usage": {"prompt_tokens": prompt_tokens, "reasoning_tokens": reasoning_tokens,
                      "generated_tokens": generated, "total_tokens": prompt_tokens + reasoning_tokens}}


def read_api_key(variable: str | None, environ: Mapping[str, str] = os.environ) -> bytes | None:
    """The key clients must send, from the environment variable named (never from the command line,
    where `ps` would show it)."""
    if variable is None:
        return None
    key = environ.get(variable, "")
    if not key.strip():
        raise OptionError(f"{{api_key_env}} {variable}: that environment variable is not set or is empty")
    return key.encode("utf-8")


def authorized(header: str | None, key: bytes | None) -> bool:
    """Whether an Authorization header carries the key as a Bearer token (compared in constant time)."""
    if key is None:
        return True
    scheme, _, token = (header or "").partition(" ")
    return hmac.compare_digest(token.strip().encode("utf-8"), key) and scheme.lower() == "bearer"


# --- the engine side ------------------------------------------------------------------------

class QueueFull(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__("queue full")
        self.retry_after = retry_after


class ServiceStopping(Exception):
    pass


@dataclass(slots=True)
class _Job:
    fitted: list[FittedPrompt]
    future: concurrent.futures.Future


@dataclass(slots=True)
class ServeStats:
    requests: int = 0               # rerank requests answered 200
    pairs: int = 0                  # their documents
    store_answered: int = 0         # of the requests, those the store answered whole, without waiting
    batches: int = 0                # batches judged (one Scorer.judge each)
    engine_batches: int = 0         # of which the engine had work in (the rest the store answered whole)
    generated: int = 0              # prompts the engine reasoned about (the rest came from the store)
    from_store: int = 0
    busy: int = 0                   # answered 503: the queue was full
    timed_out: int = 0              # answered 504


class Batcher:
    """The queue between the HTTP handlers (any thread) and the engine (the thread that calls run)."""

    def __init__(self, rank1: Rank1, limits: ServeLimits) -> None:
        self.rank1 = rank1
        self.limits = limits
        self.stats = ServeStats()
        self._jobs: queue.Queue[_Job] = queue.Queue()
        self._queued_pairs = 0
        self._lock = threading.Lock()
        self._last_batch_seconds = 1.0
        self._stopping = False

    def submit(self, fitted: list[FittedPrompt]) -> concurrent.futures.Future:
        """Queue a request's prompts; QueueFull when they would take the queue over its bound."""
        with self._lock:
            if self._stopping:
                raise ServiceStopping()
            if self._queued_pairs + len(fitted) > self.limits.max_queued_pairs:
                self.stats.busy += 1
                raise QueueFull(max(1, math.ceil(self._last_batch_seconds)))
            self._queued_pairs += len(fitted)
        job = _Job(fitted, concurrent.futures.Future())
        self._jobs.put(job)
        return job.future

    def answered_from_store(self, pairs: int, distinct: int) -> None:
        with self._lock:
            self.stats.requests += 1
            self.stats.store_answered += 1
            self.stats.pairs += pairs
            self.stats.from_store += distinct

    def count(self, name: str) -> None:
        with self._lock:
            setattr(self.stats, name, getattr(self.stats, name) + 1)

    def snapshot(self) -> dict:
        with self._lock:
            return {**asdict(self.stats), "queued_pairs": self._queued_pairs}

    def _take(self, timeout: float) -> _Job | None:
        try:
            job = self._jobs.get(timeout=timeout)
        except queue.Empty:
            return None
        with self._lock:
            self._queued_pairs -= len(job.fitted)
        return job

    def run(self, keep_going: Callable[[], bool]) -> None:
        """Judge batches until keep_going() is false; then refuse what is still queued."""
        try:
            while keep_going():
                first = self._take(POLL_SECONDS)
                if first is None:
                    continue
                batch = [first]
                pairs = len(first.fitted)
                deadline = time.monotonic() + self.limits.batch_window
                # past the deadline, what is queued already still joins; a steady flood cannot grow a batch
                # beyond the queue's bound
                while pairs < self.limits.max_queued_pairs and (
                        job := self._take(max(0.0, deadline - time.monotonic()))) is not None:
                    batch.append(job)
                    pairs += len(job.fitted)
                self.judge(batch)
        finally:
            with self._lock:
                self._stopping = True
            while (job := self._take(0)) is not None:
                job.future.set_exception(ServiceStopping())

    def judge(self, batch: list[_Job]) -> None:
        """Every prompt of the batch's requests in one engine batch, each request's judgements handed back."""
        started = time.monotonic()
        # a request that timed out while queued is left out
        running = [(job, job.fitted) for job in batch if job.future.set_running_or_notify_cancel()]
        if not running:
            return
        stats = self.rank1.scorer.stats
        generated_before, repaired_before, from_store_before = stats.generated, stats.repaired, stats.from_store
        try:
            judgements = self.rank1.judge([fit.prompt for _, fitted in running for fit in fitted])
        except Exception as exc:        # this batch's requests fail (500) and the next batch is judged
            log.exception("rank1 serve: a batch of %d requests failed", len(running))
            for job, _ in running:
                job.future.set_exception(exc)
            return
        except BaseException:
            for job, _ in running:
                job.future.set_exception(ServiceStopping())
            raise
        finally:
            self._last_batch_seconds = time.monotonic() - started
        with self._lock:
            self.stats.batches += 1
            self.stats.engine_batches += stats.generated > generated_before or stats.repaired > repaired_before
            self.stats.generated += stats.generated - generated_before
            self.stats.from_store += stats.from_store - from_store_before
            self.stats.requests += len(running)
            self.stats.pairs += sum(len(fitted) for _, fitted in running)
        start = 0
        for job, fitted in running:
            job.future.set_result(judgements[start:start + len(fitted)])
            start += len(fitted)


class Prompter:
    """Builds each request's prompts and answers from the store the requests it holds whole, in
    one thread of its own (the tokenizer is not to be used from two threads at once, nor an
    SQLite connection outside the thread that opened it), so that such requests never wait for
    the engine."""

    def __init__(self, rank1: Rank1) -> None:
        self.rank1 = rank1
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="rank1-serve-prompts")
        self._store: Store | None = None

    def prepare(self, request: RerankRequest) -> tuple[list[FittedPrompt], list[Judgement] | None]:
        """(the request's prompts, their judgements if the store holds them all, else None)."""
        try:
            fitted = self.rank1.prompts_for(request.pairs(), prompt=request.prompt)
        except InputError as exc:
            raise RequestError(400, str(exc)) from None
        if self.rank1.store is None:
            return fitted, None
        shas = [prompt_sha256(fit.prompt) for fit in fitted]
        try:
            if self._store is None:
                self._store = Store(self.rank1.store.path, create=False, write=False)
            stored = self._store.get_many(self.rank1.scorer.key, shas)
        except StoreError as exc:       # the engine's own look-up, through the main connection, decides then
            log.warning("rank1 serve: store look-up: %s", exc)
            return fitted, None
        if any(sha not in stored or stored[sha].completion == PENDING for sha in shas):
            return fitted, None
        return fitted, [judgement_of(stored[sha], "store") for sha in shas]

    async def __call__(self, request: RerankRequest):
        return await asyncio.get_running_loop().run_in_executor(self._thread, self.prepare, request)

    def close(self) -> None:
        def close_store() -> None:
            if self._store is not None:
                self._store.close()

        self._thread.submit(close_store)
        self._thread.shutdown(wait=True)


# --- HTTP -----------------------------------------------------------------------------------

def error_response(status: int, message: str, headers: Mapping[str, str] | None = None):
    from starlette.responses import JSONResponse

    return JSONResponse({"object": "error", "message": message, "type": HTTPStatus(status).phrase, "code": status},
                        status_code=status, headers=headers)


async def _read_json(request, limit: int) -> Any:
    """The body decoded, read no further than `limit` bytes."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(413, f"the body is over {limit:,} bytes, more than any request within this server's "
                                    "limits (--max-documents, --max-document-chars)")
    if not body:
        raise RequestError(400, "the body is empty; send a JSON object with query and documents")
    try:
        return json.loads(body)
    except ValueError as exc:       # not UTF-8, not JSON, or a number of over 4300 digits
        raise RequestError(400, f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise RequestError(400, "the body is not valid JSON: nested too deeply") from None


def make_app(batcher: Batcher, prompter: Prompter, served_model: str, api_key: bytes | None):
    """The Starlette application: /health, /v1/models and the rerank routes."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    limits = batcher.limits

    def refused(request) -> Any:
        if authorized(request.headers.get("authorization"), api_key):
            return None
        return error_response(401, "a missing or wrong API key: send it as 'Authorization: Bearer KEY'",
                              {"WWW-Authenticate": "Bearer"})

    async def health(request):
        return JSONResponse({"status": "ok", "model": served_model, **batcher.snapshot()})

    async def models(request):
        if (answer := refused(request)) is not None:
            return answer
        return JSONResponse({"object": "list", "data": [{"id": served_model, "object": "model",
                                                         "owned_by": "rank1-cli"}]})

    async def rerank(request):
        if (answer := refused(request)) is not None:
            return answer
        try:
            parsed = parse_rerank_request(await _read_json(request, limits.max_body_bytes), served_model, limits)
            fitted, stored = await prompter(parsed)
            if stored is not None:
                batcher.answered_from_store(len(fitted), len({fit.prompt for fit in fitted}))
                return JSONResponse(rerank_response(parsed, list(zip(stored, fitted)), served_model,
                                                    f"rerank-{uuid.uuid4().hex}"))
            future = batcher.submit(fitted)
        except RequestError as exc:
            return error_response(exc.status, str(exc))
        except QueueFull as exc:
            return error_response(503, f"busy: this request's documents would take the queue over its "
                                       f"{limits.max_queued_pairs:,} (rank1 serve --max-queued-pairs); try again later",
                                  {"Retry-After": str(exc.retry_after)})
        except ServiceStopping:
            return error_response(503, "the server is stopping")
        try:
            judged = await asyncio.wait_for(asyncio.wrap_future(future), limits.request_timeout)
        except asyncio.TimeoutError:
            batcher.count("timed_out")
            return error_response(504, f"not judged within the request timeout ({limits.request_timeout:g} s; "
                                       "rank1 serve --request-timeout); what was judged is kept in the store, so "
                                       "asking again continues from there")
        except ServiceStopping:
            return error_response(503, "the server is stopping")
        except (EngineFailure, StoreError) as exc:
            return error_response(500, f"{'the engine' if isinstance(exc, EngineFailure) else 'the store'} failed: "
                                       f"{exc}")
        return JSONResponse(rerank_response(parsed, list(zip(judged, fitted)), served_model,
                                            f"rerank-{uuid.uuid4().hex}"))

    async def http_error(request, exc: HTTPException):
        return error_response(exc.status_code, exc.detail if isinstance(exc.detail, str) else str(exc.detail))

    async def server_error(request, exc: Exception):
        log.exception("rank1 serve: %s %s failed", request.method, request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}; the server's log has the details")

    routes = [Route("/health", health, methods=["GET"]), Route("/v1/models", models, methods=["GET"])]
    routes += [Route(path, rerank, methods=["POST"]) for path in RERANK_PATHS]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error})


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound now, so that a taken port is reported before the model loads."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OptionError(f"{{host:{host}}}: not an address of this machine ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise OptionError(f"{{host:{host}}} {{port:{port}}}: cannot listen there ({exc.strerror})") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(rank1_options: dict, settings: ServeSettings) -> None:
    """Load the model (`Rank1(**rank1_options)`) and answer requests until SIGINT or SIGTERM.

    Every option is checked, the port bound and the API key read before the model loads."""
    import signal

    import uvicorn

    settings.limits.check()
    api_key = read_api_key(settings.api_key_env)
    sock = listening_socket(settings.host, settings.port)
    served_model = rank1_options["model"]
    try:
        rank1 = Rank1(**rank1_options)
    except BaseException:
        sock.close()
        raise
    batcher = Batcher(rank1, settings.limits)
    prompter = Prompter(rank1)
    config = uvicorn.Config(make_app(batcher, prompter, served_model, api_key), lifespan="off",
                            access_log=settings.access_log, log_level="info" if settings.access_log else "warning",
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="rank1-serve-http", daemon=True)
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        thread.start()
        host, port = sock.getsockname()[:2]
        print(f"rank1 serve: {served_model} on http://{f'[{host}]' if ':' in host else host}:{port} "
              f"(POST /v1/rerank){', API key required' if api_key else ''}; Ctrl-C stops it", file=sys.stderr,
              flush=True)
        batcher.run(keep_going=thread.is_alive)
    except KeyboardInterrupt:
        print("rank1 serve: stopping", file=sys.stderr, flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        prompter.close()
        rank1.close()
