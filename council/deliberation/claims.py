"""Claim building: what a member's structured answer (``AnswerDraft``) becomes once it is recorded.

A member states an answer and claims; council gives every claim a stable id (a content hash of run,
member and normalised text, so a rebuilt run has the same ids), drops repeats of the same claim within one
answer (case and whitespace insensitive), and ties each claim to the answer and the model that served it.
A member that produced no valid answer becomes a ``MemberFailure`` naming its error and every call it made.
"""

from __future__ import annotations

from council.calls.answers import AnswerDraft, Citation, Claim, MemberAnswer, MemberFailure
from council.calls.records import CallRecord
from council.ids import content_id

__all__ = ["build_answer", "build_failure", "normalize_claim_text"]


def normalize_claim_text(text: str) -> str:
    """The claim's text with runs of whitespace collapsed to one space and the ends trimmed."""
    return " ".join(text.split())


def build_answer(
    *,
    run_id: str,
    member_label: str,
    model: str,
    call_id: str,
    draft: AnswerDraft,
    task: str,
    raw_text: str | None,
    round_: int = 1,
) -> MemberAnswer:
    """The recorded answer of a member: ids assigned, claims normalised and de-duplicated in order.

    ``label`` is kept only for a fact check (``task == "check"``): a question has no label. An answer of a
    revision round (``round_`` 2, 3...) gets claim ids of its own: the same text in a later round is a new
    claim, linked to the earlier one through its answer's ``revised_from``.
    """
    answer_id = content_id(run_id, member_label, call_id)
    claims: list[Claim] = []
    seen: set[str] = set()
    for c in draft.claims:
        text = normalize_claim_text(c.text)
        if text.lower() in seen:
            continue
        seen.add(text.lower())
        claims.append(Claim(
            claim_id=content_id(run_id, member_label, text) if round_ == 1 else content_id(
                run_id, member_label, text, f"round {round_}"), run_id=run_id, answer_id=answer_id,
            member_label=member_label, model=model, text=text, confidence=c.confidence,
            citations=[Citation(**x.model_dump()) for x in c.citations],
        ))
    return MemberAnswer(
        answer_id=answer_id, run_id=run_id, member_label=member_label, model=model, call_id=call_id,
        answer=draft.answer, label=draft.label if task == "check" else None, confidence=draft.confidence,
        claims=claims, raw_text=raw_text or "", round=round_,
    )


def build_failure(
    *,
    run_id: str,
    member_label: str,
    model_requested: str,
    error_kind: str | None,
    reason: str | None,
    records: list[CallRecord],
    raw_text: str | None,
) -> MemberFailure:
    """The failure of a member whose whole fallback chain gave no valid answer."""
    return MemberFailure(
        run_id=run_id, member_label=member_label, model_requested=model_requested,
        error_kind=error_kind or "unknown", reason=reason or "no answer",
        call_ids=[r.call_id for r in records], raw_text=raw_text,
    )
