"""The text interface between problems and a causal LM: one :class:`PromptFormat` every recipe uses,
and :func:`prepare_tokenizer`, which makes any tokenizer handed in usable for batched generation.

A prompt format maps a question to the prompt the policy continues, and a completion back to its
final answer:

* :class:`PromptFormat` (``prompt_format: arith``, the default) - the compact format the bundled tiny
  LM is pretrained on: ``"Q:<question>\\n"`` (``"Q:<question>\\nH:<answer>\\n"`` with a STaR/ExPO
  answer hint) -> ``"S:<steps>\\nA:<answer>"``, the answer read from the last ``A:`` line;
* :class:`ChatTemplateFormat` (``prompt_format: chat``) - the tokenizer's own chat template
  (``apply_chat_template`` with ``add_generation_prompt=True``): an optional system message, the
  question as the user turn (the hint appended to it), the answer read by ``answer_pattern`` (by
  default the same last ``A:`` line, which the default system message asks for).

A correction turn (``revision``: attempt, optional :class:`~selfgen.data.reasoning.Feedback`, revise)
and a self-feedback turn (``feedback_request``) are written by the format too: the arithmetic format
appends ``F:``/``R:`` lines, the chat format adds an assistant turn (the attempt) and a user turn.

Recipes never write prompt text themselves: they call ``trainer.prompt(problem)`` /
``trainer.format.answer(completion)``. Formats that continue a prompt (a revision turn, a judge turn,
a partial solution) append to the formatted prompt, so they follow the chosen format.
"""

from __future__ import annotations

import re

from ...data.reasoning import Feedback, correction_prompt, feedback_request
from ...data.tasks import extract_answer, prompt_text

RESTATED_TURN2 = ("restate", "swap", "hint")  # RestatedRevisionFormat.style; prompt_format arith_<style>
PROMPT_FORMATS = ("arith", "chat", *(f"arith_{style}" for style in RESTATED_TURN2))
REVISION_REQUEST = "Review your solution and correct it if needed. Give the final answer as 'A: <answer>'."
FEEDBACK_REQUEST = "Check your solution. Reply 'F: Y' if it is right, else 'F: N<k>' with k the first wrong step."
CHAT_SYSTEM_PROMPT = "Solve the problem step by step. End with the final answer on its own line as 'A: <answer>'."


class PromptFormat:
    """question -> prompt, completion -> answer; this base class is the arithmetic ``Q:``/``A:`` format."""

    name = "arith"

    def prompt(self, question: str, hint: str | None = None) -> str:
        """The prompt of ``question``; with ``hint`` the reference answer is shown (rationalisation)."""
        return prompt_text(question, hint)

    def answer(self, completion: str) -> str | None:
        """The final answer of ``completion`` (``None`` when it gives none)."""
        return extract_answer(completion)

    def revision(self, question: str, attempt: str, feedback: Feedback | None = None, hint: str | None = None) -> str:
        """The prompt of a correction turn: the attempt, the ``F:`` feedback line (none: a plain
        revision request), then ``R:`` (:func:`~selfgen.data.reasoning.correction_prompt`)."""
        return correction_prompt(self.prompt(question, hint), attempt, feedback)

    def revision_suffix(self, question: str, attempt: str, feedback: Feedback | None = None, hint: str | None = None) -> str:
        """What follows ``attempt`` in its correction turn: :meth:`revision` less ``prompt + attempt``
        (what a multi-round conversation appends after each attempt, :mod:`selfgen.train.llm.revision`)."""
        head, full = self.prompt(question, hint) + attempt, self.revision(question, attempt, feedback, hint)
        if not full.startswith(head):
            raise ValueError(
                f"{type(self).__name__}.revision() must start with the prompt followed by the attempt to be continued; "
                f"got {full[:80]!r} for prompt + attempt {head[:80]!r}"
            )
        return full[len(head) :]

    def feedback_request(self, question: str, attempt: str, hint: str | None = None) -> str:
        """The prompt in which the model writes its own feedback on ``attempt`` (read back with
        :func:`~selfgen.data.reasoning.parse_feedback`)."""
        return feedback_request(self.prompt(question, hint), attempt)


def swapped_question(question: str) -> str:
    """The addition ``a+b`` with its operands swapped, ``b+a`` (the ``swap`` rephrasing the arithmetic base
    is pretrained on); any other question as it is."""
    if question.count("+") != 1:
        return question
    left, right = question.split("+")
    return f"{right}+{left}"


