"""Human review: flagged verdicts go to a person, whose decision is recorded beside the council's verdict.

    from council.review import ReviewFilter, ReviewStore
    from council.store.db import Store

    desk = ReviewStore(Store("sqlite:///council.db"))
    for item in desk.queue(ReviewFilter(batch_id="claims-2026-11", tags={"risk": "high"})):
        print(item.run_id, item.council_label, [r.condition for r in item.reasons])
    desk.decide(item.run_id, "REFUTED", reviewer="ana", note="the 2019 report says otherwise")

``council review`` is the command line (``council.review.cli``): list the queue, walk through it in the
terminal, decide one run, export a batch's queue to CSV and import the decisions back; ``review_stats``
is the monitoring behind ``council stats``' review table.
"""

from __future__ import annotations

from council.deliberation.flags import REVIEW_CONDITIONS, ReviewReason
from council.store.reviews import REVIEW_LABELS, QueueItem, ReviewDecision, ReviewFilter, ReviewStore, parse_tags

from .csvio import EXPORT_FIELDS, ImportReport, export_queue, import_decisions
from .people import REVIEWER_ENV, reviewer_name
from .stats import PolicyReviewStats, review_stats

__all__ = [
    "EXPORT_FIELDS", "ImportReport", "PolicyReviewStats", "QueueItem", "REVIEWER_ENV", "REVIEW_CONDITIONS",
    "REVIEW_LABELS", "ReviewDecision", "ReviewFilter", "ReviewReason", "ReviewStore", "export_queue",
    "import_decisions", "parse_tags", "review_stats", "reviewer_name",
]
