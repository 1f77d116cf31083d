"""What the index may read: the one rule (ignore, secret, size, binary), discovery, reading a file.

:class:`IndexRules` decides, in discovery and in every update, which files of the
workspace folders the index reads (and so which may go into a prompt): inside a root,
not in a default-excluded or secret folder, not git-ignored or excluded by the settings,
not a secret name, not too large, not binary. :func:`discover` walks a folder by that
rule; :func:`read_text` reads a file that passed it, or None when it turns out binary.

Threads: everything here may be called from any thread (the index-writer thread during
discovery and updates; the event loop or an executor, e.g. for the chat's current file);
see :class:`IndexRules` for its one shared cache. This module imports nothing from pygls
or lsprotocol.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

import pathspec

DEFAULT_EXCLUDED_DIRS = {
    ".git", ".hg", ".svn", ".bzr", "node_modules", ".venv", "venv", "env", ".env", "__pycache__", ".tox", ".nox",
    ".mypy_cache", ".pytest_cache", ".ruff_cache", "build", "dist", "target", "out", ".next", ".nuxt",
    ".gradle", ".idea", ".vscode", "site-packages", ".eggs", "bower_components", ".terraform", ".cache",
}
# Files that hold secrets are never read, whatever the settings say. Matched case-insensitively
# (lowercase patterns), on the file's name and, for a symlink, on its target's name too.
SECRET_PATTERNS = (".env", ".env.*", "*.env", ".envrc", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore",
                   "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", ".npmrc", ".pypirc", ".netrc", "_netrc",
                   ".pgpass", ".git-credentials", "credentials*", "*.gpg", "*.asc", ".htpasswd", "secrets.*",
                   "*.tfstate", "*.tfstate.*", "service-account*.json", "*.kdbx")
# Folders that hold keys and tokens (never walked into, whatever the settings say; case-insensitive).
SECRET_DIRS = {".ssh", ".gnupg", ".aws", ".kube"}
BINARY_EXTENSIONS = {
    ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".ico", ".webp", ".pdf", ".zip", ".gz", ".tgz", ".bz2", ".xz",
    ".7z", ".rar", ".jar", ".war", ".class", ".so", ".dll", ".dylib", ".exe", ".o", ".a", ".lib", ".pyc",
    ".pyo", ".whl", ".gguf", ".bin", ".safetensors", ".onnx", ".pt", ".pth", ".npy", ".npz", ".sqlite",
    ".db", ".woff", ".woff2", ".ttf", ".otf", ".mp3", ".mp4", ".wav", ".mov", ".avi", ".lock", ".min.js",
}
BINARY_PROBE_BYTES = 8192  # a NUL byte in this many first bytes makes a file binary


@dataclass(frozen=True)
class IndexOptions:
    """What to index (settings ``index.*``)."""

    include: tuple[str, ...] = ()       # extra glob patterns indexed even if ignored
    exclude: tuple[str, ...] = ()       # extra glob patterns never indexed
    max_file_size_kb: int = 512
    embeddings: bool = True
    load_config: str = "auto"           # model.loadConfig for the embedding model (server.engine.load_configs)


def is_secret(name: str) -> bool:
    """True for the name of a file that may hold secrets (case-insensitive: ``.ENV``, ``ID_RSA`` too)."""
    low = name.lower()
    return any(fnmatch.fnmatchcase(low, p) for p in SECRET_PATTERNS)


def is_binary_name(name: str) -> bool:
    low = name.lower()
    return any(low.endswith(ext) for ext in BINARY_EXTENSIONS)


def is_binary_data(data: bytes) -> bool:
    """True when ``data`` (a file's beginning) is not text: a NUL byte in its first BINARY_PROBE_BYTES."""
    return b"\x00" in data[:BINARY_PROBE_BYTES]


class IndexRules:
    """The one rule for what the index may read, used by discovery and by every update.

    A file is indexable when:

    - its real path (symlinks resolved) lies inside a workspace root; the path the index
      knows it by is the path with its folders' symlinks resolved and its own name kept
      (discovery does not follow symlinked folders, so that is the path it finds);
    - no folder between the root and it is a default-excluded folder (``.git``,
      ``node_modules``, ``*.egg-info``...) or a secret folder (``.ssh``...);
    - it is not git-ignored: the ``.gitignore`` of every folder from the root down, the
      deepest one that decides winning (``!negations`` included), and a file in an ignored
      folder stays ignored, as in git;
    - ``index.exclude`` does not match it, unless ``index.include`` does (which also rescues
      a git-ignored file, not a default-excluded folder, a secret or a binary file);
    - its name is not a secret name (:func:`is_secret`, case-insensitive);
    - for a symlink: its target passes all of the above too, where it lies;
    - its size is between 1 byte and ``index.maxFileSizeKb``;
    - it is not binary: neither by extension nor by content (a NUL byte in its first 8 KiB).

    Threads: every method may be called from any thread (the index-writer thread during
    discovery and updates; the event loop or an executor, e.g. for the chat's current
    file). The only shared state is the cache of parsed ``.gitignore`` files, one per
    folder, behind a lock. Each entry is checked against its file's (mtime, size) at
    every use, and :meth:`forget` drops one at once, so an edited ``.gitignore`` counts
    from the next check. A check costs a few ``stat`` calls (one per folder from the root
    down) and reading the file's first 8 KiB.
    """

    def __init__(self, roots: list[Path], options: IndexOptions):
        self.roots = [Path(os.path.realpath(r)) for r in roots]
        self.options = options
        self._exclude = pathspec.GitIgnoreSpec.from_lines(options.exclude)
        self._include = pathspec.GitIgnoreSpec.from_lines(options.include)
        self._max_bytes = options.max_file_size_kb * 1024
        self._specs: dict[str, tuple[tuple[int, int, int] | None, pathspec.GitIgnoreSpec | None]] = {}
        self._lock = threading.Lock()

    # -- where a path is -------------------------------------------------------------------
    def locations(self, path: Path | str) -> list[tuple[Path, str]]:
        """(root, POSIX path relative to root) for every root that holds ``path`` (its folders'
        symlinks resolved, its own name kept). Empty when no root holds it, or for a root itself."""
        p = os.path.abspath(path)
        real = Path(os.path.realpath(os.path.dirname(p))) / os.path.basename(p)
        out = []
        for root in self.roots:
            try:
                rel = real.relative_to(root).as_posix()
            except ValueError:
                continue
            if rel not in ("", "."):
                out.append((root, rel))
        return out

    # -- .gitignore files ------------------------------------------------------------------
    def _spec(self, root: Path, rel_folder: str, memo: dict | None = None) -> pathspec.GitIgnoreSpec | None:
        """The parsed .gitignore of a folder (None when it has none); cached, checked against its stat.

        ``memo``: one walk's own cache (discovery), so that a folder's .gitignore is looked at once per walk.
        """
        file = os.path.join(root, rel_folder, ".gitignore") if rel_folder else os.path.join(root, ".gitignore")
        if memo is not None and file in memo:
            return memo[file]
        try:
            st = os.stat(file)
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            key = None
        with self._lock:
            cached = self._specs.get(file)
        if cached is not None and cached[0] == key:
            if memo is not None:
                memo[file] = cached[1]
            return cached[1]
        spec = None
        if key is not None:
            try:
                with open(file, encoding="utf-8", errors="replace") as f:
                    spec = pathspec.GitIgnoreSpec.from_lines(f)
            except OSError:
                spec = None
        with self._lock:
            self._specs[file] = (key, spec)
        if memo is not None:
            memo[file] = spec
        return spec

    def forget(self, gitignore: Path | str) -> None:
        """Drop the cached parse of one .gitignore file (it changed); any thread."""
        p = os.path.abspath(gitignore)
        real = os.path.join(os.path.realpath(os.path.dirname(p)), os.path.basename(p))
        with self._lock:
            self._specs.pop(real, None)

    def _ignored(self, root: Path, rel: str, is_dir: bool, memo: dict | None = None) -> bool:
        probe = rel + "/" if is_dir else rel
        if self._include.match_file(probe):
            return False
        if self._exclude.match_file(probe):
            return True
        parts = rel.split("/")[:-1]
        for depth in range(len(parts), -1, -1):  # the deepest .gitignore that has a say wins
            base = "/".join(parts[:depth])
            spec = self._spec(root, base, memo)
            if spec is None:
                continue
            decided = spec.check_file(probe[len(base) + 1:] if base else probe).include
            if decided is not None:
                return decided
        return False

    # -- the checks --------------------------------------------------------------------------
    def folder_allowed(self, root: Path, rel_folder: str, memo: dict | None = None) -> bool:
        """May discovery walk into this folder (relative to root)? Its parents are taken as allowed."""
        name = rel_folder.rsplit("/", 1)[-1]
        if name in DEFAULT_EXCLUDED_DIRS or name.endswith(".egg-info") or name.lower() in SECRET_DIRS:
            return False
        return not self._ignored(root, rel_folder, True, memo)

    def name_allowed(self, root: Path, rel: str, memo: dict | None = None) -> bool:
        """The name checks of a file whose folders are allowed: secret, binary extension, ignored."""
        name = rel.rsplit("/", 1)[-1]
        return not (is_secret(name) or is_binary_name(name) or self._ignored(root, rel, False, memo))

    def path_allowed(self, root: Path, rel: str) -> bool:
        """Every folder from root to the file allowed, and the file's name: no disk access but .gitignore."""
        parts = rel.split("/")
        return (all(self.folder_allowed(root, "/".join(parts[:i])) for i in range(1, len(parts)))
                and self.name_allowed(root, rel))

    def target_allowed(self, root: Path, rel: str) -> bool:
        """For a symlink: its target lies inside a root and passes the path checks there."""
        full = root / rel
        if not os.path.islink(full):
            return True
        where = self.locations(os.path.realpath(full))
        return bool(where) and any(self.path_allowed(r, t) for r, t in where)

    def size_allowed(self, size: int) -> bool:
        return 0 < size <= self._max_bytes

    def check(self, root: Path, rel: str, text: str | None = None) -> os.stat_result | bool | None:
        """The whole rule for ``root / rel``.

        Args:
            text: the editor's unsaved text of the file: its size and content are checked
                instead of the file on disk's (which may not exist yet).

        Returns:
            None when the file may not be indexed; else its stat (read from disk), or True
            (``text`` given).
        """
        if not self.path_allowed(root, rel) or not self.target_allowed(root, rel):
            return None
        if text is not None:
            data = text.encode("utf-8", "replace")
            return True if self.size_allowed(len(data)) and not is_binary_data(data) else None
        full = root / rel
        try:
            st = os.stat(full)
            if not stat.S_ISREG(st.st_mode) or not self.size_allowed(st.st_size):
                return None
            with open(full, "rb") as f:
                head = f.read(BINARY_PROBE_BYTES)
        except OSError:
            return None
        return None if is_binary_data(head) else st

    def indexable(self, path: Path | str, text: str | None = None) -> bool:
        """May the index read ``path`` (its unsaved ``text``, when given)? Any thread; see the class."""
        return any(self.check(root, rel, text) is not None for root, rel in self.locations(path))


def discover(root: Path, options: IndexOptions, rules: IndexRules | None = None,
             under: str = "") -> list[tuple[str, os.stat_result]]:
    """Files of ``root`` worth indexing, as (POSIX path relative to root, stat).

    Applies :class:`IndexRules` (made from ``options`` when not given): folders are pruned
    with :meth:`IndexRules.folder_allowed`, files checked by name, symlink target and size.
    The content check (a NUL byte) is left to the reading of the file (:func:`read_text`,
    when the file is new or changed), so that a start does not read every unchanged file.

    Args:
        under: only this folder (relative to root, POSIX; its parents are checked too).
    """
    rules = rules or IndexRules([root], options)
    root = Path(os.path.realpath(root))
    if under:
        parts = under.split("/")
        if not all(rules.folder_allowed(root, "/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            return []
    out: list[tuple[str, os.stat_result]] = []
    memo: dict = {}
    for folder, dirs, files in os.walk(root / under if under else root):
        rel_folder = os.path.relpath(folder, root).replace(os.sep, "/")
        rel_folder = "" if rel_folder == "." else rel_folder + "/"
        dirs[:] = sorted(d for d in dirs if rules.folder_allowed(root, rel_folder + d, memo))
        for name in sorted(files):
            rel = rel_folder + name
            if not rules.name_allowed(root, rel, memo) or not rules.target_allowed(root, rel):
                continue
            try:
                st = os.stat(os.path.join(folder, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and rules.size_allowed(st.st_size):
                out.append((rel, st))
    return out


def read_text(path: Path) -> str | None:
    """The file as text, or None when it is binary (a NUL byte in its first 8 KiB) or unreadable."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if is_binary_data(data):
        return None
    return data.decode("utf-8", "replace")