class RestatedRevisionFormat(PromptFormat):
    """The arithmetic format whose plain revision turn restates the question after the ``R:`` mark
    (``prompt_format: arith_<style>``), so the second attempt starts from a prompt the base model was
    pretrained on instead of re-reading the operands through the first attempt:

    * ``restate`` - ``attempt + "\\nR:\\n" + "Q:<question>\\n"``;
    * ``swap`` - the addition with its operands swapped, ``"Q:<b>+<a>\\n"`` (the ``swap`` rephrasing the
      base is pretrained on; other questions are restated as they are);
    * ``hint`` - the question and the first attempt's own answer as the STaR hint line,
      ``"Q:<question>\\nH:<attempt's answer>\\n"`` (the pretrained rationalisation format; no hint line
      when the attempt has no answer). The hint is the model's own answer, never the reference.

    A departure from SCoRe (Kumar et al., 2024), whose turn 2 appends an instruction ("There might be
    an error in the solution above ... correct the error, if any, and rewrite the solution"): our base
    never saw an instruction, only these prompt formats. Feedback turns keep the ``F:`` line before ``R:``.
    """

    def __init__(self, style: str) -> None:
        if style not in RESTATED_TURN2:
            raise ValueError(f"style must be one of {RESTATED_TURN2}, got {style!r}")
        self.style = style
        self.name = f"arith_{style}"

    def revision(self, question: str, attempt: str, feedback: Feedback | None = None, hint: str | None = None) -> str:
        restated = swapped_question(question) if self.style == "swap" else question
        own = self.answer(attempt) if self.style == "hint" else None
        return super().revision(question, attempt, feedback, hint) + prompt_text(restated, own)


class ChatTemplateFormat(PromptFormat):
    """Prompts from the tokenizer's chat template; answers from the last match of ``answer_pattern``
    (a regex whose first group is the answer)."""

    name = "chat"

    def __init__(
        self,
        tokenizer,
        system_prompt: str | None = CHAT_SYSTEM_PROMPT,
        answer_pattern: str = r"A:[ \t]*([^\n]*)",
        hint_template: str = "\n(The answer is {hint}; show how to reach it.)",
    ) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "prompt_format='chat' needs a tokenizer with a chat_template (tokenizer.chat_template is empty); "
                "set one or use prompt_format='arith'"
            )
        self.tokenizer, self.system_prompt, self.hint_template = tokenizer, system_prompt, hint_template
        self.pattern = re.compile(answer_pattern)
        if self.pattern.groups < 1:
            raise ValueError(f"answer_pattern must have a capture group for the answer, got {answer_pattern!r}")

    def prompt(self, question: str, hint: str | None = None) -> str:
        return self.tokenizer.apply_chat_template(self._messages(question, hint), tokenize=False, add_generation_prompt=True)

    def _messages(self, question: str, hint: str | None) -> list[dict[str, str]]:
        content = question if hint is None else question + self.hint_template.format(hint=hint)
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return messages + [{"role": "user", "content": content}]

    def _continue(self, question: str, hint: str | None, attempt: str, request: str) -> str:
        """The chat so far, the attempt as the assistant's turn, ``request`` as the next user turn."""
        messages = self._messages(question, hint) + [
            {"role": "assistant", "content": attempt},
            {"role": "user", "content": request},
        ]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def revision(self, question: str, attempt: str, feedback: Feedback | None = None, hint: str | None = None) -> str:
        """The attempt as an assistant turn, then a user turn with :meth:`Feedback.message` (none:
        :data:`REVISION_REQUEST`)."""
        return self._continue(question, hint, attempt, REVISION_REQUEST if feedback is None else feedback.message())

    def feedback_request(self, question: str, attempt: str, hint: str | None = None) -> str:
        return self._continue(question, hint, attempt, FEEDBACK_REQUEST)

    def answer(self, completion: str) -> str | None:
        found = self.pattern.findall(completion)
        if not found:
            return None
        last = found[-1] if isinstance(found[-1], str) else found[-1][0]
        return last.strip() or None


def get_prompt_format(spec: str | PromptFormat | None, tokenizer, system_prompt: str | None = CHAT_SYSTEM_PROMPT) -> PromptFormat:
    """A :class:`PromptFormat` from a config name (``arith`` | ``chat``) or an object (returned as is)."""
    if isinstance(spec, PromptFormat):
        return spec
    if spec in (None, "arith"):
        return PromptFormat()
    if spec == "chat":
        return ChatTemplateFormat(tokenizer, system_prompt)
    if isinstance(spec, str) and spec.startswith("arith_") and spec[len("arith_") :] in RESTATED_TURN2:
        return RestatedRevisionFormat(spec[len("arith_") :])
    raise ValueError(f"prompt_format must be one of {PROMPT_FORMATS} or a PromptFormat object, got {spec!r}")


def prepare_tokenizer(tokenizer):
    """Make ``tokenizer`` fit batched generation and the collators, in place, and return it: left
    padding, and a pad token (the eos token when it has none). It must have an eos token, which ends
    every completion."""
    if tokenizer is None:
        raise ValueError("tokenizer= is required together with a model object")
    if tokenizer.eos_token is None:
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} has no eos_token; completions end with it: set tokenizer.eos_token"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer
