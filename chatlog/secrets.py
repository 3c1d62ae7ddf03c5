"""Masking secrets wherever settings, URLs or errors are shown: :func:`mask_secrets`.

One function masks everything chatlog prints or logs: ``chatlog config
show``, the projector's startup and error logs (through
:class:`SecretMaskingFilter`) and the CLI's error messages. It masks

- the password of a URL's user-info part (``redis://app:****@redis:6379/0``,
  ``postgresql+psycopg://app:****@db/chat``), and
- the value of every ``name=value`` pair whose name says it is a secret
  (``?password=``, ``ssl_password``, ``ssl_keyfile_password``,
  ``sasl_plain_password``, ``token``, ``CHATLOG_KAFKA_SASL_PASSWORD=`` ...),
  in a URL's query or anywhere in free text.

User names, hosts, ports and paths stay readable, so a masked line still
says where chatlog connects.
"""

from __future__ import annotations

import logging
import re
from dataclasses import fields
from typing import Any

from chatlog.settings import SECRET_SETTINGS, Settings

__all__ = [
    "MASK",
    "SECRET_WORDS",
    "SecretMaskingFilter",
    "is_secret_name",
    "mask_secrets",
    "mask_url",
    "masked_settings",
]

#: What a secret is replaced with.
MASK = "****"

#: A name holding one of these words (case-insensitive) names a secret.
SECRET_WORDS = (
    "password", "passwd", "pwd", "secret", "token", "credential",
    "api_key", "apikey", "access_key", "private_key_pass",
)

# The user-info password of any ``scheme://user:password@host``; like
# urlsplit, the authority ends at the first "/", "?" or "#".
_USERINFO = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s/?#@:]*):(?P<password>[^\s/?#@]*)@"
)
# ``name=value`` where ``name`` holds a secret word: query parameters,
# KEY=VALUE options and environment assignments alike. The value ends where
# a query parameter or a word would.
_NAME_CHARS = r"[A-Za-z0-9_.\-]"
_PAIR = re.compile(
    rf"(?<!{_NAME_CHARS})(?P<name>{_NAME_CHARS}*(?:{'|'.join(map(re.escape, SECRET_WORDS))})"
    rf"{_NAME_CHARS}*)"
    r"(?P<equals>=)(?P<value>[^\s&#;,'\"]*)",
    re.IGNORECASE,
)


def is_secret_name(name: str) -> bool:
    """Whether an option or parameter called ``name`` holds a secret."""
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


def mask_secrets(text: str) -> str:
    """``text`` with every URL password and every secret ``name=value`` value masked.

    Works on one URL or on free text that quotes URLs (an error message, a
    log line); text without secrets is returned unchanged.
    """
    masked = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return _PAIR.sub(
        lambda m: f"{m['name']}{m['equals']}{MASK if m['value'] else ''}", masked
    )


def mask_url(url: str) -> str:
    """``url`` with its user-info password and secret query parameters masked."""
    return mask_secrets(url)


def masked_settings(settings: Settings) -> dict[str, Any]:
    """Every setting with its value, secrets masked: safe to print or log.

    Secret settings show as ``****``, every text value goes through
    :func:`mask_secrets`, and the ``CHATLOG_KAFKA_*`` pass-through options
    show their names only: chatlog cannot know which of a client's options
    are secrets, so none of their values is shown.
    """
    shown: dict[str, Any] = {}
    for field in fields(settings):
        value = getattr(settings, field.name)
        if field.name in SECRET_SETTINGS and value is not None:
            value = MASK
        elif field.name == "kafka_options":
            value = dict.fromkeys(sorted(value), MASK)
        elif isinstance(value, str):
            value = mask_secrets(value)
        shown[field.name] = value
    return shown


class SecretMaskingFilter(logging.Filter):
    """A logging filter that masks secrets in every record's message.

    The message is rendered (``msg % args``) and masked once, so every
    handler and format downstream sees the masked text only.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask ``record``'s message in place; never drops a record."""
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True
