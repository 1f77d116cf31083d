"""llama-cpp-python's OpenAI-compatible server, loading the model the way this machine allows.

``python -m tests.llama_server --model PATH --n_threads N ...`` takes the arguments of
``python -m llama_cpp.server``. That server has no option for llama.cpp's weight
repacking, which crashes on some CPUs (server.engine.loading); this runs it with the load
configuration deepseek-lsp's probe chose for the model on this machine.
"""

from __future__ import annotations

import sys

from llama_cpp.server.__main__ import main as serve

from server.engine import choose_config, model_defaults


def main() -> None:
    model = sys.argv[sys.argv.index("--model") + 1]
    threads = int(sys.argv[sys.argv.index("--n_threads") + 1]) if "--n_threads" in sys.argv else 2
    config = choose_config(model, "generate", threads).config
    if config is None:
        sys.exit("llama.cpp crashes with this model on this machine in every load configuration")
    with model_defaults(config):
        serve()


if __name__ == "__main__":
    main()
