"""`rank1 serve`: the real server (uvicorn in a subprocess on a free loopback port, the transformers
engine on tiny-rank1) called over HTTP as a client would."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from commands import rank1
from conftest import REPO, TINY_MODEL
from test_api import SETTINGS

from rank1_cli import Rank1

KEY = "test-key-1234"
HEADERS = {"Authorization": f"Bearer {KEY}"}
MODEL = str(TINY_MODEL)
ENGINE_ARGS = ["--backend", "transformers", "--device", "cpu", "--dtype", "float32", "--max-model-len", "1024",
               "--max-reasoning-tokens", "48"]
MAX_DOCUMENTS = 40
MAX_CHARS = 2000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`rank1 serve` in a subprocess, answering on 127.0.0.1 once /health does; stopped by stop()."""

    def __init__(self, store, log, *extra):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [sys.executable, "-m", "rank1_cli.cli", "serve", "--model", MODEL, *ENGINE_ARGS,
                   "--store", str(store), "--port", str(self.port), *map(str, extra)]
        with open(log, "w") as out:
            self.proc = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, "RANK1_TEST_KEY": KEY})
        deadline = time.monotonic() + 120
        while True:
            assert self.proc.poll() is None, f"the server exited: {self.output()}"
            assert time.monotonic() < deadline, f"the server did not answer within 120 s: {self.output()}"
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)

    def output(self) -> str:
        return open(self.log).read()

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=10).json()

    def rerank(self, body, path="/v1/rerank", headers=HEADERS, timeout=120):
        content = body if isinstance(body, (str, bytes)) else json.dumps(body)
        return httpx.post(self.url + path, content=content, headers={"Content-Type": "application/json", **headers},
                          timeout=timeout)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("serve") / "store.sqlite"


@pytest.fixture(scope="module")
def service(store, tmp_path_factory):
    server = Server(store, tmp_path_factory.mktemp("log") / "serve.log", "--api-key-env", "RANK1_TEST_KEY",
                    "--max-documents", MAX_DOCUMENTS, "--max-document-chars", MAX_CHARS,
                    "--max-queued-pairs", MAX_DOCUMENTS, "--batch-window", 0.3)
    yield server
    assert server.stop() == 0, server.output()
    assert KEY not in server.output()                   # the key is never logged


QUERY, DOCUMENTS = "what causes the tides", ["The moon's gravity pulls on the oceans.", "Bread needs yeast to rise.",
                                              "Tides rise and fall twice a day."]


@pytest.fixture(scope="module")
def first_answer(service):
    before = service.health()
    answer = service.rerank({"model": MODEL, "query": QUERY, "documents": [DOCUMENTS[0], {"text": DOCUMENTS[1]},
                                                                             DOCUMENTS[2]],
                             "return_reasoning": True})
    assert answer.status_code == 200, answer.text
    return answer.json(), before, service.health()


def test_scores_equal_rank1_score_on_the_same_pairs(first_answer):
    body, before, after = first_answer
    with Rank1(MODEL, store=None, **SETTINGS) as model:
        judged = model.score([(QUERY, document) for document in DOCUMENTS])
    results = body["results"]
    assert [r["index"] for r in results] == sorted(range(3), key=lambda i: -judged[i].score)
    for r in results:
        j = judged[r["index"]]
        assert r["relevance_score"] == pytest.approx(j.score, abs=1e-5)
        assert (r["verdict"], r["completion"], r["reasoning"], r["origin"]) == (j.verdict, j.completion, j.reasoning,
                                                                               "engine")
        assert r["document"] == {"text": DOCUMENTS[r["index"]]}
    assert body["usage"]["generated_tokens"] == sum(j.output_tokens for j in judged) > 0
    assert after["generated"] - before["generated"] == 3 and after["engine_batches"] - before["engine_batches"] == 1


def test_the_second_identical_request_generates_nothing(service, first_answer):
    body, _, after_first = first_answer
    again = service.rerank({"query": QUERY, "documents": DOCUMENTS, "top_n": 2, "return_documents": False})
    assert again.status_code == 200, again.text
    results = again.json()["results"]
    assert [r["index"] for r in results] == [r["index"] for r in body["results"]][:2]
    assert {r["origin"] for r in results} == {"store"} and all("document" not in r and "reasoning" not in r
                                                               for r in results)
    assert again.json()["usage"]["generated_tokens"] == 0
    now = service.health()
    assert now["generated"] == after_first["generated"] and now["engine_batches"] == after_first["engine_batches"]


def test_a_request_the_store_holds_is_answered_while_the_engine_is_busy(service, first_answer):
    # long passages (cut to the context) make the engine's work long however fast the machine
    cold = {"query": "a new question", "documents": [f"unseen passage {n}: " + "the tide rises. " * 110
                                                     for n in range(MAX_DOCUMENTS)]}
    with ThreadPoolExecutor(1) as pool:
        judging = pool.submit(service.rerank, cold)
        time.sleep(0.6)                     # past the batch window: the engine is judging the cold request
        stored = service.rerank({"query": QUERY, "documents": DOCUMENTS})
        assert not judging.done()
        assert judging.result().status_code == 200
    assert stored.status_code == 200 and {r["origin"] for r in stored.json()["results"]} == {"store"}


