"""The language server over stdio (pygls 2.x): the LSP layer, thin by rule.

- :mod:`.app`: :func:`.app.create_server` assembles the server: its state and the routes.
- :mod:`.routes`: the one routing table, a line per LSP method and command: its handler and
  where its work runs (event loop, default executor, engine thread, assist threads).
- :mod:`.state`: :class:`.state.DeepseekLanguageServer`, the state the handlers share
  (settings, trust, notices, the index and completion backends, the assistant's host, the
  parse cache).
- :mod:`.protocol`: the one module that touches pygls's private API (typed custom messages,
  cancellation of threaded handlers); tests/test_seams.py checks its names.
- :mod:`.convert`: every conversion between LSP types and the domain's plain dataclasses.
- Feature modules, module-level handlers only: :mod:`.workspace` (life cycle, documents,
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
