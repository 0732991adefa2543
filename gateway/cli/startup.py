"""What every serving command checks before it starts: its settings, and where it listens."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click
from pydantic import ValidationError

SettingsT = TypeVar("SettingsT")


def settings_or_exit(load: Callable[[], SettingsT]) -> SettingsT:
    """The settings, or a one-line error naming what to set (exit status 1, no traceback)."""
    try:
        return load()
    except ValidationError as error:
        reasons = "; ".join(
            str(problem["msg"]).removeprefix("Value error, ") for problem in error.errors()
        )
        raise click.ClickException(reasons) from None


def refuse_unsafe_bind(host: str, problems: list[str]) -> None:
    """Fail closed: a process others can reach never runs on development secrets."""
    if problems:
        raise click.ClickException(f"refusing to listen on {host}: " + "; ".join(problems))
