"""Credentials in text: finding them (a chunk that holds one never goes into a prompt) and masking them.

The detectors are Yelp's detect-secrets plugins (version pinned in pyproject.toml), run
directly on strings: none of its baseline, settings or file machinery, and never its
``verify`` methods (those call the services over the network). What they find:

- credentials of a known shape: AWS access keys (and 40-character secret keys named
  ``aws..key``), GitHub ``ghp_``/``gho_``... and GitLab ``glpat-``... tokens, Slack
  ``xox.-`` tokens and webhooks, Stripe ``sk_live_``/``rk_live_``, private key blocks
  (``-----BEGIN ... PRIVATE KEY-----``, PuTTY), ``scheme://user:password@`` URLs, JSON web
  tokens, npm, PyPI, SendGrid, Twilio, Mailchimp, Discord, Telegram, Azure storage,
  Artifactory, IBM, SoftLayer, Square, Cloudant keys, OpenAI's older ``sk-...T3BlbkFJ...``;
- a value given to a credential name (``password``, ``passwd``, ``pwd``, ``secret``,
  ``api_key``, ``private_key``, ``db_pass``...): quoted in code (``password = "..."``),
  quoted or not in configuration files (``.yaml``, ``.ini``, ``.toml``, ``.cfg``, ``.conf``,
  ``.properties``).

Values detect-secrets itself drops are dropped too: templates (``{x}``, ``<x>``, ``${X}``),
``$VARIABLES``, UUIDs, alphabet runs, values without a letter, and, for names, a value that
is a call or a subscript (``password = get_password()``, ``os.environ["PASSWORD"]``).

Rules of this module on top (detect-secrets has no rule for them): OpenAI-style keys
(``sk-`` and 8+ characters), HTTP ``Bearer`` tokens, Google API keys (``AIza`` and 35
characters), and a value given to ``token``, ``authorization``, ``api_key``, ``secret``,
``password``, ``passwd`` or ``pwd`` unquoted in any text (``password=hunter2x7`` in a shell
script, ``the password is hunter2x7`` in a chat answer) when it looks like a credential
rather than code: 8 or more characters, a letter and a digit or a symbol, no brackets, braces
or ``$`` (``token = self.token``, ``token: str``, ``token = next(tokens)``, ``password is
not_set`` are code).

Not flagged on purpose: random-looking strings with neither a known shape nor a credential
name (detect-secrets' entropy plugins): in code they are mostly hashes, test vectors and
encoded data (a lockfile's ``integrity`` hashes, a commit id), and a chunk flagged is a chunk
the model never sees.

Costs: each plugin is given only the lines that a substring search says it could match
(:class:`_Gate`); about 1.2 ms per 10 KB of code on one core (Starlette, httpx and
platformdirs, 716 KB of Python: 85 ms), and ~0.2 s once to import detect-secrets.
This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import itertools
import os
import re
from typing import Iterator

from .text import split_lines

REDACTED = "<redacted>"
UNQUOTED_MIN_CHARS = 8  # an unquoted value shorter than this is not taken for a credential

# This module's own rules (see the module docstring), searched in the lowercased text (their
# values' characters are the same in either case): credentials of a known shape (a word of its
# own) ...
_SHAPES = (
    re.compile(r"sk-[a-z0-9_-]{8,}"),                   # OpenAI-style keys
    re.compile(r"bearer\s+([a-z0-9._~+/=-]{8,})"),       # Authorization: Bearer ... (group 1: the token)
    re.compile(r"aiza[0-9a-z_-]{35}"),                   # Google API keys
)
# ... and a value after a credential's name, kept when it looks like a credential (group 1).
_NAMED_VALUE = re.compile(r"""(?:api[_-]?key|apikey|token|secret|password|passwd|pwd|authorization)["'\]]{0,2}"""
                          r"""(?:\s*[=:]\s*|\s+is\s+)["'`]?(?:bearer\s+)?([^\s"'`,;}]+)""")
_QUOTES = re.compile(r"[\"'`]")
_CODE_CHARS = re.compile(r"[()\[\]{}<>$]")
_DELIMITERS = " \t\"'=:`"   # trimmed from a whole match (Artifactory's patterns include them)
_KEY_BLOCK_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----")



