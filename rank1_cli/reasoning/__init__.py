"""The rank1 facts and the scoring core: prompts in, judgements out, every generation stored.

`prompts` (the exact prompt), `fitting` (how the context is split between prompt and reasoning,
and passages cut to fit), `scoring` (the verdict's score and the repair of unfinished reasoning),
`models` (the rank1 models and a model's exact identity), `store` (the SQLite reasoning store)
and `store_admin` (its import, export, pruning and checks), `scorer` (store first, then the
engine, then the repair pass) and `early_exit` (reasoning budgets that stop early per pair).

May import: `rank1_cli.engines`, `rank1_cli.io`, `rank1_cli.console`, `rank1_cli.signals`,
`rank1_cli.errors`. Never evaluation, a workflow or a front end (`lint-imports` checks it);
`prompts` and `scoring` are pure and import nothing of rank1_cli but `errors` and each other.
"""
