"""``python -m server`` does what the ``deepseek-lsp`` command does."""

from .cli import main

raise SystemExit(main())
