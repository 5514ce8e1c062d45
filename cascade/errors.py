"""User-facing errors: the CLI prints the message (no traceback) and exits 2."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class CascadeError(Exception):
    """Bad input the user can fix: a policy, a prompt, a plugin, a model path, a store URL."""


class PolicyError(CascadeError):
    """A policy file that does not validate; the message names the field and the fix."""


class RequestError(CascadeError):
    """A request's setting the engine cannot serve (`Engine.request_row`); `field` names it: prompt,
    max_new_tokens, params, rule or speculate."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class PluginError(CascadeError):
    """A plugin that fails to load, registers a duplicate name, or raises while building."""


@contextlib.contextmanager
def plugin_errors(what: str) -> Iterator[None]:
    """Let CascadeErrors through; wrap anything else a plugin raises as a PluginError saying `what`."""
    try:
        yield
    except CascadeError:
        raise
    except Exception as exc:
        raise PluginError(f"{what}: {type(exc).__name__}: {exc}") from exc
