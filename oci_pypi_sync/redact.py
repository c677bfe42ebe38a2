"""Secrets kept out of what the tool prints and stores: URLs without their credentials.

URLs reach log lines, error messages, ``--json`` reports, the state file and
pages. Before they do, :func:`redact_url` takes out what would let a reader
act as us or as the owner of a link: the user name and password, and the
query parameters that carry a token or a signature (the pre-signed
object-storage URLs registries redirect blob reads to). :func:`redact_text`
does the same for every URL inside a longer text, such as an exception's
message, and :class:`RedactingFilter` applies it to every log record.

This is the one implementation of the rule; everything that shows a URL
goes through it.
"""

from __future__ import annotations

import logging
import re
import traceback
from urllib.parse import unquote_plus, urlsplit, urlunsplit

__all__ = [
    "MASK",
    "RedactingFilter",
    "is_secret_parameter",
    "redact_text",
    "redact_url",
]

#: What stands in for a removed secret.
MASK = "***"

#: Query parameters that are secrets by name (compared in lower case): tokens,
#: and the signatures of pre-signed URLs (S3, Google Cloud Storage, Azure SAS,
#: CloudFront, and the generic ``sig``/``signature`` of others).
_SECRET_NAMES = frozenset(
    {
        "sig",
        "signature",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "code",
        "key",
        "apikey",
        "api_key",
        "auth",
        "password",
        "passwd",
        "secret",
        "client_secret",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "x-goog-signature",
        "x-goog-credential",
        "x-goog-security-token",
        "googleaccessid",
        "key-pair-id",
        "policy",
    }
)
#: A parameter whose name contains one of these is a secret too.
_SECRET_PARTS = ("signature", "token", "secret", "password", "credential")

# A URL inside free text: a scheme, ``://``, then anything up to a space or a quote.
_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s<>\"'`\\]+")
# An authorization header's value quoted in a text.
_AUTH_HEADER = re.compile(
    r"((?:proxy-)?authorization['\"]?\s*[:=,]\s*['\"]?)(basic|bearer)\s+[^\s'\",)]+",
    re.IGNORECASE,
)


def is_secret_parameter(name: str) -> bool:
    """Whether a query parameter of this name carries a token, a password or a signature."""
    lowered = unquote_plus(name).strip().lower()
    return lowered in _SECRET_NAMES or any(part in lowered for part in _SECRET_PARTS)


def _redact_query(query: str) -> str:
    if not query:
        return query
    pieces = []
    for piece in query.split("&"):
        name, eq, _value = piece.partition("=")
        pieces.append(f"{name}={MASK}" if eq and is_secret_parameter(name) else piece)
    return "&".join(pieces)


def redact_url(url: str) -> str:
    """``url`` with user-info and secret query parameters replaced by ``***``, safe to show.

    The rest is kept as it was, so the result still says which host and
    path were meant. A string that cannot be parsed as a URL is not shown.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unreadable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = _redact_query(parts.query)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted, and any quoted ``Authorization`` value masked."""
    if "://" in text:
        text = _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text)
    if "uthorization" in text or "UTHORIZATION" in text:
        text = _AUTH_HEADER.sub(lambda match: f"{match.group(1)}{match.group(2)} {MASK}", text)
    return text


class RedactingFilter(logging.Filter):
    """A handler filter that redacts each record's message and traceback before it is written.

    Records of other libraries (an HTTP client logging the URLs it
    requests at ``-vv``) pass through it too, so it is the last line before
    a secret would reach the log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            formatted = "".join(traceback.format_exception(record.exc_info[1]))
            record.exc_text = redact_text(formatted.rstrip("\n"))
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True
