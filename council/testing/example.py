"""The demonstration panel as data: its script (what each scripted member answers), its config, and the
questions it plays. ``council.testing.demo.demo_panel`` starts it; ``python -m council.testing.server
--example`` serves it.

The panel: members ``atlas``, ``borealis`` and ``cirrus`` (three providers), the spare ``dune`` (every
member's single fallback) and the adjudicator ``judge``, with set latencies and catalog prices. They answer
the questions of :data:`DEMO_WORKLOAD` with structured claims (citing :data:`DEMO_SOURCE` where it helps),
and some questions are scripted to go wrong, so that a store filled from the workload has something to
monitor:

- the Great Wall (ask) and Everest (check): ``cirrus`` dissents, the vote cannot settle it, the judge rules;
- boiling water (ask), the Eiffel Tower (check): everyone agrees, the weighted vote settles it;
- Middlemarch (ask): ``borealis`` always fails (HTTP 500) and ``dune`` stands in: a fallback;
- the capital of Australia (ask): ``cirrus`` and ``dune`` are both unavailable (503): a degraded council;
- Pluto (check): ``cirrus``'s first answer ever is malformed JSON (retried), ``borealis``'s first call
  times out (fallback to ``dune``);
- ``atlas`` is rate-limited (429) on a seeded 15% of its calls, on any question: occasional fallbacks.

The judge finds the dissenting claim by the label the shuffled adjudicator prompt gave it (it matches
``C<k> (confidence 0.55...``), so its rulings are right whatever the shuffle. Nothing here runs at import.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DEMO_SOURCE",
    "DEMO_WORKLOAD",
    "EVEREST",
    "GREAT_WALL",
    "demo_config",
    "demo_config_toml",
    "script_config",
    "demo_script",
]

GREAT_WALL = "Is the Great Wall of China visible from low Earth orbit with the naked eye?"
BOILING = "At what temperature does water boil at sea level?"
MIDDLEMARCH = "Who wrote the novel Middlemarch?"
CANBERRA = "What is the capital of Australia?"
EIFFEL = "The Eiffel Tower is in Berlin."
EVEREST = "Mount Everest is the highest mountain above sea level."
PLUTO = "Pluto is classified as a planet by the IAU."

DEMO_SOURCE = """\
The Great Wall of China is a series of fortifications built across northern China over many centuries. \
Its walls are mostly 5 to 8 metres wide.

