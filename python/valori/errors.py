"""Exceptions raised by :class:`valori.Valori`.

Every error is a :class:`ValoriError` carrying the node's message and its stable machine-readable
``code`` (for example ``"dimension_mismatch"`` or ``"not_found"``). The subclasses also derive from
the matching built-in exception, so ``except ValueError`` catches refused input and the built-in
``except ConnectionError`` catches an unreachable server. Embedded and remote mode raise the same
class with the same code and message for the same mistake.

The connection error is :class:`ValoriConnectionError`, so that ``from valori import *`` leaves
the built-in ``ConnectionError`` alone; ``valori.errors.ConnectionError`` still names it for code
written before.
"""

from __future__ import annotations

import builtins

__all__ = [
    "ValoriError",
    "InvalidInputError",
    "NotFoundError",
    "UnauthorizedError",
    "ForbiddenError",
    "ValoriConnectionError",
]


class ValoriError(Exception):
    """Base class of every Valori error.

    Raised as itself for failures that are not the caller's input: a node whose storage failed,
    a write sent to a read-only follower (``code == "read_only_follower"``), a closed handle
    (``code == "closed"``).
    """

    code: str = "error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        """The error's message (as the node words it)."""
        return str(self.args[0]) if self.args else ""


class InvalidInputError(ValoriError, ValueError):
    """The input was refused and nothing changed: wrong dimension, NaN or infinity, a value
    outside the Q16.16 range, oversized metadata, an unknown metric, an existing collection..."""


class NotFoundError(ValoriError, LookupError):
    """An unknown collection, record, graph node, edge or snapshot."""


class UnauthorizedError(ValoriError, PermissionError):
    """No API key, or a wrong one (HTTP 401, remote mode)."""


class ForbiddenError(ValoriError, PermissionError):
    """A read-only key used for a write or an admin operation (HTTP 403, remote mode)."""


class ValoriConnectionError(ValoriError, builtins.ConnectionError):
    """The node could not be reached or did not answer in time (remote mode)."""


# The name this class had before; not exported by ``from valori import *``.
ConnectionError = ValoriConnectionError
