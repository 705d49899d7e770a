"""Users' own parts: the prompt format, reward_fn (TRL's convention), verify_fn, tokenizers and models
handed in as objects."""

import json
from pathlib import Path

import pytest
import torch

from selfgen.data.problems import Problem
from selfgen.data.tasks import prompt_text
from selfgen.train.llm import (
    ChatTemplateFormat,
    CoRewardTrainer,
    FunctionReward,
    GRPOConfig,
    GRPOTrainer,
    RLCCFConfig,
    RLCCFTrainer,
    STaRConfig,
    STaRTrainer,
    get_prompt_format,
    prepare_tokenizer,
)
from selfgen.train.llm.prompts import RestatedRevisionFormat
from selfgen.train.llm.modeling import build_char_tokenizer, build_tiny_llama
from selfgen.train.llm.rollout import Rollout

ASSET = Path(__file__).resolve().parents[3] / "assets" / "lm-arith"
needs_asset = pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")
TEMPLATE = "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"


def test_default_format_is_the_bundled_models_byte_for_byte():
    fmt = get_prompt_format("arith", tokenizer=None)
    assert fmt.prompt("47+85") == prompt_text("47+85") == "Q:47+85\n"
    assert fmt.prompt("47+85", hint="132") == "Q:47+85\nH:132\n"
    assert fmt.answer("S:7+5+0=12,4+8+1=13\nA:132") == "132" and fmt.answer("S:1") is None


def test_restated_revision_formats_append_the_question_after_the_mark_and_continue_the_attempt():
    attempt, question = "S:7+5+0=12,4+8+1=13\nA:132", "47+85"
    head = "Q:47+85\n" + attempt + "\nR:\n"
    assert get_prompt_format("arith_restate", None).revision(question, attempt) == head + "Q:47+85\n"
    assert get_prompt_format("arith_swap", None).revision(question, attempt) == head + "Q:85+47\n"
    hint = get_prompt_format("arith_hint", None)
    assert hint.revision(question, attempt) == head + "Q:47+85\nH:132\n"  # the attempt's own answer, not the reference
    assert hint.revision(question, "S:7+5") == "Q:47+85\nS:7+5\nR:\nQ:47+85\n"  # no answer: no hint line
    assert hint.revision_suffix(question, attempt) == "\nR:\nQ:47+85\nH:132\n"
    assert get_prompt_format("arith_swap", None).revision("47*3", "A:141") == "Q:47*3\nA:141\nR:\nQ:47*3\n"
    with pytest.raises(ValueError, match="style must be one of"):
        RestatedRevisionFormat("pad")


def test_chat_format_uses_the_tokenizers_template_and_reads_the_answer_line():
    tokenizer = build_char_tokenizer()
    with pytest.raises(ValueError, match="chat_template"):
        get_prompt_format("chat", tokenizer)
    tokenizer.chat_template = TEMPLATE
    fmt = get_prompt_format("chat", tokenizer, system_prompt="Be brief.")
    assert isinstance(fmt, ChatTemplateFormat)
    assert fmt.prompt("2+3") == "[system]Be brief.\n[user]2+3\n[assistant]"
    assert "The answer is 5" in fmt.prompt("2+3", hint="5")
    assert fmt.answer("thinking...\nA: 5\n") == "5" and fmt.answer("no line") is None
    custom = ChatTemplateFormat(tokenizer, system_prompt=None, answer_pattern=r"\\boxed\{([^}]*)\}")
    assert custom.prompt("2+3") == "[user]2+3\n[assistant]" and custom.answer(r"so \boxed{5}.") == "5"
    with pytest.raises(ValueError, match="prompt_format must be one of"):
        get_prompt_format("alpaca", tokenizer)


def test_function_reward_passes_trl_style_columns_and_checks_its_output():
    calls = []

    def reward(prompts, completions, answer, **columns):
        calls.append((prompts, completions, answer, columns))
        return [float(c == a) for c, a in zip(completions, answer)]

    problems = [Problem("1+1", "2", "a", {"topic": "add", "level": 1}), Problem("2+2", "4", "b", {"topic": "add"})]
    rewarded = FunctionReward([reward, lambda completions, **_: [0.5, 0.5]], lambda p: f"<{p.question}>")(problems, ["2", "5"])
    assert rewarded == [1.5, 0.5]
    prompts, completions, answer, columns = calls[-1]
    assert prompts == ["<1+1>", "<2+2>"] and answer == ["2", "4"]
    assert columns == {"question": ["1+1", "2+2"], "id": ["a", "b"], "topic": ["add", "add"]}  # only shared fields
    with pytest.raises(ValueError, match="returned 1 rewards for 2"):
        FunctionReward(lambda completions, **_: [1.0], str)(problems, ["2", "5"])
    with pytest.raises(ValueError, match="finite number"):
        FunctionReward(lambda completions, **_: [1.0, None], str)(problems, ["2", "5"])
    with pytest.raises(ValueError, match="reward_fn must be a callable"):
        FunctionReward([], str)


