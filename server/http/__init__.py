"""``deepseek-lsp serve``: the web page and the OpenAI-compatible endpoint over HTTP.

- :mod:`.app`: the Starlette application and the uvicorn server (:func:`.app.serve`), the
  limits (body size, header time, connections) and the response headers.
- :mod:`.security`: the guard: token, Host and Origin checks.
- :mod:`.openai`: ``/v1/completions``, ``/v1/chat/completions``, ``/v1/models`` (OpenAI's shapes,
  server-sent events, cancellation when the client goes away).
- :mod:`.page`: the local web page (Jinja2 templates in ``server/templates``, htmx in ``server/static``).
- :mod:`.charts`: the page's SVG charts of local metrics.

Everything here calls the same runtime as the language server (:mod:`server.serving`).
"""
