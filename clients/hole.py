"""The test document both editor clients' tests use: platformdirs' unix.py (a file this
project did not write) with the return value of ``user_music_dir`` cut out after ``return ``.

    python clients/hole.py OUT.py    -> writes OUT.py, prints "LINE COL" (line 1-based, column 0-based)
    python clients/hole.py OUT.py --body NAME
        -> the same file with the body of method NAME cut out instead; LINE COL is the end of its ``def`` line

Run it with the server's own Python (platformdirs is one of its dependencies).
"""

import pathlib
import sys

import platformdirs

MARKER = '        return self._user_media_dir("XDG_MUSIC_DIR"'
KEEP = "        return "

text = pathlib.Path(platformdirs.__file__).with_name("unix.py").read_text()
if sys.argv[2:3] == ["--body"]:
    start = text.index(f"    def {sys.argv[3]}(self) -> str:")
    eol = text.index("\n", start)
    doc = text[:eol] + text[text.index("\n\n", eol):]
    pathlib.Path(sys.argv[1]).write_text(doc)
    print(doc[:eol].count("\n") + 1, eol - (doc.rfind("\n", 0, eol) + 1))
    sys.exit(0)
start = text.index(MARKER)
cut = start + len(KEEP)
doc = text[:cut] + text[text.index("\n", start):]
pathlib.Path(sys.argv[1]).write_text(doc)
print(doc[:cut].count("\n") + 1, len(KEEP))