Astronauts who have flown in low Earth orbit report that the wall cannot be seen with the naked eye from \
there: it is long but very narrow, and its colour matches the land around it. It can be photographed from \
orbit with a telephoto lens.
"""
"""A short source document; its two paragraphs become passages S1 and S2."""

DEMO_WORKLOAD: list[tuple[str, str]] = [
    ("ask", GREAT_WALL),
    ("ask", BOILING),
    ("check", EIFFEL),
    ("ask", MIDDLEMARCH),
    ("check", EVEREST),
    ("ask", CANBERRA),
    ("check", PLUTO),
]
"""(task, question) pairs: ``task`` is ``ask`` (Council.ask) or ``check`` (Council.check)."""

_DISSENT_CONFIDENCE = 0.55
_MAX_CLAIMS = 9  # the most claims one adjudicator prompt can carry here (3 members x 3 claims)


def _claim(text: str, confidence: float, source: str | None = None, quote: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"text": text, "confidence": confidence}
    if source:
        out["citations"] = [{"source_id": source, "quote": quote}]
    return out


def _answer(match: str, answer: str, confidence: float, claims: list[dict[str, Any]],
            label: str | None = None) -> dict[str, Any]:
    content: dict[str, Any] = {"answer": answer, "confidence": confidence, "claims": claims}
    if label:
        content["label"] = label
    return {"match": match, "content": content}


def _majority(name: str, confidence: float) -> list[dict[str, Any]]:
    """The answers of a member that is right on every question (its first claim is always the main one)."""
    c = confidence
    return [
        _answer(GREAT_WALL, "No, it is not visible to the naked eye from low Earth orbit.", c, [
            _claim("The Great Wall is not visible to the naked eye from low Earth orbit.", c, "S2",
                   "the wall cannot be seen with the naked eye"),
            *([_claim("The wall is mostly 5 to 8 metres wide.", c - 0.1, "S1", "mostly 5 to 8 metres wide")]
              if name == "atlas" else
              [_claim("It can be photographed from orbit with a telephoto lens.", c - 0.15, "S2",
                      "photographed from orbit with a telephoto lens")] if name == "borealis" else []),
        ]),
        _answer(BOILING, "Water boils at 100 degrees Celsius at sea level.", c, [
            _claim("Water boils at 100 degrees Celsius at sea level.", c),
        ]),
        _answer(EIFFEL, "Refuted: the Eiffel Tower is in Paris.", c, [
            _claim("The Eiffel Tower is in Paris.", c),
        ], label="REFUTED"),
        _answer(MIDDLEMARCH, "George Eliot wrote Middlemarch.", c, [
            _claim("Middlemarch was written by George Eliot.", c),
            *([_claim("George Eliot was the pen name of Mary Ann Evans.", c - 0.05)] if name == "atlas" else []),
        ]),
        _answer(EVEREST, "Supported: Everest is the highest mountain above sea level.", c, [
            _claim("Mount Everest is the highest mountain above sea level.", c),
        ], label="SUPPORTED"),
        _answer(CANBERRA, "Canberra is the capital of Australia.", c, [
            _claim("Canberra is the capital of Australia.", c),
            *([_claim("Sydney is the largest city of Australia.", c - 0.1)] if name == "borealis" else []),
        ]),
        _answer(PLUTO, "Refuted: the IAU classifies Pluto as a dwarf planet.", c, [
            _claim("The IAU classifies Pluto as a dwarf planet.", c),
        ], label="REFUTED"),
    ]


def _cirrus() -> list[dict[str, Any]]:
    """Right on most questions, but dissents on the Great Wall and on Everest (with low confidence)."""
    d = _DISSENT_CONFIDENCE
    right = {a["match"]: a for a in _majority("cirrus", 0.8)}
    right[GREAT_WALL] = _answer(GREAT_WALL, "Yes, it can be seen from orbit.", d, [
        _claim("The Great Wall is visible to the naked eye from low Earth orbit.", d, "S2",
               "the wall is easily seen from orbit"),
    ])
    right[EVEREST] = _answer(EVEREST, "Refuted: another peak is higher.", d, [
        _claim("Mount Everest is not the highest mountain above sea level.", d),
    ], label="REFUTED")
    # After its malformed first answer on Pluto, cirrus is asked to repair it: the repair request's last
    # user message is council's correction, not the question.
    repair = dict(right[PLUTO], match="Reply again with only the JSON object")
    return [*right.values(), repair]


def _revisions(name: str) -> list[dict[str, Any]]:
    """Replies in revision rounds (recipe ``revise``): cirrus gives up its Great Wall and Everest dissents in
    round 2 (two members and the cited passage say otherwise); every other reply is ``hold``."""
    hold = {"match": "Revision round", "content": {"decision": "hold", "reason": "The other claims do not change it."}}
    if name != "cirrus":
        return [hold]
    wall = "The Great Wall is not visible to the naked eye from low Earth orbit."
    everest = "Mount Everest is the highest mountain above sea level."
    return [
        {"match": f"{GREAT_WALL}\nRevision round 2.", "content": {
            "decision": "revise", "reason": "Most members, and the passage they quote, say it cannot be seen.",
            "answer": "No, it is not visible to the naked eye from low Earth orbit.", "confidence": 0.7,
            "claims": [_claim(wall, 0.7, "S2", "the wall cannot be seen with the naked eye")]}},
        {"match": f"{EVEREST}\nRevision round 2.", "content": {
            "decision": "revise", "reason": "I named no higher peak; the others are right.",
            "answer": "Supported: Everest is the highest mountain above sea level.", "label": "SUPPORTED",
            "confidence": 0.7, "claims": [_claim(everest, 0.7)]}},
        hold,
    ]


def _ruling(answer: str, supported: list[str], contradicted: list[str], rulings: list[dict[str, str]],
            label: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"answer": answer, "confidence": 0.85, "supported": supported,
                           "contradicted": contradicted, "rationale": "Most members and the evidence agree.",
                           "rulings": rulings}
    if label:
        out["label"] = label
    return out


def _judge() -> list[dict[str, Any]]:
    """Rulings keyed on the prompt label of cirrus's dissenting claim. Clusters to rule on are labelled in
    order of first appearance, and every member's first claim is its main one, so the dissent's cluster is
    K1 exactly when the dissent is C1. A scripted answer matches one substring: the dissent's label, its
    confidence and evidence note, and its text, as the adjudicator prompt prints them."""
    from council.deliberation.adjudication import datamark  # the claims' text as the adjudicator is shown it

    out = []
    for dissent, evidence, verdict, label in (
        ("The Great Wall is visible to the naked eye", "; 0 of 1 citations verified",
         "No: the Great Wall is not visible to the naked eye from low Earth orbit.", None),
        ("Mount Everest is not the highest", "",
         "Supported: Mount Everest is the highest mountain above sea level.", "SUPPORTED"),
    ):
        for k in range(1, _MAX_CLAIMS + 1):
            first = k == 1
            rulings = [
                {"cluster": "K1", "decision": "reject" if first else "accept",
                 "rationale": "Contradicted by the other members." if first else "Stated by most members."},
                {"cluster": "K2", "decision": "accept" if first else "reject",
                 "rationale": "Stated by most members." if first else "Contradicted by the other members."},
            ]
            others = [f"C{j}" for j in range(1, _MAX_CLAIMS + 1) if j != k]
            out.append({"match": f"C{k} (confidence {_DISSENT_CONFIDENCE:.2f}{evidence}): {datamark(dissent)}",
                        "content": _ruling(verdict, others, [f"C{k}"], rulings, label)})
    out.append({"match": "", "content": _ruling("The members' answers could not be reconciled.", [], [], [])})
    return out


def demo_script(seed: int = 7) -> dict[str, Any]:
    """The script of the demonstration panel (see the module docstring), as a dict for ScriptedServer."""
    return {
        "seed": seed,
        "models": {
            "atlas": {"latency": 0.30, "answers": [*_revisions("atlas"), *_majority("atlas", 0.9)],
                      "faults": [{"kind": "429", "rate": 0.15}]},
            "borealis": {"latency": 0.15, "timeout_sleep": 6.0, "answers": [*_revisions("borealis"), *_majority("borealis", 0.85)],
                         "faults": [{"kind": "500", "rate": 1.0, "match": "Middlemarch"},
                                    {"kind": "timeout", "attempts": [1], "match": "Pluto"}]},
            "cirrus": {"latency": 0.08, "answers": [*_revisions("cirrus"), *_cirrus()],
                       "faults": [{"kind": "503", "rate": 1.0, "match": "Australia"},
                                  {"kind": "malformed_json", "attempts": [1], "match": "Pluto"}]},
            "dune": {"latency": 0.22, "answers": [*_revisions("dune"), *_majority("dune", 0.75)],
                     "faults": [{"kind": "503", "rate": 1.0, "match": "Australia"}]},
            "judge": {"latency": 0.25, "answers": _judge()},
        },
    }


def demo_config(base_url: str, database: str | None = None) -> dict[str, Any]:
    """Config tables (as a TOML file would hold them) for the demonstration panel served at ``base_url``.

    Every member falls back to ``dune`` only (``max_fallbacks = 1``), so a member whose first choice and
    ``dune`` both fail is missing from the verdict. ``database``: a SQLAlchemy URL (None: no database key,
    so the default store is used)."""
    def entry(name: str, quality: float, price_in: float, price_out: float, provider: str) -> dict[str, Any]:
        return {"model": f"openai/{name}", "api_base": base_url, "quality": quality, "provider": provider,
                "input_usd_per_mtok": price_in, "output_usd_per_mtok": price_out}

    members = ["atlas", "borealis", "cirrus", "dune"]
    member_policy = {"allowed_models": members, "max_fallbacks": 1, "timeout_s": 2.5}
    tables: dict[str, Any] = {
        "models": {
            "atlas": entry("atlas", 85, 2.5, 10.0, "atlas-ai"),
            "borealis": entry("borealis", 75, 0.6, 2.4, "borealis-labs"),
            "cirrus": entry("cirrus", 60, 0.15, 0.6, "cirrus-inc"),
            "dune": entry("dune", 50, 0.3, 1.2, "dune-co"),
            "judge": entry("judge", 90, 3.0, 15.0, "judge-corp"),
        },
        "policies": {
            "research": dict(member_policy),
            "fact_check": dict(member_policy),
            "adjudication": {"allowed_models": ["judge"], "timeout_s": 10.0},
        },
    }
    if database is not None:
        tables["database"] = database
    return tables


def _toml_value(v: Any) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def script_config(models: list[str], base_url: str, adjudicator: str, database: str | None = None) -> dict[str, Any]:
    """Config tables for any script served at ``base_url``: every model is a catalog entry (price 0),
    ``adjudicator`` is the adjudication policy's only model and the others are the members (a panel of up
    to three, quorum up to two). ValueError when ``adjudicator`` is not one of ``models`` or no member is left."""
    if adjudicator not in models:
        raise ValueError(f"the adjudicator {adjudicator!r} is not a model of the script ({', '.join(models)})")
    members = [m for m in models if m != adjudicator]
    if not members:
        raise ValueError("the script needs at least one member besides the adjudicator")
    entry = (lambda name: {"model": f"openai/{name}", "api_base": base_url, "provider": f"scripted-{name}",
                           "input_usd_per_mtok": 0.0, "output_usd_per_mtok": 0.0})
    member_policy = {"allowed_models": members, "panel_size": min(3, len(members)), "quorum": min(2, len(members))}
    tables: dict[str, Any] = {
        "models": {name: entry(name) for name in models},
        "policies": {"research": dict(member_policy), "fact_check": dict(member_policy),
                     "adjudication": {"allowed_models": [adjudicator]}},
    }
    if database is not None:
        tables = {"database": database, **tables}
    return tables


def demo_config_toml(base_url: str, database: str | None = None, tables: dict[str, Any] | None = None) -> str:
    """:func:`demo_config` (or the given ``tables``) as the text of a config file: what ``python -m
    council.testing.server --write-config FILE`` writes. ``database`` may be a relative path: relative to
    the config file."""
    tables = tables if tables is not None else demo_config(base_url, database)
    lines = ["# A config for the scripted server (python -m council.testing.server): no API key needed.",
             "# Point the models' api_base at real OpenAI-compatible servers, or replace them, for real work."]
    lines += [f"{k} = {_toml_value(v)}" for k, v in tables.items() if not isinstance(v, dict)]
    for section in ("models", "policies"):
        for name, table in tables[section].items():
            lines.append(f"\n[{section}.{name}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"
