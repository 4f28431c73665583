"""Prompts for the policy: the solver's instructions and the problem, in the model's chat template, as token ids.

    prompts = PromptBuilder(tokenizer, instructions=get_solver("gurobipy").instructions,
                            settings=prompt_settings(cfg.data))   # or PromptSettings(max_prompt_tokens=1024)
    prompt = prompts.build(problem.question)
    prompt.ids          # token ids for the generation backend, or None when the prompt was skipped
    prompt.status       # "ok" | "truncated" | "too_long" (counted in the rollout's metrics)
    prompts.response_text(completion.token_ids)   # what the verifier scores: answer_prefix + the decoded response

The conversation is: an optional system message; an optional worked example on another problem (`example`: a
user turn with the same template and instructions as a real question, then an assistant turn with the example's
answer); the user turn with the problem. The chat template renders it to text ending with the assistant turn's
opening, `answer_prefix` (a fixed opening of the answer, the same for every problem) is appended, and the whole
string is tokenized without adding special tokens, because chat templates write their own BOS / role markers.
The prefix is part of the prompt (the learner does not train on it), so everything that scores or records a
completion uses `response_text`, which puts it back in front of the generated text.

A prompt over `max_prompt_tokens` is skipped by default; with `overlong="truncate"` the question is cut from its
end until the rendered prompt fits (the instructions, the example and the prefix are kept whole, since without
them no answer can be verified or the scaffolding is lost).

The answer format (`answer_format`, from the run's `solver.extract.format`): with "think-code" (EVOM's) the
instructions end with `THINK_CODE_FORMAT`, which asks for the reasoning in `<think>...</think>` and then the
program in `<code>...</code>`; extraction and the format reward follow the same format (solvers.extract). With
"markdown" (the default) nothing is added.

Problems of several solvers in one run: `solver_instructions` maps each solver name to its instructions, and
`build(question, solver=name)` uses that solver's (`solver=None`: the default `instructions`); the rollout passes
each problem's `solver`. A name without instructions is a KeyError: the run lists every solver its data names.

Training (engine.train) and evaluation (engine.eval --config) build their settings with `prompt_settings`, so a
model is evaluated on the prompts it was trained on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from engine.config import DataConfig

PromptStatus = Literal["ok", "truncated", "too_long"]
AnswerFormat = Literal["markdown", "think-code"]
DEFAULT_TEMPLATE = "{instructions}\n\nProblem:\n{question}"
THINK_CODE_FORMAT = (
    "Answer in this format: first reason about the problem inside <think> and </think>; then, after </think>, "
    "give the complete program inside <code> and </code>, once."
)


@dataclass(frozen=True, kw_only=True)
class ExampleConfig:
    """A one-shot worked example on another problem, shown as a previous chat turn: the user asks `question`
    (under the same template and instructions as a real problem) and the assistant answers `answer`, its full
    text (for example a fenced program)."""

    question: str
    answer: str

    def __post_init__(self) -> None:
        for name in ("question", "answer"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"ExampleConfig.{name} must be non-empty text, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class PromptSettings:
    """How prompts are built. `template` joins the solver's instructions and the question."""

    max_prompt_tokens: int
    overlong: Literal["skip", "truncate"] = "skip"
    template: str = DEFAULT_TEMPLATE
    system: str | None = None  # a system message, for templates that take one
    example: ExampleConfig | None = None  # a worked example on another problem, as a previous chat turn
    answer_prefix: str = ""  # appended after the template's generation prompt: the answer's fixed opening
    answer_format: AnswerFormat = "markdown"  # "think-code": the instructions ask for <think> then <code>

    def __post_init__(self) -> None:
        if self.answer_format not in ("markdown", "think-code"):
            raise ValueError(
                f"PromptSettings.answer_format must be 'markdown' or 'think-code', got {self.answer_format!r}"
            )
        if self.max_prompt_tokens < 1:
            raise ValueError(f"PromptSettings.max_prompt_tokens must be >= 1, got {self.max_prompt_tokens}")
        if self.overlong not in ("skip", "truncate"):
            raise ValueError(f"PromptSettings.overlong must be 'skip' or 'truncate', got {self.overlong!r}")
        if "{question}" not in self.template:
            raise ValueError("PromptSettings.template must contain '{question}' (and usually '{instructions}')")
        try:
            self.template.format(instructions="", question="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"PromptSettings.template may use only {{instructions}} and {{question}} (write a literal brace as "
                f"{{{{ or }}}}); {self.template!r} fails: {type(exc).__name__}: {exc}"
            ) from None
        if self.example is not None and not isinstance(self.example, ExampleConfig):
            raise ValueError(f"PromptSettings.example must be an ExampleConfig or None, got {self.example!r}")


@dataclass(frozen=True, kw_only=True)
class Prompt:
    ids: tuple[int, ...] | None
    status: PromptStatus

    @property
    def usable(self) -> bool:
        return self.ids is not None


class PromptBuilder:
    """Renders problems with a Hugging Face tokenizer's chat template. See the module docstring."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        instructions: str,
        settings: PromptSettings,
        solver_instructions: Mapping[str, str] | None = None,
    ) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"tokenizer {type(tokenizer).__name__} has no chat template; use an instruct model's tokenizer "
                "or set tokenizer.chat_template to a Jinja template before building prompts"
            )
        self.tokenizer = tokenizer
        self.instructions = instructions
        self.settings = settings
        self.solver_instructions = dict(solver_instructions or {})

    def instructions_for(self, solver: str | None) -> str:
        """The instructions of `solver` (None: the default ones); KeyError for a solver this builder lacks."""
        if solver is None:
            return self.instructions
        try:
            return self.solver_instructions[solver]
        except KeyError:
            known = ", ".join(sorted(self.solver_instructions)) or "none"
            raise KeyError(f"no prompt instructions for solver {solver!r} (this builder has: {known})") from None

    def messages(self, question: str, *, solver: str | None = None) -> list[dict[str, str]]:
        return chat_messages(question, instructions=self.instructions_for(solver), settings=self.settings)

    def text(self, question: str, *, solver: str | None = None) -> str:
        """The full prompt as text: the templated conversation, its generation prompt, then the answer prefix."""
        messages = self.messages(question, solver=solver)
        chat = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return chat + self.settings.answer_prefix

    def render(self, question: str, *, solver: str | None = None) -> list[int]:
        """Token ids of the full prompt, ending with the assistant turn's opening and the answer prefix."""
        return list(self.tokenizer(self.text(question, solver=solver), add_special_tokens=False)["input_ids"])

    def build(self, question: str, *, solver: str | None = None) -> Prompt:
        """The prompt of `question` under `solver`'s instructions (None: the default ones)."""
        ids = self.render(question, solver=solver)
        limit = self.settings.max_prompt_tokens
        if len(ids) <= limit:
            return Prompt(ids=tuple(ids), status="ok")
        if self.settings.overlong == "skip":
            return Prompt(ids=None, status="too_long")
        return self._truncate(question, over=len(ids) - limit, solver=solver)

    def _truncate(self, question: str, *, over: int, solver: str | None) -> Prompt:
        """Cut question tokens from the end until the rendered prompt fits (token merges can shift by a few).
        Only the question shrinks: the instructions, the example and the answer prefix are rendered whole."""
        tokens = list(self.tokenizer(question, add_special_tokens=False)["input_ids"])
        keep = len(tokens) - over
        while keep > 0:
            ids = self.render(self.tokenizer.decode(tokens[:keep]), solver=solver)
            if len(ids) <= self.settings.max_prompt_tokens:
                return Prompt(ids=tuple(ids), status="truncated")
            keep -= max(1, len(ids) - self.settings.max_prompt_tokens)
        return Prompt(ids=None, status="too_long")  # the prompt without its question already exceeds the limit

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def response_text(self, ids: Sequence[int], *, text: str | None = None) -> str:
        """The answer as the verifier and the records see it: the answer prefix (part of the prompt) followed by
        the generated text, `text` when the backend returned it, else the decoded `ids`."""
        return self.settings.answer_prefix + (text if text is not None else self.decode(ids))


def chat_messages(question: str, *, instructions: str, settings: PromptSettings) -> list[dict[str, str]]:
    """The conversation for one problem (see the module docstring); the answer prefix is not in it, because a
    chat message list cannot leave the assistant's turn open."""

    if settings.answer_format == "think-code":
        instructions = f"{instructions}\n\n{THINK_CODE_FORMAT}"

    def ask(text: str) -> dict[str, str]:
        return {"role": "user", "content": settings.template.format(instructions=instructions, question=text)}

    turns = [{"role": "system", "content": settings.system}] if settings.system else []
    if settings.example is not None:
        turns += [ask(settings.example.question), {"role": "assistant", "content": settings.example.answer}]
    return [*turns, ask(question)]


def prompt_settings(data: DataConfig, *, answer_format: AnswerFormat = "markdown") -> PromptSettings:
    """The prompt options of a run's `data` section, with the answer format of its `solver.extract.format`;
    training and evaluation both build their prompts from it."""
    return PromptSettings(
        answer_format=answer_format,
        max_prompt_tokens=data.max_prompt_tokens,
        overlong=data.prompt_overlong,
        template=data.prompt_template,
        system=data.system_prompt,
        example=data.example,
        answer_prefix=data.answer_prefix,
    )
