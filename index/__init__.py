"""The workspace index (tree-sitter chunks, embeddings, ANN and lexical search).

Only the package skeleton exists so far; the index itself is issue #4. Like the rest of
the domain code, this package must never import pygls or lsprotocol.
"""
