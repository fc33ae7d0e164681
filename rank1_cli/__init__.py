"""rank1-cli: reasoning reranking with the rank1 models, from the command line or Python.

    from rank1_cli import Rank1      # see rank1_cli.api

The packages, top to bottom (each imports only those below it; `lint-imports` checks it):

- front ends: `cli` (the `rank1` command), `mteb` (`Rank1MTEB`), `pyterrier` (`Rank1Reranker`);
  below them `serve` (`rank1 serve`, started by `cli`), and `api` (`Rank1`), on which they all stand
- `workflows`: what the commands do (rerank, sweep, plan, shard and merge, report)
- `reasoning`: the rank1 facts and the scoring core (prompts, scoring, models, the store, the scorer)
- `engines` (vLLM, transformers, OpenAI-compatible servers) and `evaluation` (trec_eval's measures,
  significance, comparison, fusion)
- `io`: the files rank1 reads and writes
- `console`, `signals`, `errors`: what every layer may use
"""

__version__ = "0.1.0"
__all__ = ["Rank1"]


def __getattr__(name: str):
    # Imported on first use, so that `rank1 --help` and `rank1 eval` do not pay for it.
    if name == "Rank1":
        from .api import Rank1

        return Rank1
    raise AttributeError(f"module 'rank1_cli' has no attribute {name!r}")
