"""Correction and self-feedback turns written by the PromptFormat (arithmetic and chat template)."""

from selfgen.data.reasoning import Feedback, correction_prompt, parse_feedback
from selfgen.train.llm.prompts import FEEDBACK_REQUEST, REVISION_REQUEST, get_prompt_format
from selfgen.train.llm.modeling import build_char_tokenizer

TEMPLATE = "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
WRONG = "S:7+5+0=12,4+8+1=14\nA:142"


def test_arithmetic_format_appends_feedback_and_revision_lines():
    fmt = get_prompt_format("arith", tokenizer=None)
    assert fmt.revision("47+85", WRONG, Feedback(False, 2)) == "Q:47+85\n" + WRONG + "\nF:N2\nR:\n"
    assert fmt.revision("47+85", WRONG) == correction_prompt("Q:47+85\n", WRONG)
    assert fmt.revision("47+85", WRONG, hint="132").startswith("Q:47+85\nH:132\n")
    assert fmt.feedback_request("47+85", WRONG) == "Q:47+85\n" + WRONG + "\nF:"


def test_chat_format_puts_the_attempt_and_the_feedback_in_turns():
    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = TEMPLATE
    fmt = get_prompt_format("chat", tokenizer, system_prompt="Be brief.")
    text = fmt.revision("47+85", WRONG, Feedback(False, 2))
    expected = (
        "[system]Be brief.\n[user]47+85\n[assistant]" + WRONG + "\n[user]" + Feedback(False, 2).message() + "\n[assistant]"
    )
    assert text == expected
    assert fmt.revision("47+85", WRONG).endswith("[user]" + REVISION_REQUEST + "\n[assistant]")
    request = fmt.feedback_request("47+85", WRONG)
    assert request.endswith("[user]" + FEEDBACK_REQUEST + "\n[assistant]") and "\nF:" not in request
    assert parse_feedback("F: N2") == Feedback(False, 2)  # what the chat request asks the model to write
