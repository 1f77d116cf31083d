"""Lines as LSP counts them, on both paths of server.text.split_lines."""

import re

from server.text import split_lines

REFERENCE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")


def test_only_cr_lf_and_crlf_end_a_line():
    for text in ["", "x", "x\n", "\n\n", "a\r\nb\rc\nd", "a\x0cb\n", "a\u2028b\u2029c\x85d\x0b\n", "é\r\n\x1c\n"]:
        assert split_lines(text, keepends=True) == REFERENCE.findall(text), text
        assert split_lines(text) == [ln.rstrip("\r\n") for ln in REFERENCE.findall(text)], text
