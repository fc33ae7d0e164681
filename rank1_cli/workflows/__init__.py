"""What the commands do, as library calls: rerank, sweep, plan (dry runs), shard and merge, report.

Each workflow joins the reasoning core, the engines, evaluation and the file readers into one
job with checked options; the command line (`rank1_cli.cli`) and the Python front ends call
them and only translate their errors.

May import everything below it: `rank1_cli.reasoning`, `rank1_cli.engines`,
`rank1_cli.evaluation`, `rank1_cli.io`, and the ground modules. Never a front end
(`lint-imports` checks it).
"""
