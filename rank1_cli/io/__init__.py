"""Reading and writing the files rank1 works with, and nothing about reasoning.

Text and gzip input with line-numbered errors (`text`), TREC runs and qrels (`trec`), MTEB
prediction files (`predictions`), collections of queries and documents from files or
ir_datasets (`collection`), reasoning traces (`traces`), and the guards on every file rank1
writes (`outputs`).

May import: `rank1_cli.errors`, `rank1_cli.console`, `rank1_cli.signals`. Never the store, an
engine, evaluation or a workflow (`lint-imports` checks it).
"""
