"""`selfgen train lm`: the seed set, a few pretraining steps, save_pretrained round trip and evaluation."""


import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from selfgen.data.problems import Problem
from selfgen.data.tasks import ArithmeticTask, CountdownTask, parse_verdict
from selfgen.train.llm import lm


def test_seed_examples_cover_every_format_and_are_correct():
    config = lm.LMConfig(num_seed_examples=400, seed=1)
    examples = lm.seed_examples(config)
    assert [e.prompt for e in examples] == [e.prompt for e in lm.seed_examples(config)]
    assert any("\nH:" in e.prompt for e in examples) and any("\nR:\n" in e.prompt for e in examples)
    judged = [e for e in examples if e.prompt.endswith("\nJ:")]
    assert {parse_verdict(e.completion) for e in judged} == {True, False}
    assert any(">" in e.prompt for e in examples) and any("*" in e.prompt for e in examples)


def test_bad_config_keys_are_named():
    with pytest.raises(ValueError, match="format_weights has unknown formats"):
        lm.LMConfig(format_weights={"plain": 1.0, "poem": 1.0})
    with pytest.raises(ValueError, match="task_weights has unknown tasks"):
        lm.seed_examples(lm.LMConfig(task_weights={"chess": 1.0}))


def test_pretrain_export_reload_and_evaluate(tmp_path):
    config = lm.LMConfig(
        output_dir=str(tmp_path / "run"), num_seed_examples=64, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=64, max_train_steps=4, train_batch_size=16,
        learning_rate=1e-2, logging_steps=1, checkpointing_steps=0, report_to=None,
    )
    result = lm.train(config)
    losses = [record["loss"] for record in result.history]
    assert losses[-1] < losses[0]
    model = AutoModelForCausalLM.from_pretrained(result.pipeline_dir)
    tokenizer = AutoTokenizer.from_pretrained(result.pipeline_dir)
    assert tokenizer.decode(tokenizer("Q:12+3\nS:").input_ids) == "Q:12+3\nS:"
    assert (result.pipeline_dir / "model.safetensors").is_file()
    ids = tokenizer("Q:1+1\n", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()
    metrics = lm.evaluate(str(result.pipeline_dir), tmp_path / "eval", task="add", num_problems=4)
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["num_problems"] == 4


def test_pretrained_continues_the_saved_model(tmp_path, monkeypatch):
    """``pretrained``: the stages start from the saved weights (its size, not ``hidden_size``), not a fresh model."""
    tiny = dict(num_seed_examples=32, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=64, train_batch_size=16, checkpointing_steps=0, report_to=None)
    first = lm.train(lm.LMConfig(output_dir=str(tmp_path / "a"), max_train_steps=3, learning_rate=1e-2, **tiny))
    saved = AutoModelForCausalLM.from_pretrained(first.pipeline_dir).state_dict()
    started = {}

    class Recorder(lm.Trainer):
        def __init__(self, model, *args, **kwargs):
            started.update({k: v.clone() for k, v in model.state_dict().items()})
            super().__init__(model, *args, **kwargs)

    monkeypatch.setattr(lm, "Trainer", Recorder)
    config = lm.LMConfig(output_dir=str(tmp_path / "b"), max_train_steps=1, learning_rate=1e-2,
                         pretrained=str(first.pipeline_dir), task_weights={"countdown": 1.0}, **{**tiny, "hidden_size": 64})
    lm.train(config)
    assert started.keys() == saved.keys() and all(torch.equal(started[k], saved[k]) for k in saved)


def test_a_stage_checkpoint_equals_the_truncated_curriculum(tmp_path):
    """Choosing a base at a stage end (``configs/lm_arith_llama_v2.yaml`` keeps the first 2 stages of a
    longer run): stage ``k``'s ``stage-k/model`` of a longer curriculum is the export of the curriculum cut
    after stage ``k`` (each stage's data and seed depend on its index only)."""
    tiny = dict(num_seed_examples=32, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                train_batch_size=8, checkpointing_steps=0, report_to=None, learning_rate=1e-2, max_digits=3)
    lm.train(lm.LMConfig(output_dir=str(tmp_path / "long"), curriculum=[[3, 2, 2], [3, 2, 2], [3, 1]], **tiny))
    cut = lm.train(lm.LMConfig(output_dir=str(tmp_path / "cut"), curriculum=[[3, 2, 2], [3, 2, 2]], **tiny))
    stage = AutoModelForCausalLM.from_pretrained(tmp_path / "long" / "stage-2" / "model").state_dict()
    exported = AutoModelForCausalLM.from_pretrained(cut.pipeline_dir).state_dict()
    first = AutoModelForCausalLM.from_pretrained(tmp_path / "long" / "stage-1" / "model").state_dict()
    assert stage.keys() == exported.keys()
    for key in stage:
        torch.testing.assert_close(stage[key], exported[key])
    assert any(not torch.allclose(first[k], stage[k]) for k in stage)  # stage 2 did train


def test_accuracy_counts_verified_greedy_answers(monkeypatch):
    task = ArithmeticTask("add", 1, 2)
    problems = task.sample(4, seed=0)
    answers = [task.worked_solution(p) for p in problems[:3]] + ["A:nope"]
    monkeypatch.setattr(lm, "greedy_completions", lambda model, tokenizer, prompts, max_new_tokens: answers)
    assert lm.accuracy(None, None, task, problems) == 0.75


@pytest.mark.parametrize("curriculum", [[], [[2, 1], [4, 1]]])
def test_pretraining_stream_holds_no_held_out_problem(curriculum):
    """Every pretraining question (rephrasings too) lies in its task's training split; before the fix
    ``seed_example`` drew from ``make_problem`` and 69/200 held-out 1-2 digit additions leaked in."""
    config = lm.LMConfig(
        num_seed_examples=3000, seed=3, max_digits=2, curriculum=curriculum,
        format_weights={"plain": 0.4, "hint": 0.2, "rephrase": 0.4},
    )
    stages = [(2, 0)] if not curriculum else [(digits, index) for index, (digits, _) in enumerate(curriculum, 1)]
    questions = [
        e.prompt.split("\n")[0][2:] for digits, stage in stages for e in lm.seed_examples(config, digits, stage=stage)
    ]
    tasks = {"+": ArithmeticTask("add", 1, 5), "*": ArithmeticTask("mul", 1, 5), ">": CountdownTask()}
    splits = [next(t for mark, t in tasks.items() if mark in q).split_of(Problem(q, "0", "q")) for q in questions]
    assert splits.count("eval") == 0 and len(questions) == len(stages) * 3000
    held_out = {p.question for p in ArithmeticTask("add", 1, 2).sample(200, lm.EVAL_SEED, split="eval")}
    assert not held_out & set(questions)
    assert any(q.startswith("0") for q in questions)  # zero-padded rephrasings are in the stream


def test_curriculum_stages_lengths_and_next_length_share():
    config = lm.LMConfig(num_seed_examples=2000, curriculum=[[2, 5], [3, 5]], next_length_share=0.1,
                         task_weights={"add": 1.0}, format_weights={"plain": 1.0})
    assert config.stages() == [(2, 5), (3, 5)]
    widths = [max(len(x) for x in e.prompt[2:-1].split("+")) for e in lm.seed_examples(config, 3, stage=2)]
    assert max(widths) == 4 and 0.05 < widths.count(4) / len(widths) < 0.15
    assert [e.prompt for e in lm.seed_examples(config, 3, stage=2)] != [e.prompt for e in lm.seed_examples(config, 3, stage=1)]
    with pytest.raises(ValueError, match="curriculum stages"):
        lm.LMConfig(curriculum=[[4]])
    with pytest.raises(ValueError, match="next_length_share"):
        lm.LMConfig(next_length_share=1.0)


def test_curriculum_stage_min_digits_narrows_the_operands():
    """A third number in a stage, ``[max_digits, steps, min_digits]``, keeps shorter operands out of it
    (the v2 base's continued pretraining: more 4+4-digit additions per step); the next-length share stays
    ``max_digits + 1`` digits on both operands."""
    config = lm.LMConfig(num_seed_examples=2000, curriculum=[[2, 5], [4, 5, 3]], next_length_share=0.1,
                         task_weights={"add": 0.9, "mul": 0.1}, format_weights={"plain": 1.0})
    assert config.stages() == [(2, 5), (4, 5)] and config.stage_min_digits() == [1, 3]
    operands = [e.prompt[2:-1] for e in lm.seed_examples(config, 4, stage=2, min_digits=3)]
    lengths = [len(x) for q in operands if "+" in q for x in q.split("+")]
    assert min(lengths) == 3 and max(lengths) == 5
    assert 0.2 < sum(len(q) == 9 for q in operands if "+" in q) / sum("+" in q for q in operands) < 0.3  # 4+4 digits
    multiplicands = [len(q.split("*")[0]) for q in operands if "*" in q]
    assert min(multiplicands) == max(multiplicands) == 3
    assert min(len(x) for e in lm.seed_examples(config, 4, stage=2) for x in e.prompt[2:-1].replace("*", "+").split("+")) == 1
    for bad in ([4, 5, 0], [4, 5, 5], [4, 5, 3, 1]):
        with pytest.raises(ValueError, match="curriculum stages"):
            lm.LMConfig(curriculum=[bad])


@pytest.mark.parametrize(
    "name, config_file",
    [("lm", "lm_arith_llama"), ("grpo", "grpo_arith_llama"), ("star", "star_arith_llama"), ("star", "star_control_arith_llama"), ("co_reward", "co_reward_arith_llama"),
     ("rest_mcts", "rest_mcts_arith_llama"), ("score", "score_arith_llama"), ("spiral", "spiral_kuhn_llama"),
     ("laser", "laser_arith_llama"), ("rlccf", "rlccf_arith_llama"), ("expo", "expo_arith_llama"),
     ("rlccf", "rlccf_arith_llama_hetero"), ("rest_em", "rest_em_arith_llama"), ("rest_em", "rest_em_control_arith_llama")],
)
def test_llama_base_configs_load_into_their_method(name, config_file):
    import importlib
    from pathlib import Path

    from selfgen.train.config import load_config

    module = importlib.import_module(f"selfgen.train.llm.{name}")
    config = load_config(module.METHOD.config_class, Path(__file__).resolve().parents[3] / "configs" / f"{config_file}.yaml")
    assert config.seed == 0 and config.export_dir is None
    if name == "lm":
        assert config.stages()[-1] == (4, 200) and sum(steps for _, steps in config.stages()) == 1000
    else:
        assert config.model == "assets/lm-arith-llama" and config.min_digits == config.max_digits == 4
        assert getattr(config, "ground_truth_control", False) == config_file.startswith(("star_control", "rest_em_control"))


def test_llama_base_config_builds_the_bundled_architecture():
    """Issue #18: `configs/lm_arith_llama.yaml` rebuilds a 3-6 M-parameter transformers Llama, the
    architecture of `assets/lm-arith-llama` (same sizes and tokenizer), each file under 20 MB."""
    import json
    from pathlib import Path

    from transformers import LlamaForCausalLM

    from selfgen.train.config import load_config
    from selfgen.train.llm.modeling import build_char_tokenizer, build_tiny_llama

    root = Path(__file__).resolve().parents[3]
    config = load_config(lm.LMConfig, root / "configs" / "lm_arith_llama.yaml")
    model = build_tiny_llama(build_char_tokenizer(), config.hidden_size, config.num_hidden_layers,
                             config.num_attention_heads, config.intermediate_size)
    assert isinstance(model, LlamaForCausalLM) and 3e6 <= model.num_parameters() <= 6e6
    asset = root / "assets" / "lm-arith-llama"
    if not (asset / "config.json").is_file():
        pytest.skip("assets/lm-arith-llama not built")
    bundled = json.loads((asset / "config.json").read_text())
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size", "tie_word_embeddings"):
        assert bundled[key] == getattr(model.config, key), key
    assert all(f.stat().st_size < 20e6 for f in asset.iterdir())
    assert bundled["architectures"] == ["LlamaForCausalLM"]


def test_v2_base_config_continues_v1():
    """Issue #18 v2 base (pass 10; no longer bundled since session 35): `configs/lm_arith_llama_v2.yaml`
    continues `assets/lm-arith-llama` (left unchanged) on 3-4 digit operands with a 15% 5-digit share."""
    from pathlib import Path

    from selfgen.train.config import load_config

    root = Path(__file__).resolve().parents[3]
    config = load_config(lm.LMConfig, root / "configs" / "lm_arith_llama_v2.yaml")
    assert config.pretrained == "assets/lm-arith-llama" and config.export_dir is None and config.seed == 0
    assert config.stages() == [(4, 120), (4, 120)] and config.stage_min_digits() == [3, 3]
    assert config.next_length_share == 0.15 and config.max_train_steps == sum(s for _, s in config.stages())


def test_v3_base_chain_rebuilds_from_v1_and_matches_the_bundled_asset():
    """Issue #18 v3 base (session 35): v1 -> v2 config -> pass-12 candidate config -> one 60-step replay stage
    at lr 3e-4 on 1-4 digit operands (no 5-digit addition), each config continuing the previous one's export;
    the bundled `assets/lm-arith-llama-v3` has v1's architecture and tokenizer and its own weights."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    from selfgen.train.config import load_config

    root = Path(__file__).resolve().parents[3]
    v2, candidate, replay = (load_config(lm.LMConfig, root / "configs" / f"lm_arith_llama_{n}.yaml") for n in ("v2", "v3", "v3_replay"))
    assert v2.pretrained == "assets/lm-arith-llama"
    assert Path(candidate.pretrained) == v2.pipeline_dir and Path(replay.pretrained) == candidate.pipeline_dir
    assert replay.stages() == [(4, 60)] and replay.stage_min_digits() == [1] and replay.max_train_steps == 60
    assert replay.learning_rate == 3e-4 and replay.next_length_share == 0.0 and replay.seed == 0 and replay.export_dir is None
    small = lm.LMConfig(**{**vars(replay), "num_seed_examples": 400, "task_weights": {"add": 1.0}, "curriculum": [], "output_dir": "unused"})
    operands = [e.prompt.split("\n")[0][2:].split("+") for e in lm.seed_examples(small, 4)]
    lengths = [len(str(int(x))) for pair in operands for x in pair]
    assert min(lengths) == 1 and max(lengths) == 4
    v1, v3 = root / "assets" / "lm-arith-llama", root / "assets" / "lm-arith-llama-v3"
    if not (v3 / "config.json").is_file():
        pytest.skip("assets/lm-arith-llama-v3 not built")
    assert json.loads((v1 / "config.json").read_text()) == json.loads((v3 / "config.json").read_text())
    assert (v1 / "tokenizer.json").read_text() == (v3 / "tokenizer.json").read_text()
    assert all(f.stat().st_size < 20e6 for f in v3.iterdir())
    old, new = load_file(v1 / "model.safetensors"), load_file(v3 / "model.safetensors")
    assert old.keys() == new.keys() and any(not torch.equal(old[k], new[k]) for k in old)


def test_v3_candidate_config_alternates_long_and_replay_stages():
    """Issue #18 pass 12 (the bundled v3's intermediate): `configs/lm_arith_llama_v3.yaml` continues v2 with 4-5 digit
    stages ([5, 80, 4]) alternating with 1-5 digit replay stages ([5, 40, 1]) and no 6-digit share; a replay
    stage's additions reach 1-digit operands and 5+5 digits, a long stage's none shorter than 4 digits."""
    from pathlib import Path

    from selfgen.train.config import load_config

    config = load_config(lm.LMConfig, Path(__file__).resolve().parents[3] / "configs" / "lm_arith_llama_v3.yaml")
    assert config.pretrained == "outputs/lm-arith-llama-v2/pipeline" and config.export_dir is None and config.seed == 0
    assert config.stages() == [(5, 80), (5, 40), (5, 80), (5, 40)] and config.stage_min_digits() == [4, 1, 4, 1]
    assert config.next_length_share == 0.0 and config.max_train_steps == 240
    small = lm.LMConfig(**{**vars(config), "num_seed_examples": 400, "task_weights": {"add": 1.0}, "curriculum": [], "output_dir": "unused"})
    for min_digits, shortest in ((4, 4), (1, 1)):
        operands = [e.prompt.split("\n")[0][2:].split("+") for e in lm.seed_examples(small, 5, stage=1, min_digits=min_digits)]
        lengths = [len(str(int(x))) for pair in operands for x in pair]
        assert min(lengths) == shortest and max(lengths) == 5


def test_rlccf_v3_collective_is_v3_plus_its_n05_sibling_at_grpos_budget():
    """Issue #18 (session 36): `rlccf_arith_llama_v3.yaml`'s member 0 is the bundled v3 and member 1 the sibling
    that `lm_arith_llama_v3_n05.yaml` rebuilds - v3's replay stage (`lm_arith_llama_v3_replay.yaml`) with 5% 5-digit
    additions and its own output folder, nothing else changed; each member gets the GRPO control's budget."""
    from dataclasses import asdict
    from pathlib import Path

    from selfgen.train.config import load_config
    from selfgen.train.llm.grpo import GRPOConfig
    from selfgen.train.llm.rlccf import RLCCFConfig

    configs = Path(__file__).resolve().parents[3] / "configs"
    replay = asdict(load_config(lm.LMConfig, configs / "lm_arith_llama_v3_replay.yaml"))
    sibling = asdict(load_config(lm.LMConfig, configs / "lm_arith_llama_v3_n05.yaml"))
    assert (sibling.pop("next_length_share"), replay.pop("next_length_share")) == (0.05, 0.0)
    assert (sibling.pop("max_digits"), replay.pop("max_digits")) == (4, 5)  # the top-level max_digits is unused under a curriculum
    assert sibling.pop("output_dir") != replay.pop("output_dir")
    assert sibling.pop("export_dir") == "outputs/v3-r4x60n05/pipeline" and replay.pop("export_dir") is None
    assert sibling == replay
    rlccf = asdict(load_config(RLCCFConfig, configs / "rlccf_arith_llama_v3.yaml"))
    grpo = asdict(load_config(GRPOConfig, configs / "grpo_arith_llama.yaml"))
    assert rlccf.pop("models") == ["assets/lm-arith-llama-v3", "outputs/v3-r4x60n05/pipeline"]
    assert rlccf.pop("model") == "assets/lm-arith-llama-v3" and rlccf.pop("member_seeds") == [0, 1]
    rlccf.pop("num_models"), rlccf.pop("output_dir"), grpo.pop("model"), grpo.pop("output_dir")
    assert rlccf == grpo


def test_star_countdown_control_differs_from_star_only_in_its_training_data():
    """STaR's matched control on Countdown (issue #18): every field of `star_countdown_llama.yaml` except the
    control flag and the output folder, so the two arms sample, count and train identically."""
    from dataclasses import asdict
    from pathlib import Path

    from selfgen.train.config import load_config
    from selfgen.train.llm.star import STaRConfig

    configs = Path(__file__).resolve().parents[3] / "configs"
    star = asdict(load_config(STaRConfig, configs / "star_countdown_llama.yaml"))
    control = asdict(load_config(STaRConfig, configs / "star_control_countdown_llama.yaml"))
    assert control.pop("ground_truth_control") and not star.pop("ground_truth_control")
    assert control.pop("output_dir") != star.pop("output_dir")
    assert control == star


def test_countdown_llama_configs_load_at_equal_budget():
    """B-STaR and STaR on Countdown (issue #18): the same base, problems, samples, steps and learning rate."""
    from pathlib import Path

    from selfgen.train.config import load_config
    from selfgen.train.llm.bstar import BSTaRConfig
    from selfgen.train.llm.star import STaRConfig

    configs = Path(__file__).resolve().parents[3] / "configs"
    base = load_config(lm.LMConfig, configs / "lm_countdown_llama.yaml")
    assert base.pretrained == "assets/lm-arith-llama" and base.task_weights == {"countdown": 1.0} and base.export_dir is None
    bstar = load_config(BSTaRConfig, configs / "bstar_countdown_llama.yaml")
    star = load_config(STaRConfig, configs / "star_countdown_llama.yaml")
    shared = ("model", "task", "seed", "iterations", "problems_per_iteration", "samples_per_problem", "max_train_steps",
              "learning_rate", "train_batch_size", "max_new_tokens", "eval_problems")
    assert [getattr(bstar, k) for k in shared] == [getattr(star, k) for k in shared]
    assert bstar.model == "assets/lm-countdown-llama" and bstar.task == "countdown" and bstar.include_reference
    assert star.step_growth == 0.0 and star.samples_per_problem > 1 and not star.ground_truth_control
    assert bstar.export_dir is None and star.export_dir is None


def test_packed_rows_hold_several_examples_in_order_never_exceed_n_and_train_late_positions():
    """`pack_length`: consecutive examples laid end to end (eos between them), no row past N tokens, no
    token lost or reordered, every example's completion tokens (and only those) scored - at positions far
    past one example's length."""
    from selfgen.train.llm.modeling import build_char_tokenizer
    from selfgen.train.llm.objectives import encode_pair

    tokenizer = build_char_tokenizer()
    config = lm.LMConfig(num_seed_examples=300, seed=0, max_length=128, pack_length=256,
                         format_weights={"plain": 0.6, "hint": 0.2, "rephrase": 0.2})
    examples = lm.seed_examples(config, 4, 0, 1)
    rows, collate = lm.training_rows(config, tokenizer, examples)
    encoded = [encode_pair(tokenizer, e.prompt, e.completion, config.max_length) for e in examples]
    assert max(len(p) + len(c) for p, c in encoded) < 100
    assert all(len(row.input_ids) <= 256 for row in rows) and len(rows) < len(examples) / 3
    assert [t for row in rows for t in row.input_ids] == [t for p, c in encoded for t in p + c]
    assert [m for row in rows for m in row.completion_mask] == [m for p, c in encoded for m in [0] * len(p) + [1] * len(c)]
    eos_per_row = [row.input_ids.count(tokenizer.eos_token_id) for row in rows[:-1]]
    assert min(eos_per_row) >= 3 and all(row.input_ids[-1] == tokenizer.eos_token_id for row in rows)
    batch = collate(rows[:8])
    assert batch["input_ids"].shape[1] <= 256 and batch["completion_mask"][:, 200:].sum() > 0
    assert torch.equal(batch["completion_mask"].bool() & ~batch["attention_mask"].bool(), torch.zeros_like(batch["attention_mask"]).bool())
    unpacked, _ = lm.training_rows(lm.LMConfig(num_seed_examples=300, seed=0), tokenizer, examples)
    assert unpacked is examples


def test_a_packed_rows_first_example_has_its_unpacked_loss(policy):
    """Causal attention: the first example of a packed row is scored exactly as on its own row."""
    from selfgen.train.llm.objectives import SFTCollator, SFTObjective, TextPair, encode_pair, pack_pairs, packed_batch

    model, tokenizer = policy
    pairs = [TextPair("Q:12+34\n", "S:2+4=6\nA:46"), TextPair("Q:5+6\n", "A:11")]
    alone = SFTObjective().compute_loss(model, SFTCollator(tokenizer, 64)(pairs[:1]))[0]
    rows = pack_pairs([encode_pair(tokenizer, p.prompt, p.completion, 64) for p in pairs], 64)
    assert len(rows) == 1
    first_only = packed_batch(rows, tokenizer.pad_token_id)
    first_length = sum(len(x) for x in encode_pair(tokenizer, pairs[0].prompt, pairs[0].completion, 64))
    first_only["completion_mask"][:, first_length:] = 0
    with torch.no_grad():
        assert abs(float(SFTObjective().compute_loss(model, first_only)[0]) - float(alone)) < 1e-5


def test_packing_refuses_rows_that_cannot_hold_an_example():
    from selfgen.train.llm.objectives import pack_pairs

    with pytest.raises(ValueError, match="pack_length .* must be 0 or >= max_length"):
        lm.LMConfig(max_length=128, pack_length=64)
    with pytest.raises(ValueError, match="does not fit pack_length=4"):
        pack_pairs([([1, 2], [3, 4, 5])], 4)
    with pytest.raises(ValueError, match="pack_length must be >= 1"):
        pack_pairs([([1], [2])], 0)


def test_v4_packed_config_continues_v3_on_its_last_stages_mix_packed_to_256():
    """Issue #18 (session 40): v4 = v3 continued on the data mix of v3's last stage, packed to 256 tokens, at
    no more than that stage's learning rate."""
    from pathlib import Path

    from selfgen.train.config import load_config

    root = Path(__file__).resolve().parents[3]
    v4 = load_config(lm.LMConfig, root / "configs" / "lm_arith_llama_v4_packed.yaml")
    replay = load_config(lm.LMConfig, root / "configs" / "lm_arith_llama_v3_replay.yaml")
    assert v4.pretrained == "assets/lm-arith-llama-v3" and v4.export_dir is None and v4.seed == 0
    assert v4.pack_length == 256 and replay.pack_length == 0 and v4.learning_rate <= replay.learning_rate
    for key in ("task_weights", "format_weights", "next_length_share", "max_length"):
        assert getattr(v4, key) == getattr(replay, key), key
    assert v4.stage_min_digits() == [1] and v4.stages()[0][0] == 4 and v4.max_train_steps == v4.stages()[0][1]
