"""Score samples: generate them (benchmark x solver, k per problem) or read them from a file, verify each in the
sandbox, and return `Item`s. The CLI around this is `engine/eval.py`.

    items = await generate_and_score(served, benchmarks, solvers, settings)
    items = await score_completions(entries, solvers, settings)

With `by_row=True` each problem (each entry) is scored only under its own solver (`Problem.solver`, `Entry.solver`;
the caller has filled in a default for those naming none) instead of under every solver.

One sandbox pool per distinct preload set (solvers that import the same modules share it). Each
(benchmark, solver) is one generate call with n=k over all its prompts, so the backend batches them; every
completion is verified the moment it arrives, while the rest still decode.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.evaluation.metrics import GENERATION_ERROR, PROMPT_TOO_LONG, Item
from engine.prompts import PromptSettings

if TYPE_CHECKING:
    from sandbox import Isolation
    from solvers import ExtractConfig, RewardConfig


@dataclass(frozen=True, kw_only=True)
class EvalSettings:
    """`prompt`: how prompts are built (a run's, through engine.prompts.prompt_settings, under --config);
    `reward`: the answer rule (None: the default binary reward); `rules`: more answer rules every sample is also
    judged under (`Item.correct_by_rule`); `extract`: which code block is run and the answer format (None: the
    default); `stop_token_ids`: stops besides the tokenizer's end-of-turn token."""

    samples: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 1024
    stop_token_ids: tuple[int, ...] = ()
    prompt: PromptSettings = field(default_factory=lambda: PromptSettings(max_prompt_tokens=4096))
    seed: int = 0
    workers: int = 2
    wall_s: float = 30.0
    memory_mb: int = 2048
    isolation: Isolation = "nsjail"
    reward: RewardConfig | None = None
    rules: tuple[RewardConfig, ...] = ()
    extract: ExtractConfig | None = None
    progress: bool = True

    def judged_rules(self) -> dict[str, RewardConfig]:
        """The primary rule, then the others, by name (`solvers.reward.rule_key`); a repeated name counts once."""
        from solvers import RewardConfig
        from solvers.reward import rule_key

        judged: dict[str, RewardConfig] = {}
        for rule in (self.reward or RewardConfig(), *self.rules):
            judged.setdefault(rule_key(rule), rule)
        return judged


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One sample to score from a completions file: text is model output, or a program when is_code."""

    benchmark: str
    id: str
    sample: int
    text: str
    is_code: bool
    answer: float | None
    solver: str | None = None  # the row's (or its problem's) solver: used with by_row


def _pools_by_preload(solvers: Sequence[Any]) -> dict[tuple[str, ...], list[Any]]:
    groups: dict[tuple[str, ...], list[Any]] = {}
    for solver in solvers:
        groups.setdefault(tuple(solver.preload), []).append(solver)
    return groups


async def _with_pools(
    solvers: Sequence[Any], settings: EvalSettings, work: Callable[[Any, Any], Awaitable[list[Item]]]
) -> list[Item]:
    """Run work(pool, solver) for every solver, opening one sandbox pool per preload set, in solver order."""
    from sandbox import Limits, SandboxPool

    limits = Limits(wall_s=settings.wall_s, cpu_s=settings.wall_s, memory_mb=settings.memory_mb)
    done: dict[str, list[Item]] = {}
    for preload, group in _pools_by_preload(solvers).items():
        pool = SandboxPool(workers=settings.workers, limits=limits, preload=preload, isolation=settings.isolation)
        async with pool:
            for solver in group:
                done[solver.name] = await work(pool, solver)
    return [item for solver in solvers for item in done[solver.name]]


def _bar(total: int, desc: str, settings: EvalSettings) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="sample", file=sys.stderr, disable=not settings.progress, leave=False)


async def _verify(pool: Any, solver: Any, text: str, answer: float | None, *, is_code: bool, settings: EvalSettings):
    from solvers import verify, verify_code

    if is_code:
        return await verify_code(pool, text, solver, answer, reward=settings.reward)
    return await verify(pool, text, solver, answer, reward=settings.reward, extract=settings.extract)


async def score_completions(
    entries: Sequence[Entry], solvers: Sequence[Any], settings: EvalSettings, *, by_row: bool = False
) -> list[Item]:
    """Verify existing completions/programs under every solver (`by_row`: each under its own); items keep the
    entries' order per solver."""

    rules = settings.judged_rules()

    async def work(pool: Any, solver: Any) -> list[Item]:
        mine = [e for e in entries if e.solver == solver.name] if by_row else entries
        with _bar(len(mine), f"verify[{solver.name}]", settings) as bar:

            async def one(entry: Entry) -> Item:
                text, answer = entry.text, entry.answer
                outcome = await _verify(pool, solver, text, answer, is_code=entry.is_code, settings=settings)
                bar.update(1)
                return _item(
                    entry.benchmark, entry.id, solver.name, entry.sample, entry.answer, entry.text, outcome, rules
                )

            return list(await asyncio.gather(*(one(e) for e in mine)))

    return await _with_pools(solvers, settings, work)


def _item(
    benchmark: str,
    id: str,
    solver: str,
    sample: int,
    answer: float | None,
    text: str,
    outcome: Any,
    rules: Mapping[str, RewardConfig],
    finish_reason: str | None = None,
) -> Item:
    """The item of a verified sample, judged under every rule in `rules` (primary first) from its one outcome."""
    from solvers.reward import correct_under

    return Item(
        benchmark=benchmark,
        id=id,
        solver=solver,
        sample=sample,
        status=outcome.status,
        objective=outcome.objective,
        answer=answer,
        correct=outcome.correct,
        reward=outcome.reward,
        reason=outcome.reason,
        completion=text,
        finish_reason=finish_reason,
        error_kind=outcome.error_kind,
        correct_by_rule={
            key: correct_under(outcome.status, outcome.objective, answer, rule) for key, rule in rules.items()
        },
    )


def _unscored(
    benchmark: str, problem: Any, solver: str, sample: int, status: str, reason: str, rules: Iterable[str]
) -> Item:
    """A sample that never reached the verifier: wrong under every rule; a generation failure is infrastructure."""
    return Item(
        benchmark=benchmark,
        id=problem.id,
        solver=solver,
        sample=sample,
        status=status,
        objective=None,
        answer=problem.answer,
        correct=False,
        reward=0.0,
        reason=reason,
        completion="",
        error_kind="infrastructure" if status == GENERATION_ERROR else status,
        correct_by_rule=dict.fromkeys(rules, False),
    )


def sampling_params(settings: EvalSettings, tokenizer: Any | None) -> Any:
    """Greedy when temperature is 0; stops at the tokenizer's end-of-turn token besides the model's EOS (and at
    `settings.stop_token_ids`)."""
    from engine.generation import SamplingParams

    stops = set(settings.stop_token_ids)
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        stops.add(int(tokenizer.eos_token_id))
    return SamplingParams(
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        stop_token_ids=tuple(sorted(stops)),
        seed=settings.seed,
    )


class _Prompts:
    """Prompts for one solver: token ids through the chat template, or chat messages (openai chat endpoint)."""

    def __init__(self, tokenizer: Any | None, solver: Any, settings: EvalSettings) -> None:
        from engine.prompts import PromptBuilder

        self.settings = settings.prompt
        self.instructions = solver.instructions
        self.builder = (
            PromptBuilder(tokenizer, instructions=solver.instructions, settings=self.settings)
            if tokenizer is not None
            else None
        )

    def build(self, question: str) -> Any | None:
        from engine.prompts import chat_messages

        if self.builder is not None:
            return self.builder.build(question).ids
        return chat_messages(question, instructions=self.instructions, settings=self.settings)

    def text(self, completion: Any) -> str:
        """What is scored and recorded: the answer prefix (part of the prompt) and the generated text."""
        if self.builder is not None:
            return self.builder.response_text(completion.token_ids, text=completion.text)
        return self.settings.answer_prefix + (completion.text or "")


async def generate_and_score(
    served: Any, benchmarks: Sequence[Any], solvers: Sequence[Any], settings: EvalSettings, *, by_row: bool = False
) -> list[Item]:
    """k samples per problem of every benchmark under every solver's instructions (`by_row`: each problem under
    its own solver's only), each verified on arrival."""
    if served.tokenizer is None and settings.prompt.answer_prefix:
        raise ValueError(
            "an answer prefix needs token-id prompts (a local model or sglang); this backend takes chat messages, "
            "which cannot leave the assistant's turn open after the prefix"
        )
    params = sampling_params(settings, served.tokenizer)

    async def work(pool: Any, solver: Any) -> list[Item]:
        prompts = _Prompts(served.tokenizer, solver, settings)
        items: list[Item] = []
        for benchmark in benchmarks:
            if by_row:
                benchmark = dataclasses.replace(
                    benchmark, problems=tuple(p for p in benchmark.problems if p.solver == solver.name)
                )
                if not benchmark.problems:
                    continue
            items += await _generate_cell(served.backend, pool, solver, benchmark, prompts, params, settings)
        return items

    return await _with_pools(solvers, settings, work)


async def _generate_cell(
    backend: Any, pool: Any, solver: Any, benchmark: Any, prompts: _Prompts, params: Any, settings: EvalSettings
) -> list[Item]:
    k, name, rules = settings.samples, benchmark.name, settings.judged_rules()
    built = [(problem, prompts.build(problem.question)) for problem in benchmark.problems]
    usable = [(problem, prompt) for problem, prompt in built if prompt is not None]
    too_long = f"prompt over {settings.prompt.max_prompt_tokens} tokens"
    items = [
        _unscored(name, problem, solver.name, j, PROMPT_TOO_LONG, too_long, rules)
        for problem, prompt in built
        if prompt is None
        for j in range(k)
    ]
    tasks: list[asyncio.Task[Item]] = []
    with _bar(len(benchmark.problems) * k, f"{name}/{solver.name}", settings) as bar:
        bar.update(len(items))

        async def one(problem: Any, completion: Any) -> Item:
            text = prompts.text(completion)
            if completion.failed:
                item = dataclasses.replace(
                    _unscored(
                        name, problem, solver.name, completion.sample_index, GENERATION_ERROR, completion.error, rules
                    ),
                    completion=text,
                )
            else:
                outcome = await _verify(pool, solver, text, problem.answer, is_code=False, settings=settings)
                item = _item(
                    name,
                    problem.id,
                    solver.name,
                    completion.sample_index,
                    problem.answer,
                    text,
                    outcome,
                    rules,
                    finish_reason=completion.finish_reason,
                )
            bar.update(1)
            return item

        try:
            if usable:
                async for completion in backend.generate([p for _, p in usable], params, n=k):
                    problem = usable[completion.prompt_index][0]
                    tasks.append(asyncio.create_task(one(problem, completion)))
            items += await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
    return _ordered(items, [p.id for p in benchmark.problems])


def _ordered(items: Iterable[Item], ids: Sequence[str]) -> list[Item]:
    rank = {problem_id: i for i, problem_id in enumerate(ids)}
    return sorted(items, key=lambda item: (rank[item.id], item.sample))
