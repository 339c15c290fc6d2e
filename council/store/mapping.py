"""The one mapping between the contracts and their rows: claims, answers, member failures, call records.

The shared fields are declared once (``ClaimFields``, ``AnswerFields``, ``FailureFields``,
``CallRecordFields``); what differs between a contract and its row (a claim's citations and position, a
failure's call ids) is converted here and nowhere else. Rows may be ORM objects or Core result rows.
"""

from __future__ import annotations

import json
from typing import Any

from council.calls.answers import AnswerFields, Citation, Claim, ClaimFields, FailureFields, MemberAnswer, MemberFailure
from council.calls.records import CallRecord

__all__ = [
    "answer_from_row", "answer_values", "call_from_row", "claim_from_row", "claim_values", "failure_from_row",
    "failure_values",
]

_CLAIM = frozenset(ClaimFields.model_fields)
_ANSWER = frozenset(AnswerFields.model_fields)
_FAILURE = frozenset(FailureFields.model_fields)


def _values(row: Any) -> dict[str, Any]:
    mapping = getattr(row, "_mapping", None)  # a Core row
    return dict(mapping) if mapping is not None else row.model_dump()


def claim_values(claim: Claim, position: int) -> dict[str, Any]:
    """The ``claims`` row of ``claim``, stated at ``position`` in its answer."""
    return {**claim.model_dump(include=_CLAIM), "position": position,
            "citations_json": json.dumps([c.model_dump() for c in claim.citations])}


def claim_from_row(row: Any) -> Claim:
    v = _values(row)
    return Claim(**{k: v[k] for k in _CLAIM if k in v},
                 citations=[Citation(**c) for c in json.loads(v.get("citations_json") or "[]")])


def answer_values(answer: MemberAnswer) -> dict[str, Any]:
    """The ``answers`` row of ``answer`` (its claims are rows of their own)."""
    return answer.model_dump(include=_ANSWER)


def answer_from_row(row: Any, claims: list[Claim]) -> MemberAnswer:
    v = _values(row)
    return MemberAnswer(**{k: v[k] for k in _ANSWER if k in v}, claims=claims)


def failure_values(failure: MemberFailure) -> dict[str, Any]:
    return {**failure.model_dump(include=_FAILURE), "call_ids_json": json.dumps(failure.call_ids)}


def failure_from_row(row: Any) -> MemberFailure:
    v = _values(row)
    return MemberFailure(**{k: v[k] for k in _FAILURE if k in v}, call_ids=json.loads(v.get("call_ids_json") or "[]"))


def call_from_row(row: Any) -> CallRecord:
    v = _values(row)
    return CallRecord(**{k: v[k] for k in CallRecord.model_fields if k in v})
