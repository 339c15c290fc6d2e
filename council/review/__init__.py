"""Human review: flagged verdicts go to a person, whose decision is recorded beside the council's verdict.

    from council.review import ReviewFilter, ReviewStore
    from council.store.db import Store

    desk = ReviewStore(Store("sqlite:///council.db"))
    for item in desk.queue(ReviewFilter(batch_id="claims-2026-11", tags={"risk": "high"})):
        print(item.run_id, item.council_label, [r.condition for r in item.reasons])
    desk.decide(item.run_id, "REFUTED", reviewer="ana", note="the 2019 report says otherwise")

``council review`` is the command line (``council.review.cli``): list the queue, walk through it in the
terminal, decide one run, export a batch's queue to CSV and import the decisions back; ``review_stats``
is the monitoring behind ``council stats``' review table. The names below are imported lazily, so that
the CLI's start-up does not pay for the store.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {
    "REVIEW_CONDITIONS": "council.deliberation.flags", "ReviewReason": "council.deliberation.flags",
    "REVIEW_LABELS": "council.store.reviews", "QueueItem": "council.store.reviews",
    "ReviewDecision": "council.store.reviews", "ReviewFilter": "council.store.reviews",
    "ReviewStore": "council.store.reviews", "parse_tags": "council.store.reviews",
    "EXPORT_FIELDS": "council.review.csvio", "ImportReport": "council.review.csvio",
    "export_queue": "council.review.csvio", "import_decisions": "council.review.csvio",
    "REVIEWER_ENV": "council.review.people", "reviewer_name": "council.review.people",
    "PolicyReviewStats": "council.review.stats", "review_stats": "council.review.stats",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
