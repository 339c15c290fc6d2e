"""Councils run by the service: one ``Council`` per recipe, runs as asyncio tasks, and the names under which
recipes and policies are offered as OpenAI models (``council/<recipe>``, ``council/<policy>``).

A run started over HTTP goes through exactly the path of ``council ask``: the same ``Council`` class, the
same config (so the same per-run budget), the same store and call records. Only its id is chosen before it
starts, so the caller can follow it at once. Sources arrive as text: the service never reads a path that a
request names.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

from council.config.resources import data_dir
from council.deliberation.sources import Source
from council.errors import CouncilError, InputError
from council.store.db import Store
from .contracts import SourceIn
from .settings import ServeSettings

__all__ = ["Busy", "ModelChoice", "RunManager", "recipe_names"]


class Busy(CouncilError):
    """The service already runs as many councils as it may (HTTP 429)."""


class ModelChoice(BaseModel):
    """What an OpenAI model name stands for."""

    name: str
    """``council/<recipe>`` or ``council/<policy>``."""
    recipe: str
    task: Literal["ask", "check"]
    description: str


def recipe_names() -> list[str]:
    """The shipped deliberation recipes (graphs/*.toml except the policy table)."""
    return sorted(p.stem for p in data_dir("graphs").glob("*.toml") if p.stem != "policies")


class RunManager:
    """Starts councils in the service's event loop and keeps each run's task until it ends."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self._councils: dict[str, Any] = {}
        self._compile_lock = asyncio.Lock()
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self.errors: dict[str, str] = {}
        """Run id -> why it failed before or while running (public message), for runs that raised."""
        self._store: Store | None = None

    def council(self, recipe: str) -> Any:
        """The service's Council for ``recipe`` (created on first use; ConfigError for an unknown recipe)."""
        if recipe not in self._councils:
            if recipe not in recipe_names():
                raise InputError(f"unknown recipe {recipe!r}: available {', '.join(recipe_names())}")
            from council.pipeline.engine import Council

            self._councils[recipe] = Council(self.settings.config, db=self.settings.db, recipe=recipe)
        return self._councils[recipe]

    @property
    def store(self) -> Store:
        """The store every council of the service writes to."""
        if self._store is None:
            self._store = self.council("council").store
        return self._store

    def models(self) -> list[ModelChoice]:
        """Every model name the OpenAI endpoint accepts."""
        out: list[ModelChoice] = []
        default = self.council("council").recipe
        for task, t in sorted(default.tasks.items()):
            if task in ("ask", "check"):
                out.append(ModelChoice(name=f"council/{t.member_policy}", recipe="council", task=task,  # type: ignore[arg-type]
                                       description=f"the {task} task of recipe council (policy {t.member_policy})"))
        for name in recipe_names():
            if f"council/{name}" not in {m.name for m in out}:
                out.append(ModelChoice(name=f"council/{name}", recipe=name, task="ask", description=f"recipe {name}, ask"))
        return out

    def resolve(self, model: str) -> ModelChoice:
        """The recipe and task of an OpenAI model name (InputError naming the choices when unknown)."""
        choices = self.models()
        for m in choices:
            if m.name == model:
                return m
        raise InputError(f"unknown model {model!r}: use one of {', '.join(m.name for m in choices)}")

    def check_input(self, question: str, sources: list[SourceIn]) -> list[Source]:
        """Apply the service's limits; return the sources as the engine takes them."""
        s = self.settings
        if not question.strip():
            raise InputError("the question is empty")
        if len(question) > s.max_question_chars:
            raise InputError(f"the question is {len(question)} characters long; the limit is {s.max_question_chars}")
        if len(sources) > s.max_sources:
            raise InputError(f"{len(sources)} sources given; the limit is {s.max_sources}")
        out = []
        for i, src in enumerate(sources, start=1):
            if len(src.text) > s.max_source_chars:
                raise InputError(f"source {i} is {len(src.text)} characters long; the limit is {s.max_source_chars}")
            if not src.text.strip():
                raise InputError(f"source {i} is empty")
            out.append(Source(source_id=hashlib.sha256(src.text.encode()).hexdigest()[:16],
                              title=src.title or f"text {i}", text=src.text))
        return out

    def starting(self, run_id: str) -> bool:
        """True while a run started by this service is still going (it may not be in the store yet)."""
        job = self._tasks.get(run_id)
        return job is not None and not job.done()

    def running(self) -> int:
        return sum(1 for t in self._tasks.values() if not t.done())

    async def start(self, task: Literal["ask", "check"], question: str, recipe: str,
                    sources: list[SourceIn]) -> tuple[str, asyncio.Task[Any]]:
        """Start a council; return its run id and task (which raises what the run raised)."""
        from council.pipeline.graph import RunRequest

        checked = self.check_input(question, sources)
        if self.running() >= self.settings.max_concurrent_runs:
            raise Busy(f"{self.running()} councils are running, the most this service runs at once: retry later")
        council = self.council(recipe)
        async with self._compile_lock:  # compile once, not once per concurrent first request
            await council.prepare()
        request = RunRequest(run_id=uuid.uuid4().hex, task=task, question=question.strip(), sources=checked,
                             created_at=datetime.now(UTC))
        job = asyncio.create_task(self._run(council, request), name=f"council-run-{request.run_id}")
        self._tasks[request.run_id] = job
        job.add_done_callback(lambda t: t.cancelled() or t.exception())  # the error is kept in self.errors
        return request.run_id, job

    async def _run(self, council: Any, request: Any) -> str:
        try:
            await council.arun_request(request)
        except CouncilError as exc:
            self.errors[request.run_id] = str(exc)
            raise
        except Exception as exc:
            self.errors[request.run_id] = f"the run failed: {type(exc).__name__}"
            raise
        finally:
            self._tasks.pop(request.run_id, None)
        return request.run_id

    async def opened(self, run_id: str, job: asyncio.Task[Any], timeout_s: float = 30.0) -> None:
        """Wait until the run is in the store (or ended): errors found while planning it (no qualified
        model, budget) are raised here, so a request that cannot run is answered with its reason."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if job.done():
                if job.exception() is not None:
                    raise job.exception()  # type: ignore[misc]
                return
            if await asyncio.to_thread(self._exists, run_id):
                return
            await asyncio.sleep(0.05)

    def _exists(self, run_id: str) -> bool:
        from sqlmodel import Session

        from council.store.tables import RunRow

        with Session(self.store.engine) as s:
            return s.get(RunRow, run_id) is not None

    async def close(self) -> None:
        """Cancel the runs still going (each is marked failed, its pending calls interrupted)."""
        tasks = [t for t in self._tasks.values() if not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


