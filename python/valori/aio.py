"""``AsyncValori``: the methods of :class:`valori.Valori` as coroutines.

Each call runs on a worker thread of the event loop's default executor; the database releases
the GIL while it works, so the loop keeps serving other tasks and concurrent calls proceed
together. Results and exceptions are exactly those of :class:`valori.Valori`, in both modes.

>>> from valori import AsyncValori
>>> async def main():                                   # doctest: +SKIP
...     async with AsyncValori(remote="http://127.0.0.1:3000") as db:
...         await db.upsert(["a"], [[0.1, 0.2]], payloads=[{"user_id": "u42"}])
...         return await db.count({"must": [{"key": "user_id", "match": {"value": "u42"}}]})
"""

from __future__ import annotations

import asyncio
import functools
import os
from typing import Any, Callable, Optional, Union

from valori._valori import Valori

__all__ = ["AsyncValori"]

# Methods that are not database calls: kept off the async class.
_SYNC_ONLY = {"close", "mode", "closed"}


def _method_names() -> list:
    return sorted(
        name
        for name in dir(Valori)
        if not name.startswith("_")
        and name not in _SYNC_ONLY
        and callable(getattr(Valori, name))
    )


class AsyncValori:
    """A Valori database for asyncio code: ``AsyncValori(path=...)`` (embedded) or
    ``AsyncValori(remote=url, api_key=..., timeout=..., ca_cert=...)``, with the same arguments,
    methods, results and errors as :class:`valori.Valori`, each method a coroutine."""

    def __init__(
        self,
        path: Union[str, "os.PathLike[str]", None] = None,
        *,
        remote: Optional[str] = None,
        api_key: Optional[str] = None,
        timeout: float = 30.0,
        ca_cert: Union[str, "os.PathLike[str]", None] = None,
        vectors_on_disk: bool = False,
    ) -> None:
        self._db = Valori(
            path,
            remote=remote,
            api_key=api_key,
            timeout=timeout,
            ca_cert=ca_cert,
            vectors_on_disk=vectors_on_disk,
        )

    @classmethod
    def from_sync(cls, db: Valori) -> "AsyncValori":
        """Coroutines over an open :class:`Valori` handle (sharing it: an embedded directory
        can be open once per process). Closing either closes both."""
        if not isinstance(db, Valori):
            raise TypeError(f"from_sync takes a Valori handle, not {type(db).__name__}")
        made = cls.__new__(cls)
        made._db = db
        return made

    @property
    def mode(self) -> str:
        """``"embedded"`` or ``"remote"``."""
        return self._db.mode

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._db.closed

    @property
    def sync(self) -> Valori:
        """The blocking handle these coroutines call."""
        return self._db

    async def close(self) -> None:
        """Closes the handle (the database, in embedded mode). Safe to call twice."""
        await asyncio.get_running_loop().run_in_executor(None, self._db.close)

    async def __aenter__(self) -> "AsyncValori":
        return self

    async def __aexit__(self, *exc: Any) -> bool:
        await self.close()
        return False

    def __repr__(self) -> str:
        return "Async" + repr(self._db)


def _coroutine(name: str) -> Callable[..., Any]:
    method = getattr(Valori, name)

    @functools.wraps(method)
    async def call(self: AsyncValori, *args: Any, **kwargs: Any) -> Any:
        bound = functools.partial(getattr(self._db, name), *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(None, bound)

    return call


for _name in _method_names():
    setattr(AsyncValori, _name, _coroutine(_name))
del _name