@dataclasses.dataclass(frozen=True)
class _Gate:
    """Which lines a detect-secrets plugin needs to see: a superset of where it can find anything.

    Python's re tries most of the plugins' patterns at every position of a text (look-behinds,
    optional prefixes, case-insensitive alternations); a gate finds the few lines worth it
    with substring searches. A line passes when it holds one of ``words`` (in the lowercased
    text unless ``cased``) and, with ``long_value``, a run of 24+ token characters (the
    plugins' values are that long). tests/test_secrets.py checks that gated and ungated
    detection agree on real code and on every credential of its table.
    """

    words: tuple[str, ...]
    cased: bool = False
    long_value: bool = False
    lines: str = ""    # the pattern that picks the lines, when not just any of the words

    @functools.cached_property
    def pattern(self) -> re.Pattern:
        return re.compile(self.lines or "|".join(map(re.escape, self.words)))


# Every pattern that reads a credential's name needs one of these (pwd is in pw, passwd in pass);
# one gate for all of them, so the lines are found once.
_NAMES = _Gate(("key", "pw", "pass", "token", "secret", "contras", "cloudant", "softlayer", "authorization"))
_NAMES_LONG = dataclasses.replace(_NAMES, long_value=True)
_LONG_VALUE = re.compile(r"[a-z0-9_-]{24}")
_GATES = {
    "ArtifactoryDetector": _Gate(("AKC", "AP"), cased=True, lines=r"AKC[a-zA-Z0-9]{10}|AP[0-9A-F][a-zA-Z0-9]{8}"),
    "AWSKeyDetector": _Gate(("a3t", "abia", "acca", "akia", "asia", "aws")),
    "AzureStorageKeyDetector": _Gate(("accountkey=",)),
    "BasicAuthDetector": _Gate(("://",)),
    "CloudantDetector": _NAMES_LONG,
    "DiscordBotTokenDetector": _Gate((".",), lines=r"\.[a-z0-9_-]{6}\.[a-z0-9_-]{27}"),
    "GitHubTokenDetector": _Gate(("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),
    "GitLabTokenDetector": _Gate(("glpat-", "gldt-", "glft-", "glsoat-", "glrt-", "gr1348941", "glcbt-", "glimt-",
                                  "glptt-", "glagent-", "gloas-")),
    "IbmCloudIamDetector": _NAMES_LONG,
    "IbmCosHmacDetector": _NAMES_LONG,
    "JwtTokenDetector": _Gate(("eyj",)),
    "MailchimpDetector": _Gate(("-us",)),
    "NpmDetector": _Gate(("_authtoken",)),
    "OpenAIDetector": _Gate(("t3blbkfj",)),
    "PrivateKeyDetector": _Gate(("private key", "putty-user-key-file-2")),
    "PypiTokenDetector": _Gate(("pypi-ag",)),
    "SendGridDetector": _Gate(("sg.",)),
    "SlackDetector": _Gate(("xox", "hooks.slack.com")),
    "SoftlayerDetector": _NAMES_LONG,
    "SquareOAuthDetector": _Gate(("sq0csp-",)),
    "StripeDetector": _Gate(("k_live_",)),
    "TelegramBotTokenDetector": _Gate((":",), lines=r":[0-9a-z_-]{35}"),
    # detect-secrets' names: api_key ... client_key, db_pass, key_pass, password, passwd, pwd,
    # secret, contraseña, contrasena.
    "KeywordDetector": _NAMES,
}


@functools.lru_cache(maxsize=1)
def _plugins() -> tuple:
    """The detect-secrets plugins used, once (importing them costs ~0.1 s, so not at import)."""
    from detect_secrets.plugins.artifactory import ArtifactoryDetector
    from detect_secrets.plugins.aws import AWSKeyDetector
    from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
    from detect_secrets.plugins.basic_auth import BasicAuthDetector
    from detect_secrets.plugins.cloudant import CloudantDetector
    from detect_secrets.plugins.discord import DiscordBotTokenDetector
    from detect_secrets.plugins.github_token import GitHubTokenDetector
    from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
    from detect_secrets.plugins.ibm_cloud_iam import IbmCloudIamDetector
    from detect_secrets.plugins.ibm_cos_hmac import IbmCosHmacDetector
    from detect_secrets.plugins.jwt import JwtTokenDetector
    from detect_secrets.plugins.mailchimp import MailchimpDetector
    from detect_secrets.plugins.npm import NpmDetector
    from detect_secrets.plugins.openai import OpenAIDetector
    from detect_secrets.plugins.private_key import PrivateKeyDetector
    from detect_secrets.plugins.pypi_token import PypiTokenDetector
    from detect_secrets.plugins.sendgrid import SendGridDetector
    from detect_secrets.plugins.slack import SlackDetector
    from detect_secrets.plugins.softlayer import SoftlayerDetector
    from detect_secrets.plugins.square_oauth import SquareOAuthDetector
    from detect_secrets.plugins.stripe import StripeDetector
    from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
    from detect_secrets.plugins.twilio import TwilioKeyDetector
    return tuple(cls() for cls in (
        ArtifactoryDetector, AWSKeyDetector, AzureStorageKeyDetector, BasicAuthDetector, CloudantDetector,
        DiscordBotTokenDetector, GitHubTokenDetector, GitLabTokenDetector, IbmCloudIamDetector, IbmCosHmacDetector,
        JwtTokenDetector, MailchimpDetector, NpmDetector, OpenAIDetector, PrivateKeyDetector, PypiTokenDetector,
        SendGridDetector, SlackDetector, SoftlayerDetector, SquareOAuthDetector, StripeDetector,
        TelegramBotTokenDetector, TwilioKeyDetector))


@functools.lru_cache(maxsize=1)
def _keywords():
    """detect-secrets' credential-name detector and its patterns for code: (detector, quoted values only)."""
    from detect_secrets.plugins import keyword
    return keyword.KeywordDetector(), keyword.QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP


@functools.lru_cache(maxsize=64)
def _keyword_patterns(ext: str):
    """The credential-name patterns detect-secrets applies to files of extension ``ext`` ("" for any text)."""
    from detect_secrets.plugins.keyword import REGEX_BY_FILETYPE
    from detect_secrets.util.filetype import determine_file_type
    _, quotes_required = _keywords()
    return REGEX_BY_FILETYPE.get(determine_file_type("x" + ext), quotes_required) if ext else quotes_required


def _dropped(secret: str, line: str, by_name: bool) -> bool:
    """detect-secrets' own filters of a found value (its defaults); ``by_name``: found by a credential name."""
    from detect_secrets.filters import heuristic as h
    if (h.is_templated_secret(secret) or h.is_prefixed_with_dollar_sign(secret) or h.is_sequential_string(secret)
            or h.is_potential_uuid(secret) or h.is_not_alphanumeric_string(secret)):
        return True
    return by_name and (h.is_indirect_reference(line) or h.is_likely_id_string(secret, line))


def _looks_like_credential(value: str) -> bool:
    """An unquoted value after a credential name: a credential rather than code (see the module docstring)."""
    if len(value) < UNQUOTED_MIN_CHARS or _CODE_CHARS.search(value):
        return False
    letters = sum(c.isalpha() for c in value)
    return 0 < letters < len(value) and not re.fullmatch(r"[A-Za-z_.]+", value)


class _Text:
    """A text, its lowercased copy and its lines' offsets (split once, only when something matched)."""

    def __init__(self, text: str):
        self.text = text
        lower = text.lower()
        # Offsets in the lowercased text are the original's unless lowercasing changed a length
        # (a few Unicode letters, such as U+0130): then every line is searched by the plugins.
        self.lower = lower if len(lower) == len(text) else None
        self._starts: list[int] | None = None
        self._gated: dict[tuple, list[int]] = {}
        self._words: dict[tuple[str, bool], bool] = {}

    @property
    def starts(self) -> list[int]:
        if self._starts is None:
            lengths = map(len, split_lines(self.text, keepends=True))
            self._starts = list(itertools.accumulate(lengths, initial=0))[:-1] or [0]
        return self._starts

    def line(self, i: int) -> tuple[int, str]:
        """(offset, text without its line break) of line ``i``."""
        starts = self.starts
        start = starts[i]
        end = starts[i + 1] if i + 1 < len(starts) else len(self.text)
        return start, self.text[start:end].rstrip("\r\n")

    def lines_of(self, pattern: re.Pattern, haystack: str) -> list[int]:
        """The indexes of the lines that ``pattern``'s matches in ``haystack`` touch, sorted.

        One search per matching line: after a match the search goes on from the end of the
        last line it touched (its line break, which some patterns take as their first character).
        """
        starts, out, pos = self.starts, [], 0
        while (m := pattern.search(haystack, pos)) is not None:
            first = bisect.bisect_right(starts, m.start()) - 1
            last = bisect.bisect_right(starts, max(m.start(), m.end() - 1)) - 1
            out.extend(range(max(first, out[-1] + 1 if out else 0), last + 1))
            if last + 1 >= len(starts):
                break
            pos = max(pos + 1, starts[last + 1] - 1)
        return out

    def candidates(self, gate: _Gate | None, patterns=()) -> list[int]:
        """Lines worth giving to a plugin: those its ``gate`` lets through, or (no gate) its ``patterns`` match."""
        if gate is None:
            return sorted({i for p in patterns for i in self.lines_of(p, self.text)})
        haystack = self.text if gate.cased else self.lower
        if haystack is None:
            return list(range(len(self.starts)))
        if not any(self.holds(word, gate.cased) for word in gate.words):
            return []
        key = (gate.words, gate.cased, gate.lines)
        if key not in self._gated:
            self._gated[key] = self.lines_of(gate.pattern, haystack)
        lines = self._gated[key]
        if gate.long_value:
            lines = [i for i in lines if _LONG_VALUE.search(self.lower_line(i))]
        return lines

    def holds(self, word: str, cased: bool) -> bool:
        """``word`` is in the text (lowercased unless ``cased``); each word is looked for once."""
        key = (word, cased)
        if key not in self._words:
            self._words[key] = word in (self.text if cased else self.lower or "")
        return self._words[key]

    def lower_line(self, i: int) -> str:
        starts = self.starts
        return (self.lower or "")[starts[i]:starts[i + 1] if i + 1 < len(starts) else len(self.text)]


def _match_spans(patterns, line: str, found: set[str]) -> Iterator[tuple[int, int]]:
    """Spans in ``line`` of what a plugin's ``patterns`` matched and the plugin reported (``found``).

    A plugin reports a pattern's groups when it has some: the value (``://user:(password)@``)
    or only a prefix (``(ghp)_...``). A group that does not start the match and has 4+
    characters is the value; otherwise the whole match is masked.
    """
    for pattern in patterns:
        for m in pattern.finditer(line):
            groups = [i for i in range(1, (m.re.groups or 0) + 1) if m.group(i) and m.group(i) in found]
            values = [i for i in groups if m.start(i) > m.start() and len(m.group(i)) >= 4]
            if values:
                yield from (m.span(i) for i in values)
            elif groups or m.group(0) in found:
                start, end = m.span()
                while start < end and line[start] in _DELIMITERS:
                    start += 1
                while end > start and line[end - 1] in _DELIMITERS:
                    end -= 1
                yield start, end


def credential_spans(text: str, path: str = "", gated: bool = True) -> Iterator[tuple[int, int]]:
    """Where ``text`` holds credentials: (start, end) character offsets, in no particular order.

    Args:
        text: any text (a chunk of code, a whole file, a log line, a model's answer).
        path: the file ``text`` comes from, when it does: its extension picks how credential
            names are read (unquoted values count in configuration files, see the module docstring).
        gated: look only at the lines that can hold what each plugin finds (the fast way);
            False gives every line to every plugin (for tests: both must agree).

    Yields:
        Half-open spans of the credential values (a private key: from its ``BEGIN`` line to
        its ``END`` line, or to the text's end when there is none). Spans may overlap.
    """
    if not text:
        return
    t = _Text(text)
    every = range(len(t.starts)) if not gated else None
    for plugin in _plugins():
        for i in every or t.candidates(_GATES.get(type(plugin).__name__), plugin.denylist):
            offset, line = t.line(i)
            found = {v for v in plugin.analyze_string(line) if v and not _dropped(v, line, by_name=False)}
            if not found:
                continue
            if plugin.secret_type == "Private Key":  # a header: the whole block goes
                for value in found:
                    start = offset + line.index(value)
                    end = _KEY_BLOCK_END.search(text, start)
                    yield start, end.end() if end else len(text)
                continue
            for start, end in _match_spans(plugin.denylist, line, found):
                yield offset + start, offset + end
    detector, quotes_required = _keywords()
    groups = _keyword_patterns(os.path.splitext(path)[1].lower())
    for i in every or t.candidates(_GATES["KeywordDetector"]):
        offset, line = t.line(i)
        if every is None and groups is quotes_required and not _QUOTES.search(line):
            continue  # each of these patterns needs a quoted value
        for secret in set(detector.analyze_string(line, groups)):
            if secret and not _dropped(secret, line, by_name=True):
                for m in re.finditer(re.escape(secret), line):
                    yield offset + m.start(), offset + m.end()
    yield from _extra_spans(t, every)


def _extra_spans(t: _Text, every: range | None) -> Iterator[tuple[int, int]]:
    """This module's own rules (:data:`_SHAPES`, :data:`_NAMED_VALUE`); ``every`` as in :func:`credential_spans`."""
    text = t.text
    for pattern in _SHAPES:
        found = (pattern.finditer(t.lower) if t.lower is not None
                 else re.compile(pattern.pattern, re.IGNORECASE).finditer(text))
        for m in found:
            start, end = m.span(1 if pattern.groups else 0)
            if not pattern.groups and start and (text[start - 1].isalnum() or text[start - 1] in "_-"):
                continue  # inside a longer word (task-queue, an AIza inside another token)
            if not _dropped(text[start:end], "", by_name=False):
                yield start, end
    for i in every or t.candidates(_NAMES):
        offset, line = t.line(i)
        low = line.lower()
        found = (_NAMED_VALUE.finditer(low) if len(low) == len(line)
                 else re.compile(_NAMED_VALUE.pattern, re.IGNORECASE).finditer(line))
        for m in found:
            value = line[m.start(1):m.end(1)].rstrip(".:")  # the end of a sentence or of a condition
            if _looks_like_credential(value) and not _dropped(value, line, by_name=True):
                yield offset + m.start(1), offset + m.start(1) + len(value)


def has_credential(text: str, path: str = "") -> bool:
    """True when ``text`` holds a credential (:func:`credential_spans`; ``path`` as there)."""
    return next(iter(credential_spans(text, path)), None) is not None


def credential_lines(text: str, path: str = "") -> list[tuple[int, int]]:
    """The 0-based inclusive line ranges of ``text`` that hold credentials (lines split as
    :func:`server.text.split_lines` does: at CR, LF and CR LF), sorted, possibly overlapping."""
    spans = list(credential_spans(text, path))
    if not spans:
        return []
    starts = _Text(text).starts
    out = []
    for start, end in spans:
        first = bisect.bisect_right(starts, start) - 1
        last = bisect.bisect_right(starts, max(start, end - 1)) - 1
        out.append((first, last))
    return sorted(set(out))


def redact(text: str) -> str:
    """``text`` with every credential (:func:`credential_spans`, read as text of no file type)
    replaced by ``<redacted>``; the names before them are kept (``password = <redacted>``)."""
    spans = sorted(credential_spans(text))
    if not spans:
        return text
    out, pos = [], 0
    for start, end in spans:
        if end <= pos:
            continue
        start = max(start, pos)
        out.append(text[pos:start])
        out.append(REDACTED)
        pos = end
    out.append(text[pos:])
    return "".join(out)


__all__ = ["REDACTED", "credential_lines", "credential_spans", "has_credential", "redact"]
