"""rank1-cli: reasoning reranking with the rank1 models, from the command line or Python.

    from rank1_cli import Rank1      # see rank1_cli.api
"""

__version__ = "0.1.0"
__all__ = ["Rank1"]


def __getattr__(name: str):
    # Imported on first use, so that `rank1 --help` and `rank1 eval` do not pay for it.
    if name == "Rank1":
        from .api import Rank1

        return Rank1
    raise AttributeError(f"module 'rank1_cli' has no attribute {name!r}")
