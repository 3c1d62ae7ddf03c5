"""The effective configuration: a CLI flag for every setting, and a masked view of it.

Every :class:`~chatlog.settings.Settings` field is set, in rising order of
precedence, by its default, its environment variable and its command-line
flag. Flags take the same text as the variables and are parsed the same way,
so ``--partitions 24`` and ``CHATLOG_PARTITIONS=24`` mean the same.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from chatlog.errors import ConfigurationError
from chatlog.secrets import MASK, mask_url
from chatlog.secrets import masked_settings as effective_configuration
from chatlog.settings import ENVIRONMENT, SECRET_SETTINGS, Settings

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["MASK", "effective_configuration", "flag_name", "mask_url", "settings_from_flags",
           "settings_options"]


def flag_name(setting: str) -> str:
    """The command-line flag of a setting: ``max_poll_records`` -> ``--max-poll-records``."""
    return "--" + setting.replace("_", "-")


def settings_options(*, exclude: frozenset[str] = frozenset()) -> Callable[[F], F]:
    """Decorate a click command with one ``--<setting> VALUE`` option per setting.

    The command receives them as keyword arguments named after the settings
    (``None`` when not given), plus ``kafka_option`` (``KEY=VALUE`` strings for
    kafka-python options); pass them all to :func:`settings_from_flags`.
    """

    def decorate(command: F) -> F:
        command = click.option(
            "--kafka-option",
            "kafka_option",
            multiple=True,
            metavar="KEY=VALUE",
            help="Any kafka-python client option (env CHATLOG_KAFKA_<KEY>); repeatable.",
        )(command)
        for name in reversed(list(ENVIRONMENT)):
            if name in exclude:
                continue
            secret = name in SECRET_SETTINGS
            command = click.option(
                flag_name(name),
                name,
                default=None,
                metavar="VALUE",
                help=f"Setting {name} (env {ENVIRONMENT[name]})."
                + (" Prefer the variable: flags show in process lists." if secret else ""),
            )(command)
        return command

    return decorate


def settings_from_flags(
    flags: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Settings from the environment, with the given flag values layered on top.

    Raises:
        ConfigurationError: a flag or variable holds a malformed value.

    """
    env = dict(os.environ if environ is None else environ)
    for name, value in flags.items():
        if name == "kafka_option":
            for option in value or ():
                key, equals, text = option.partition("=")
                if not equals or not key:
                    raise ConfigurationError(f"--kafka-option {option!r} is not KEY=VALUE")
                env["CHATLOG_KAFKA_" + key.upper()] = text
        elif value is not None:
            env[ENVIRONMENT[name]] = value
    return Settings.from_env(env, **overrides)
