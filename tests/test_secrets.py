"""Credentials in code: found in real formats (detect-secrets' plugins and our rules), masked in
text, never taken for ordinary code, and never put into a prompt by the index.

Every credential below is a fake of the right shape, put together here so that nothing that
looks like a real credential is committed verbatim.
"""

from __future__ import annotations

import base64
import json
import socket
import sqlite3
import textwrap
from pathlib import Path

import pytest

from index.workspace import IndexOptions, WorkspaceIndex, store_dir
from server.assist.host import retrieved_context
from server.credentials import credential_lines, credential_spans, has_credential
from server.logs import redact


def _b64url(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


AWS_ACCESS = "AKIA" + "Q7R2" * 4
AWS_SECRET = "wJalr" + "XUtnF/K7M+" * 3 + "bPxRf"              # 40 characters of [A-Za-z0-9/+]
GITHUB = "ghp_" + "a1B2c3D4e5" * 3 + "F6g7H8"                   # ghp_ and 36 characters
GITLAB = "glpat-" + "x1Y2z3W4v5" * 2
SLACK = "xoxb-" + "2" * 12 + "-" + "3" * 13 + "-" + "q7Rt" * 6
STRIPE = "sk_" + "live_" + "Q8w2E4r6" * 3
GOOGLE = "AIza" + "Sy" + "b9X1" * 8 + "Q"                       # AIza and 35 characters
OPENAI = "sk-" + "proj-" + "A1b2C3d4" * 3
JWT = _b64url({"alg": "HS256", "typ": "JWT"}) + "." + _b64url({"sub": "1234", "name": "x"}) + "." + "S1g9" * 8
NPM_TOKEN = "npm_" + "A1b2C3d4E5" * 3 + "f6G7H8"
SENDGRID = "SG." + "a1B2c3D4e5F6g7H8i9J0k1" + "." + "L2m3N4o5P6" * 4 + "q7R"
PASSWORD = "Tr0ub4dor" + "x7!"
URL_PASSWORD = "Tr0ub4dor" + "x7q"                              # no ! in a URL: it would be %21
PEM_BODY = ["MIIEowIBAAKCAQEA" + "q1W2e3R4t5Y6u7I8" * 3] + ["o9P0a1S2d3F4g5H6" * 4] * 3
PEM = "\n".join(["-----BEGIN " + "RSA PRIVATE KEY-----", *PEM_BODY, "-----END " + "RSA PRIVATE KEY-----"])

# (what, the text it is in, the credential that must not survive redaction)
CREDENTIALS = [
    ("AWS access key id", f"client = boto3.client('s3', aws_access_key_id='{AWS_ACCESS}')", AWS_ACCESS),
    ("AWS secret access key", f'aws_secret_access_key = "{AWS_SECRET}"', AWS_SECRET),
    ("GitHub token", f"GITHUB_TOKEN = '{GITHUB}'", GITHUB),
    ("GitLab token", f"gitlab.Gitlab(url, private_token='{GITLAB}')", GITLAB),
    ("Slack bot token", f"slack = WebClient(token='{SLACK}')", SLACK),
    ("private key (PEM)", PEM, PEM_BODY[1]),
    ("URL with a password", f'DATABASE_URL = "postgres://app:{URL_PASSWORD}@db.internal:5432/app"', URL_PASSWORD),
    ("passwd= (shell, unquoted)", f"mysql -u root --passwd={PASSWORD}", PASSWORD),
    ("Stripe live key", f'stripe.api_key = "{STRIPE}"', STRIPE),
    ("Google API key", f'const MAPS_KEY = "{GOOGLE}";', GOOGLE),
    ("OpenAI-style key", f"export OPENAI_API_KEY={OPENAI}", OPENAI),
    ("Bearer token", f"curl -H 'Authorization: Bearer {JWT}' https://api.example.com", JWT),
    ("JSON web token", f'session = "{JWT}"', JWT),
    ("npm token", f"//registry.npmjs.org/:_authToken={NPM_TOKEN}", NPM_TOKEN),
    ("SendGrid key", f"sg = SendGridAPIClient('{SENDGRID}')", SENDGRID),
    ("password (quoted, code)", f'password = "{PASSWORD}"', PASSWORD),
    ("api_key (unquoted)", "api_key = 9f8e7d6c5b4a3928", "9f8e7d6c5b4a3928"),
    ("token in JSON", f'{{"access_token": "{GITHUB[4:]}", "expires_in": 3600}}', GITHUB[4:]),
]

# Ordinary code that names tokens, keys and passwords without holding one.
NOT_CREDENTIALS = [
    "tokens = tokenizer.encode(text)",
    "def refresh_token(self, token: str) -> str:",
    "self.token = token",
    "MAX_TOKENS = 4096",
    'EOS_TOKEN = "<|endoftext|>"',
    'password = os.environ["DB_PASSWORD"]',
    'password: str = ""',
    "api_key = get_api_key()",
    "secret_key = settings.SECRET_KEY",
    'headers = {"Authorization": f"Bearer {token}"}',
    'if token.kind == "NAME":',
    'TOKEN_URL = "https://oauth2.example.com/token"',
    "for key, value in sorted(mapping.items()):",
    'DATABASE_URL = "postgres://localhost:5432/app"',
    # Decided: hashes are not credentials (a lockfile's integrity, a commit id, a digest).
    '"integrity": "sha512-' + "Zm9vYmFyYmF6" * 7 + 'w=="',
    'PINNED_COMMIT = "3f786850e387550fdab836ed7e6dc881de23001b"',
    'EXPECTED_SHA256 = "' + "9f86d081884c7d65" * 4 + '"',
]


@pytest.mark.parametrize("what,text,value", CREDENTIALS, ids=[c[0] for c in CREDENTIALS])
def test_real_credential_formats_are_found_and_masked(what, text, value):
    assert has_credential(text), what
    masked = redact(text)
    assert value not in masked and "<redacted>" in masked, masked


@pytest.mark.parametrize("text", NOT_CREDENTIALS)
def test_ordinary_code_is_not_taken_for_a_credential(text):
    assert not has_credential(text)
    assert redact(text) == text


def test_masking_keeps_the_names_and_the_rest_of_the_text():
    assert redact("password = hunter2hunter2xyz") == "password = <redacted>"
    assert redact("The password is `hunter2hunter2xyz`.") == "The password is `<redacted>`."  # an answer's prose
    assert redact("if token is None or password is not_set:") == "if token is None or password is not_set:"
    assert redact(f"key: {OPENAI} (rotate monthly)") == "key: <redacted> (rotate monthly)"
    masked = redact(f"keys:\n{PEM}\nthat was all")
    assert masked.endswith("that was all") and not any(line in masked for line in PEM_BODY)


def test_a_private_key_cut_short_is_masked_to_the_end():
    """A streamed answer may stop inside a key: everything after its header is masked."""
    head = "\n".join(PEM.splitlines()[:3])
    assert not any(line in redact(head) for line in PEM_BODY[:2])


def test_configuration_files_count_unquoted_values():
    text = f"database:\n  user: app\n  password: {PASSWORD}\n"
    assert has_credential(text, "deploy/settings.yaml")
    assert credential_lines(text, "deploy/settings.yaml") == [(2, 2)]
    assert not has_credential("database:\n  password_file: /run/secrets/db\n", "deploy/settings.yaml")


def test_the_lines_of_a_credential_are_those_of_the_file():
    text = "import os\r\n\r\nTOKEN = 'x'\r\n" + PEM.replace("\n", "\r\n") + "\r\nprint(1)\r\n"
    assert credential_lines(text, "notes.md") == [(3, 3 + len(PEM_BODY) + 1)]


def test_detection_never_opens_a_connection(monkeypatch):
    """detect-secrets' plugins can verify a credential with its service: never here."""
    def refuse(*args, **kwargs):
        raise AssertionError("a connection was attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert all(has_credential(text) for _, text, _ in CREDENTIALS)


def _corpus() -> list[tuple[str, str]]:
    """Real code with many near-credentials: detect-secrets' own sources and Starlette's."""
    import detect_secrets
    import starlette
    files = [*Path(detect_secrets.__file__).parent.rglob("*.py"), *Path(starlette.__file__).parent.rglob("*.py")]
    return [(p.name, p.read_text(encoding="utf-8")) for p in files] + \
        [("table.py", text) for _, text, _ in CREDENTIALS] + [("table.py", "\n".join(NOT_CREDENTIALS))]


def test_the_fast_gates_find_what_every_plugin_on_every_line_finds():
    """The gates (substring searches that pick the lines each plugin is given) lose nothing."""
    corpus = _corpus()
    found = 0
    for name, text in corpus:
        gated = sorted(credential_spans(text, name))
        assert gated == sorted(credential_spans(text, name, gated=False)), name
        found += len(gated)
    assert found > 50  # detect-secrets' sources are full of examples: the comparison compared something


BILLING_PY = textwrap.dedent(f'''\
    """Billing through the payment gateway."""
    import os

    GATEWAY_URL = os.environ.get("GATEWAY_URL", "https://gateway.example.com")
    GATEWAY_KEY = "{STRIPE}"


    def charge_invoice(invoice, amount):
        """Charge an invoice through the payment gateway."""
        return gateway_post("/charges", {{"invoice": invoice, "amount": amount}}, GATEWAY_KEY)


    def refund_invoice(invoice):
        """Refund an invoice through the payment gateway."""
        return gateway_post("/refunds", {{"invoice": invoice}}, None)
    ''')


@pytest.fixture
def indexed(cache, tmp_path):
    root = tmp_path / "ws"
    (root / "src").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "src" / "billing.py").write_text(BILLING_PY)
    # A long key pasted into notes: line windows of 60 lines, some of them inside the key only.
    body = [f"K{i:03d}" + "q1W2e3R4t5Y6u7I8" * 4 for i in range(140)]
    (root / "docs" / "setup.md").write_text("# Setup gateway\n\nThe gateway key:\n\n" + "-----BEGIN " +
                                            "PRIVATE KEY-----\n" + "\n".join(body) + "\n-----END PRIVATE KEY-----\n"
                                            "\nThen charge an invoice through the gateway.\n")
    index = WorkspaceIndex([root], IndexOptions(embeddings=False))
    index.start().result(timeout=60)
    yield root, index
    index.close()


def test_no_chunk_holding_a_credential_reaches_a_prompt(indexed):
    root, index = indexed
    context = index.completion_context(None, "charge invoice payment gateway key", 100_000)
    assert any("def refund_invoice" in text for _, text in context), context  # ordinary code is there ...
    assert not any(STRIPE in text for _, text in context), context           # ... the credential is not
    results = index.search("gateway key invoice charge", k=20, mode="lexical")
    assert any(r.secret and STRIPE in r.text for r in results)  # searchable (the user's own view), marked
    chat = retrieved_context(results, index.indexable)
    assert chat and not any(STRIPE in item.text or "q1W2e3R4" in item.text for item in chat)


def test_every_chunk_of_a_long_key_is_marked_even_one_with_neither_its_begin_nor_its_end(indexed):
    root, index = indexed
    db = sqlite3.connect(store_dir(root) / "index.sqlite")
    rows = db.execute("SELECT start_line, end_line, secret, text FROM chunks WHERE path = 'docs/setup.md' "
                      "ORDER BY start_line").fetchall()
    db.close()
    inside = [r for r in rows if "q1W2e3R4" in r[3]]
    assert len(inside) >= 3 and any("BEGIN" not in r[3] and "END" not in r[3] for r in inside)
    assert all(r[2] == 1 for r in inside), [(r[0], r[1], r[2]) for r in rows]
    assert not any(r[2] for r in rows if "q1W2e3R4" not in r[3] and "PRIVATE KEY" not in r[3])