def test_the_requests_cohere_clients_send_are_answered(service, first_answer):
    """Cohere's v2 client (LangChain's and LlamaIndex's CohereRerank) posts to /v2/rerank with its own
    fields; the v1 client to /v1/rerank with return_documents."""
    best = first_answer[0]["results"][0]["index"]
    v2 = service.rerank({"model": MODEL, "query": QUERY, "documents": DOCUMENTS, "top_n": 1,
                         "max_tokens_per_doc": 4000}, path="/v2/rerank")
    v1 = service.rerank({"model": MODEL, "query": QUERY, "documents": DOCUMENTS, "top_n": 1,
                         "return_documents": True, "max_chunks_per_doc": 10})
    for answer in (v2, v1):
        assert answer.status_code == 200, answer.text
        assert [(r["index"], r["origin"]) for r in answer.json()["results"]] == [(best, "store")]


def test_a_restart_serves_from_the_store(store, first_answer, tmp_path):
    restarted = Server(store, tmp_path / "restart.log")
    try:
        answer = restarted.rerank({"query": QUERY, "documents": DOCUMENTS}, path="/rerank", headers={})
        assert answer.status_code == 200, answer.text
        assert {r["origin"] for r in answer.json()["results"]} == {"store"}
        scores = {r["index"]: r["relevance_score"] for r in first_answer[0]["results"]}
        assert {r["index"]: r["relevance_score"] for r in answer.json()["results"]} == scores
        assert restarted.health()["generated"] == 0
    finally:
        assert restarted.stop() == 0, restarted.output()


def test_a_prompt_and_an_instruction_as_request_fields(service):
    instruction = "Only documents about the moon are relevant."
    answer = service.rerank({"query": QUERY, "documents": DOCUMENTS[:2], "prompt": "scifact",
                             "instruction": instruction})
    assert answer.status_code == 200, answer.text
    with Rank1(MODEL, store=None, **SETTINGS) as model:
        judged = model.score([(QUERY, document, instruction) for document in DOCUMENTS[:2]], prompt="SciFact")
    scores = {r["index"]: r["relevance_score"] for r in answer.json()["results"]}
    assert scores == {i: pytest.approx(j.score, abs=1e-5) for i, j in enumerate(judged)}


def test_concurrent_requests_share_an_engine_batch_and_identical_pairs_are_judged_once(service):
    shared = "Ocean tides follow the moon."
    bodies = [{"query": f"question {i} about tides", "documents": [f"Passage {i} on the sea.", shared]}
              for i in range(4)]
    bodies += [{"query": "question 0 about tides", "documents": [shared]}] * 2      # a pair others ask too
    before = service.health()
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(service.rerank, bodies))
    assert [a.status_code for a in answers] == [200] * len(bodies), [a.text for a in answers]
    after = service.health()
    assert after["generated"] - before["generated"] == 8         # 4 queries x 2 documents; the repeats once
    assert after["engine_batches"] - before["engine_batches"] <= 2 < len(bodies)
    same = [a.json()["results"][0]["relevance_score"] for a in answers[4:]]
    assert same == [r["relevance_score"] for r in answers[0].json()["results"] if r["index"] == 1] * 2


@pytest.mark.engine
def test_a_full_queue_is_answered_503_with_retry_after(store, tmp_path):
    # One sequence at a time: the first request's 40 new documents keep the engine busy for seconds,
    # so the second waits in the queue (full at 40) when the third arrives, however fast the machine.
    busy = Server(store, tmp_path / "busy.log", "--batch-size", 1, "--max-documents", MAX_DOCUMENTS,
                  "--max-queued-pairs", MAX_DOCUMENTS, "--batch-window", 0.3)
    try:
        bodies = [{"query": f"busy {i}", "documents": [f"document {i} {n}" for n in range(MAX_DOCUMENTS)]}
                  for i in range(3)]
        with ThreadPoolExecutor(len(bodies)) as pool:
            judging = pool.submit(busy.rerank, bodies[0], headers={})
            time.sleep(0.6)                     # past the batch window: the engine is judging the first request
            queued = pool.submit(busy.rerank, bodies[1], headers={})
            time.sleep(0.2)
            refused = busy.rerank(bodies[2], headers={})    # the queue holds the second request's documents: full
            answers = [judging.result(), queued.result()]
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        assert refused.status_code == 503 and "busy" in refused.json()["message"], refused.text
        assert int(refused.headers["Retry-After"]) >= 1 and busy.health()["busy"] == 1
    finally:
        assert busy.stop() == 0, busy.output()


