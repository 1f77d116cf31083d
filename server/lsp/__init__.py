"""The language server over stdio (pygls 2.x): the LSP layer, thin by rule.

- :mod:`.app`: :func:`.app.create_server` assembles the server from the feature modules.
- :mod:`.state`: :class:`.state.DeepseekLanguageServer`, the state the features share
  (settings, trust, notices, the index and completion backends).
- :mod:`.protocol`: the one module that touches pygls's private API (typed custom messages,
  cancellation of threaded handlers); tests/test_seams.py checks its names.
- :mod:`.convert`: every conversion between LSP types and the domain's plain dataclasses.
- Feature modules, each a ``register(server)``: :mod:`.workspace` (life cycle, documents,
  settings, trust, status, search), :mod:`.completion` (inline completion and the
  ``textDocument/completion`` fallback), :mod:`.assist` (code actions, hover, explain,
  refactor, write tests, chat).
- Their helpers: :mod:`.backend` (which completion service answers: the local model or a
  remote server), :mod:`.index` (the workspace index's life cycle and progress),
  :mod:`.notices` (diagnostics and messages about resources).

Handlers convert in, call the domain (``server.completion``, ``server.assist``, ``index``),
convert out. Nothing outside this package imports pygls or lsprotocol (tests/test_imports.py).
The contract is docs/PROTOCOL.md.
"""
