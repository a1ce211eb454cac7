"""Passwords out of everything hptune shows or stores: one redaction for every output.

The terminal (summary, errors), MLflow's tags and the study file logged on the parent run, and
the report (HTML, Markdown, CSV) are read by others: a CI log, a shared tracking server, a
report mailed around. Everything hptune writes there that may hold a URL goes through
``redact`` (a text) or ``redact_study_file`` (the logged copy of a study file).

What is hidden (replaced by ``***``):

- the password of a URL's user information, ``scheme://user:PASSWORD@host``, whatever it holds:
  SQLAlchemy takes everything up to the last ``@`` before the host, so a password written in a
  study file as is (with ``/``, spaces, ``:``) or percent-encoded is hidden whole;
- the value of a secret-looking key in a URL's query string (``?password=...``,
  ``&sslpassword=...``) and in libpq's keyword form (``host=h password=... dbname=d``);
  secret-looking keys are ``pass`` and any key that contains one of the ``SECRET_KEYS``
  below (``db_password``, ``aws_secret_access_key``), in any case. A query value runs to the
  next ``&``, ``#``, quote or line end (a raw space does not end it); a keyword value to the
  next space, or is quoted (``password='a b'``), as libpq reads it.

User names, hosts, ports and database names stay: they say where the data is.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

HIDDEN = "***"
SECRET_KEYS = ("password", "passwd", "pwd", "secret", "token", "apikey", "api_key")

# A key holding one of them (``db_password``, ``aws_secret_access_key``), or ``pass`` itself.
_KEY = r"(?:pass|[A-Za-z0-9_]*(?:" + "|".join(SECRET_KEYS) + r")[A-Za-z0-9_]*)"
_RULES = (
    # scheme://user:PASSWORD@ : the password runs to the last "@" before the next URL.
    re.compile(
        r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s'\"]*:)"
        r"(?!\*\*\*@)(?P<secret>(?:(?!://)[^\n])*)(?=@)"
    ),
    # ?password=VALUE or &token=VALUE in a query string.
    re.compile(
        rf"(?P<head>[?&;](?i:{_KEY})=)(?!\*\*\*)(?P<secret>[^&#\n'\"]+)",
    ),
    # password=VALUE in libpq's keyword form (or any "key=value" text): to a space, or quoted.
    re.compile(
        rf"(?P<head>(?<![\w.?&;/-])(?i:{_KEY})\s*=\s*)(?!\*\*\*)"
        r"(?P<secret>'(?:\\.|[^'\\\n])*'|[^\s'\"]+)",
    ),
)


def redact(text: str) -> str:
    """``text`` (a URL, a message, a study file) with every password in it replaced by
    ``***`` (what counts: the module's docstring)."""
    for rule in _RULES:
        text = rule.sub(lambda match: match["head"] + HIDDEN, text)
    return text


def secrets(text: str) -> Iterator[str]:
    """The passwords ``redact`` hides in ``text``, as written and percent-decoded."""
    for rule in _RULES:
        for match in rule.finditer(text):
            secret = match["secret"].strip("'")
            yield secret
            yield unquote(secret)


def redact_study_file(text: str) -> str:
    """A study file's text with its passwords hidden, for the copy logged on the parent run.

    The text is kept as written (comments included) when ``redact`` hides every password of
    every value the YAML holds. A password it cannot find in the text as written (a URL
    folded over two lines, a value spelled with YAML escapes) leaves no trace either: the
    file is then logged as its redacted values, without comments, under a line saying why.
    """
    import yaml

    hidden = redact(text)
    try:
        values = list(_strings(yaml.safe_load(text)))
    except yaml.YAMLError:
        return hidden  # (the CLI refused such a file before anything was logged)
    leaked = [s for value in values for s in secrets(value) if s and s != HIDDEN and s in hidden]
    folded = [value for value in values if redact(value) != value and value not in text]
    if not leaked and not folded:
        return hidden
    rewritten = yaml.safe_dump(_redacted(yaml.safe_load(text)), sort_keys=False)
    return "# hptune: rewritten to hide a password (comments dropped)\n" + rewritten


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {_redacted(key): _redacted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    return value