LONG = "x" * (MAX_CHARS + 1)
BAD_REQUESTS = [
    ("{not json", 400, "not valid JSON"),
    ("", 400, "body is empty"),
    (b"{\"query\": \"\xff\"}", 400, "not valid JSON"),
    ("[" * 100_000, 400, "not valid JSON: nested too deeply"),
    ('{"query": "q", "documents": ["a"], "top_n": ' + "9" * 5000 + "}", 400, "not valid JSON"),
    ("[1, 2]", 400, "must be a JSON object"),
    ({"documents": ["a"]}, 400, "query is missing"),
    ({"query": "q"}, 400, "documents is missing"),
    ({"query": "q", "documents": "just one"}, 400, "documents is a string"),
    ({"query": "q", "documents": []}, 400, "documents is empty"),
    ({"query": "q", "documents": ["a", "  "]}, 400, "documents[1] is empty"),
    ({"query": "q", "documents": ["a", 7]}, 400, "documents[1] is a number"),
    ({"query": "q", "documents": [{"title": "t"}]}, 400, "documents[0] has no text"),
    ({"query": "", "documents": ["a"]}, 400, "query is empty"),
    ({"query": "q", "documents": ["a"] * (MAX_DOCUMENTS + 1)}, 413, f"at most {MAX_DOCUMENTS}"),
    ({"query": "q", "documents": ["a", LONG]}, 413, "documents[1] has 2,001 characters"),
    ({"query": LONG, "documents": ["a"]}, 413, "query has 2,001 characters"),
    ({"query": "q", "documents": ["a"], "top_n": -1}, 400, "top_n is -1"),
    ({"query": "q", "documents": ["a"], "top_n": "3"}, 400, "top_n is \"3\""),
    ({"query": "q", "documents": ["a"], "return_documents": "yes"}, 400, "return_documents is a string"),
    ({"query": "q", "documents": ["a"], "model": "rerank-english-v3.0"}, 400, "'rerank-english-v3.0' is not served"),
    ({"query": "q", "documents": ["a"], "prompt": "/etc/passwd"}, 400, "not a dataset prompt"),
    ({"query": "q", "documents": ["a"], "instruction": 3}, 400, "instruction is a number"),
    ("x" * (6 * MAX_CHARS * (MAX_DOCUMENTS + 2) + 64 * MAX_DOCUMENTS + 65_537), 413, "the body is over"),
]


@pytest.mark.parametrize("body, status, message", BAD_REQUESTS, ids=[f"{s}-{m}" for _, s, m in BAD_REQUESTS])
def test_bad_input_is_answered_4xx_with_a_json_message(service, body, status, message):
    answer = service.rerank(body)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["message"] and answer.json()["code"] == status


def test_unknown_paths_and_methods_are_answered_in_json(service):
    assert httpx.get(f"{service.url}/v1/nothing", headers=HEADERS).json()["code"] == 404
    assert httpx.get(f"{service.url}/v1/rerank", headers=HEADERS).json()["code"] == 405


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY},
                                     {"Authorization": f"Basic {KEY}"}])
def test_a_missing_or_wrong_api_key_is_401(service, headers):
    for answer in (service.rerank({"query": "q", "documents": ["a"]}, headers=headers),
                   httpx.get(f"{service.url}/v1/models", headers=headers)):
        assert answer.status_code == 401 and "API key" in answer.json()["message"]
    assert httpx.get(f"{service.url}/health").status_code == 200               # a load balancer's probe needs none


def test_models_lists_the_served_model(service):
    assert [m["id"] for m in httpx.get(f"{service.url}/v1/models", headers=HEADERS).json()["data"]] == [MODEL]


@pytest.mark.engine
def test_a_request_over_its_timeout_is_answered_504(store, tmp_path):
    # The request waits out a 2 s batch window for others to join, far past its 0.05 s timeout.
    slow = Server(store, tmp_path / "timeout.log", "--request-timeout", 0.05, "--batch-window", 2)
    try:
        answer = slow.rerank({"query": "a slow question", "documents": [f"new document {n}" for n in range(30)]},
                             headers={})
        assert answer.status_code == 504 and "request timeout" in answer.json()["message"], answer.text
    finally:
        assert slow.stop() == 0, slow.output()


def test_bad_options_exit_2_before_the_model_loads(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc, _ = rank1("serve", "--model", MODEL, *ENGINE_ARGS, "--port", port, "--no-store")
    assert proc.returncode == 2 and "cannot listen there" in proc.stderr and "--port" in proc.stderr, proc.stderr
    env = {k: v for k, v in os.environ.items() if k != "RANK1_UNSET_KEY"}
    proc, _ = rank1("serve", "--model", MODEL, *ENGINE_ARGS, "--port", free_port(), "--api-key-env",
                    "RANK1_UNSET_KEY", "--no-store", env=env)
    assert proc.returncode == 2 and "--api-key-env RANK1_UNSET_KEY" in proc.stderr, proc.stderr
    proc, _ = rank1("serve", "--model", MODEL, *ENGINE_ARGS, "--max-documents", 10, "--max-queued-pairs", 5)
    assert proc.returncode == 2 and "--max-queued-pairs" in proc.stderr and "Traceback" not in proc.stderr
    proc, _ = rank1("serve", "--model", MODEL, *ENGINE_ARGS, "--openai-api-key-env", "X")     # the openai backend's
    assert proc.returncode == 2 and "no option --openai-api-key-env" in proc.stderr, proc.stderr
