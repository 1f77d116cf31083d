"""The workspace index: tree-sitter chunks, embeddings, an ANN and a lexical index, hybrid search.

Modules, from the object the server holds down (each says which thread it runs on):

- :mod:`.workspace`: :class:`~.workspace.WorkspaceIndex`, the life cycle: one store per
  folder, the index-writer and index-embedder threads, status.
- :mod:`.rules`: what may be read (ignore, secret, size, binary), discovery.
- :mod:`.indexing`: the indexing pass: a folder's store brought in step with its files
  (index-writer thread).
- :mod:`.embedding_loop`: background embedding (index-embedder thread);
  :mod:`.embedding`: the embedding model itself.
- :mod:`.retrieval`: hybrid search, reciprocal rank fusion, cross-file context.
- :mod:`.store`: :class:`~.store.IndexStore`, one folder's index on disk, over
  :mod:`.database` (SQLite schema, connections, damage), :mod:`.rows` (files, chunks,
  vectors), :mod:`.lexical` (words, FTS5, BM25), :mod:`.ann` (hnswlib file and stamp) and
  :mod:`.writer_lock` (which process writes).
- :mod:`.chunking` and :mod:`.syntax`: tree-sitter chunks and definitions (shared with the
  assistant).

Like the rest of the domain code, this package never imports pygls or lsprotocol.
"""
