"""deepseek-lsp: a local-first AI coding assistant served as a Language Server."""

import os as _os

__version__ = "0.1.0"

# llama.cpp's CPU backend in llama-cpp-python's wheels runs each compute graph as an OpenMP
# (libgomp) parallel region, with an OpenMP barrier between two of its nodes (hundreds per
# token). The server has one OpenMP team per model (each model has its own owner thread), so
# with two models loaded libgomp manages more threads than there are cores and cuts the spin
# before a barrier's sleep from ~3 ms to 100 iterations: most barriers then sleep and wake in
# the kernel. Measured on 2 cores (``python bench/two_models_decode.py --libgomp-default``):
# the completion model wrote 24 ms/token before the assistant's model first ran and 29 after;
# 22 and 23 with this setting, which spins 1,000 iterations when oversubscribed and
# keeps libgomp's documented default otherwise (300,000 iterations, ~3 ms, before an idle
# thread sleeps). libgomp reads them when llama.cpp is loaded; a user's own setting wins.
if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
    _os.environ["OMP_WAIT_POLICY"] = "ACTIVE"
    _os.environ["GOMP_SPINCOUNT"] = "300000"
