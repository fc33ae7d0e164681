"""rank1-cli: reasoning reranking with the rank1 models, from the command line or Python."""

__version__ = "0.1.0"
