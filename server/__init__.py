"""deepseek-lsp: a local-first AI coding assistant served as a Language Server."""

__version__ = "0.1.0"
