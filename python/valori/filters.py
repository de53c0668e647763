"""Filters in the shapes the agent frameworks use, translated to Valori's filter.

Valori's filter is Qdrant's shape (``{"must": [...], "should": [...], "must_not": [...]}``). The
frameworks speak others; each translation here is exact, and an operator Valori cannot express
raises ``ValueError`` naming it rather than being dropped (a dropped condition would widen the
answer silently).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping

__all__ = ["from_mongo_style", "is_valori_filter"]

_VALORI_KEYS = {"must", "should", "must_not"}


def is_valori_filter(f: Mapping[str, Any]) -> bool:
    """Whether ``f`` is already a Valori filter (only ``must``, ``should``, ``must_not``)."""
    return bool(f) and set(f) <= _VALORI_KEYS


def _field(key: str, op: str, value: Any) -> Dict[str, Any]:
    """One field condition as a Valori filter."""
    if op == "$eq":
        return {"must": [{"key": key, "match": {"value": value}}]}
    if op == "$ne":
        return {"must_not": [{"key": key, "match": {"value": value}}]}
    if op in ("$gt", "$gte", "$lt", "$lte"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"filter {key!r}: {op} compares numbers, got {value!r}")
        return {"must": [{"key": key, "range": {op[1:]: value}}]}
    if op in ("$in", "$nin"):
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError(f"filter {key!r}: {op} takes a non-empty list, got {value!r}")
        matcher = "any" if op == "$in" else "except"
        return {"must": [{"key": key, "match": {matcher: list(value)}}]}
    if op == "$exists":
        if not isinstance(value, bool):
            raise ValueError(f"filter {key!r}: $exists takes true or false, got {value!r}")
        present = {"must_not": [{"is_empty": {"key": key}}]}
        return present if value else {"must": [{"is_empty": {"key": key}}]}
    raise ValueError(
        f"filter {key!r}: operator {op} is not supported "
        "(use $eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $exists, $and, $or, $not)"
    )


def _and(parts: List[Dict[str, Any]]) -> Dict[str, Any]:
    if len(parts) == 1:
        return parts[0]
    return {"must": parts}


def from_mongo_style(f: Mapping[str, Any]) -> Dict[str, Any]:
    """A filter in the dict style LangChain's stores share (``{"user": "u42"}``,
    ``{"year": {"$gte": 2020}}``, ``{"$and": [...]}``, ``{"$or": [...]}``, ``{"$not": {...}}``)
    as a Valori filter. A filter that is already Valori's is returned as it is.

    ``$ne`` and ``$nin`` also match records without the field; ``$exists: True`` means present
    and neither null nor an empty list.
    """
    if not isinstance(f, Mapping):
        raise ValueError(f"a filter is a dict, got {type(f).__name__}")
    if is_valori_filter(f):
        return dict(f)
    parts: List[Dict[str, Any]] = []
    for key, cond in f.items():
        if key == "$and" or key == "$or":
            if not isinstance(cond, (list, tuple)) or not cond:
                raise ValueError(f"filter: {key} takes a non-empty list of filters")
            subs = [from_mongo_style(c) for c in cond]
            parts.append({"must": subs} if key == "$and" else {"should": subs})
        elif key == "$not":
            parts.append({"must_not": [from_mongo_style(cond)]})
        elif key.startswith("$"):
            raise ValueError(f"filter: operator {key} is not supported (use $and, $or, $not)")
        elif isinstance(cond, Mapping) and cond and all(str(k).startswith("$") for k in cond):
            parts.extend(_field(key, op, value) for op, value in cond.items())
        else:
            parts.append(_field(key, "$eq", cond))
    if not parts:
        return {}
    return _and(parts)
