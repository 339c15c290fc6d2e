"""Tracing a claim through a stored run's provenance graph, and drawing the graph.

One run of the demonstration panel (``council.testing.demo``) with a source document, over loopback: the
graph is rebuilt from the database by a fresh Store, as for a run from yesterday.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from council import Council, Store  # noqa: E402
from council.errors import InputError  # noqa: E402
from council.provenance.graph import ClaimTrace, build_graph, draw, trace_claim  # noqa: E402
from council.provenance.drawing import KIND_COLUMNS, layout  # noqa: E402
from council.testing.demo import DEMO_SOURCE, GREAT_WALL, demo_panel  # noqa: E402


class Built:
    def __init__(self, run: Any, graph: Any) -> None:
        self.run, self.graph = run, graph

    def claim(self, model: str) -> str:
        return next(c.claim_id for a in self.run.answers if a.model == model for c in a.claims)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    db = f"sqlite:///{tmp_path_factory.mktemp('trace') / 'trace.db'}"
    srv, config = demo_panel(db)
    try:
        run_id = Council(config).ask(GREAT_WALL, sources=[DEMO_SOURCE]).run_id
    finally:
        srv.stop()
    run = Store(db).load_run(run_id)
    yield Built(run, build_graph(run))


def test_trace_of_a_supporting_claim(built: Built) -> None:
    claim_id = built.claim("atlas")
    trace = trace_claim(built.graph, claim_id)
    assert isinstance(trace, ClaimTrace)
    assert trace.claim == f"claim:{claim_id}" and trace.member_label == "A"
    assert trace.text == "The Great Wall is not visible to the naked eye from low Earth orbit."
    answer = next(a for a in built.run.answers if a.model == "atlas")
    assert trace.answer == f"answer:{answer.answer_id}"
    assert trace.call == f"call:{answer.call_id}"
    assert trace.model == "model:atlas"
    assert trace.policy == f"policy:{built.run.member_policy.ref}"
    assert trace.run == f"run:{built.run.run_id}"
    assert trace.path == [trace.claim, trace.answer, trace.call, trace.model, trace.policy]
    # the billing record, typed, equals the stored call record
    stored = next(c for c in built.run.calls if c.call_id == answer.call_id)
    assert trace.call_record.model_dump(exclude={"started_at", "finished_at"}) == stored.model_dump(
        exclude={"started_at", "finished_at"})
    assert trace.call_record.started_at == stored.started_at
    # evidence: passage S2 of the source, quote verified
    [cited] = trace.passages
    assert (cited.passage_id, cited.verified, cited.source_title) == ("S2", True, "text 1")
    assert cited.quote == "the wall cannot be seen with the naked eye"
    assert cited.quote in cited.text
    assert trace.cluster_status == "accepted"
    assert trace.verdict == f"verdict:{built.run.verdict.verdict_id}" and trace.verdict_relation == "supported_by"
    relations = [e.relation for e in trace.edges]
    assert relations == ["stated_in", "generated_by", "used", "governed_by", "part_of", "cites", "part_of",
                         "member_of", "supported_by"]
    for e in trace.edges:  # every edge walked is an edge of the graph, in its direction
        assert any(d.get("relation") == e.relation for d in built.graph.get_edge_data(e.source, e.target).values())


def test_trace_of_the_dissent(built: Built) -> None:
    trace = trace_claim(built.graph, built.claim("cirrus"))
    assert trace.model == "model:cirrus"
    assert [p.verified for p in trace.passages] == [False]  # its quote is not in S2
    assert trace.cluster_status == "rejected"
    assert trace.verdict_relation == "contradicted_by"
    text = trace.describe()
    assert "NOT verified" in text and "contradicted_by" in text and str(trace) == text


def test_trace_accepts_prefixes_and_node_ids(built: Built) -> None:
    claim_id = built.claim("borealis")
    full = trace_claim(built.graph, claim_id)
    assert trace_claim(built.graph, claim_id[:6]) == full
    assert trace_claim(built.graph, f"claim:{claim_id}") == full
    with pytest.raises(InputError, match="no claim 'nope'"):
        trace_claim(built.graph, "nope")
    with pytest.raises(InputError, match="ambiguous"):
        trace_claim(built.graph, "")


def test_trace_frame(built: Built) -> None:
    trace = trace_claim(built.graph, built.claim("atlas"))
    frame = trace.frame()
    assert list(frame.columns) == ["source", "relation", "target"]
    assert list(frame.relation) == [e.relation for e in trace.edges]


def test_layout_puts_kinds_in_columns_left_to_right(built: Built) -> None:
    pos = layout(built.graph)
    assert set(pos) == set(built.graph.nodes)
    x_of: dict[str, set[float]] = {}
    for node, (x, _) in pos.items():
        x_of.setdefault(built.graph.nodes[node]["kind"], set()).add(x)
    assert all(len(xs) == 1 for xs in x_of.values())
    order = sorted(x_of, key=lambda k: next(iter(x_of[k])))
    assert order == sorted(x_of, key=KIND_COLUMNS.__getitem__)
    assert order[:4] == ["Run", "Policy", "Model", "Call"] and order[-2:] == ["Cluster", "Verdict"]
    no_run = layout(built.graph, kinds=[k for k in KIND_COLUMNS if k != "Run"])
    assert not any(n.startswith("run:") for n in no_run)
    assert min(x for x, _ in no_run.values()) == 0.0  # columns compacted


def test_draw_colours_kinds_and_highlights_a_trace(built: Built, tmp_path: Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    trace = trace_claim(built.graph, built.claim("atlas"))
    fig, ax = plt.subplots()
    assert draw(built.graph, ax=ax, highlight=trace) is ax
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == sorted({k for _, k in built.graph.nodes(data="kind")}, key=KIND_COLUMNS.__getitem__)
    red = [p for p in ax.patches if to_hex(p.get_edgecolor()) == "#d62728"]  # highlighted arrows
    assert len(red) == len({(e.source, e.target) for e in trace.edges})
    fig.savefig(tmp_path / "graph.png")
    assert (tmp_path / "graph.png").stat().st_size > 10_000
    plt.close(fig)
    ax2 = draw(built.graph, kinds=["Claim", "Cluster", "Verdict"], labels=False, legend=False, title="claims")
    assert ax2.get_title() == "claims" and ax2.get_legend() is None
    plt.close(ax2.figure)