def test_prepare_tokenizer_sets_left_padding_and_a_pad_token():
    tokenizer = build_char_tokenizer()
    tokenizer.padding_side, tokenizer.pad_token = "right", None
    assert prepare_tokenizer(tokenizer) is tokenizer
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == tokenizer.eos_token
    tokenizer.eos_token = None
    with pytest.raises(ValueError, match="no eos_token"):
        prepare_tokenizer(tokenizer)


def tiny_model_and_tokenizer():
    tokenizer = build_char_tokenizer()
    tokenizer.padding_side = "right"  # as a user's tokenizer may come
    torch.manual_seed(1)
    return build_tiny_llama(tokenizer, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32), tokenizer


@needs_asset
def test_grpo_rewards_come_from_reward_fn_and_label_free_recipes_refuse_it(tmp_path):
    seen = {}

    def reward_fn(prompts, completions, answer, **columns):
        seen.update(prompts=prompts, answer=answer)
        return [float(len(c)) for c in completions]

    config = GRPOConfig(output_dir=str(tmp_path), eval_problems=2, samples_per_problem=2)
    trainer = GRPOTrainer(model=str(ASSET), task="add", config=config, reward_fn=reward_fn)
    problems = trainer.task.sample(2, 0)
    rollouts = [Rollout(i // 2, "", text, [1], [2], [0.0]) for i, text in enumerate(["a", "bb", "ccc", "A:0"])]
    assert trainer.rewards(problems, rollouts) == [1.0, 2.0, 3.0, 3.0]
    assert seen["prompts"] == [prompt_text(p.question) for p in problems for _ in range(2)]
    assert seen["answer"] == [p.answer for p in problems for _ in range(2)]
    with pytest.raises(ValueError, match="does not take reward_fn"):
        CoRewardTrainer(model=str(ASSET), task="add", config=GRPOConfig(output_dir=str(tmp_path)), reward_fn=reward_fn)


def test_verify_fn_decides_correctness_and_accuracy(tmp_path):
    model, tokenizer = tiny_model_and_tokenizer()
    config = STaRConfig(output_dir=str(tmp_path), eval_problems=3, max_new_tokens=4)
    accept_all = STaRTrainer(model=model, tokenizer=tokenizer, task="add", config=config, verify_fn=lambda p, c: True)
    assert tokenizer.padding_side == "left"
    assert accept_all.evaluate()["accuracy"] == 1.0  # a random model, every answer accepted
    reject_all = STaRTrainer(model=model, tokenizer=tokenizer, task="add", config=config, verify_fn=lambda p, c: False)
    assert reject_all.evaluate()["accuracy"] == 0.0
    problem = reject_all.eval_set[0]
    assert not reject_all.verify(problem, f"A:{problem.answer}")
    assert STaRTrainer(model=model, tokenizer=tokenizer, task="add", config=config).verify(problem, f"A:{problem.answer}")


@needs_asset
def test_rlccf_members_come_from_the_model_passed(tmp_path):
    model, tokenizer = tiny_model_and_tokenizer()
    config = RLCCFConfig(output_dir=str(tmp_path), num_models=3, eval_problems=2)  # config.model is the bundled LM
    trainer = RLCCFTrainer(model=model, tokenizer=tokenizer, task="add", config=config)
    assert len(trainer.members) == 3
    for policy, _, _ in trainer.members[1:]:
        assert policy is not model
        for name, weight in model.state_dict().items():
            assert torch.equal(policy.state_dict()[name], weight)
    with pytest.raises(ValueError, match="disagree on member 0"):
        RLCCFTrainer(model=model, tokenizer=tokenizer, config=RLCCFConfig(output_dir=str(tmp_path), models=[str(ASSET)] * 2))


def test_grpo_on_a_users_jsonl_with_reward_fn_and_eval_file(tmp_path):
    """The README's example: a user's model object, JSONL problems with a separate held-out file, and
    a TRL-style reward function that reads an extra JSONL field."""
    lines = [{"question": f"{i}+1", "answer": str(i + 1), "unit": "apples"} for i in range(8)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (tmp_path / "eval.jsonl").write_text(json.dumps({"question": "9+1", "answer": "10", "unit": "pears"}) + "\n")
    seen = []

    def reward_fn(prompts, completions, answer, unit, **kwargs):
        seen.extend(unit)
        return [0.25] * len(completions)

    model, tokenizer = tiny_model_and_tokenizer()
    config = GRPOConfig(
        output_dir=str(tmp_path / "run"), eval_file=str(tmp_path / "eval.jsonl"), iterations=1, problems_per_iteration=3,
        eval_problems=5, samples_per_problem=2, max_new_tokens=4, max_train_steps=1, train_batch_size=4,
    )
    trainer = GRPOTrainer(model, str(tmp_path / "train.jsonl"), config, tokenizer, reward_fn=reward_fn)
    assert [p.question for p in trainer.eval_set] == ["9+1"]
    report = trainer.train()
    assert report[1]["train_reward"] == pytest.approx(0.25) and seen == ["apples"] * 6
    with pytest.raises(ValueError, match="prompt_format must be one of"):
        GRPOConfig(prompt_format="alpaca")
