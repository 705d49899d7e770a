"""Every recipe on real architectures: tiny randomly initialised GPT-2, Qwen2 and Llama models with a
byte-level BPE tokenizer trained offline (the ``tokenizers`` library, no download), handed to the
trainers as objects the way a user would (``model=<nn.Module>, tokenizer=<tokenizer>``).

The tokenizer comes without a pad token and with right padding, as many real tokenizers do; the
trainers must normalise it. The Qwen2 runs use ``prompt_format: chat`` (the tokenizer's ChatML
template). One recipe per architecture runs in CI; the full grid is ``slow``.
"""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from selfgen.train.llm import (
    BSTaRConfig,
    BSTaRTrainer,
    CoRewardConfig,
    CoRewardTrainer,
    ExPOConfig,
    ExPOTrainer,
    GRPOConfig,
    GRPOTrainer,
    LaSeRConfig,
    LaSeRTrainer,
    ReSTEMConfig,
    ReSTEMTrainer,
    ReSTMCTSConfig,
    ReSTMCTSTrainer,
    RLCCFConfig,
    RLCCFTrainer,
    SCoReConfig,
    SCoReTrainer,
    SelfRewardDPOConfig,
    SelfRewardDPOTrainer,
    SPCConfig,
    SPCTrainer,
    SPIRALConfig,
    SPIRALTrainer,
    STaRConfig,
    STaRTrainer,
)
from selfgen.train.llm.lm import LMConfig, seed_examples

EOS, RESERVED = "<|endoftext|>", "<|reserved_0|>"
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="session")
def bpe_tokenizer_files(tmp_path_factory):
    """A byte-level BPE (vocabulary 512) trained on 3000 worked examples in every seed format, saved once."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    corpus = [pair.prompt + pair.completion for pair in seed_examples(LMConfig(num_seed_examples=3000, seed=0))]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = [EOS, RESERVED, "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, additional_special_tokens=specials[1:])
    tokenizer.chat_template = CHATML
    directory = tmp_path_factory.mktemp("bpe")
    tokenizer.save_pretrained(directory)
    return directory


def fresh_tokenizer(directory):
    """A fresh copy per test (the trainers normalise the tokenizer in place)."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(directory)
    assert tokenizer.pad_token is None and tokenizer.padding_side == "right"  # what the trainer must fix
    return tokenizer


def build_model(architecture: str, vocab_size: int, eos_id: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if architecture == "gpt2":
        config = GPT2Config(
            vocab_size=vocab_size, n_positions=512, n_embd=32, n_layer=2, n_head=2, bos_token_id=eos_id, eos_token_id=eos_id
        )
        return GPT2LMHeadModel(config)
    shared = dict(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, eos_token_id=eos_id, bos_token_id=None,
    )
    if architecture == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**shared))
    return LlamaForCausalLM(LlamaConfig(**shared))


TINY = dict(
    iterations=1, problems_per_iteration=3, eval_problems=3, samples_per_problem=2, max_train_steps=1,
    train_batch_size=4, max_new_tokens=12, max_digits=2, logging_steps=1,
)
RECIPES = {
    "star": (STaRTrainer, STaRConfig, {"samples_per_problem": 1}),
    "bstar": (BSTaRTrainer, BSTaRConfig, {"temperature_grid": [1.0], "threshold_grid": [0.5], "probe_problems": 2}),
    "rest_em": (ReSTEMTrainer, ReSTEMConfig, {}),
    "score": (SCoReTrainer, SCoReConfig, {}),
    "self_reward_dpo": (SelfRewardDPOTrainer, SelfRewardDPOConfig, {"num_judgements": 2, "judge_max_new_tokens": 12}),
    "grpo": (GRPOTrainer, GRPOConfig, {}),
    "co_reward": (CoRewardTrainer, CoRewardConfig, {}),
    "rlccf": (RLCCFTrainer, RLCCFConfig, {"num_models": 2}),
    "laser": (LaSeRTrainer, LaSeRConfig, {"best_of_n": 2, "best_of_n_problems": 2, "self_reward_token": RESERVED}),
    "expo": (ExPOTrainer, ExPOConfig, {}),
    "spiral": (
        SPIRALTrainer, SPIRALConfig,
        {"min_digits": 1, "games": ["kuhn"], "games_per_iteration": 2, "eval_games": 1, "warmup_games": 2, "warmup_steps": 1,
         "warmup_replay": 0.5, "move_max_new_tokens": 6},
    ),
    "spc": (
        SPCTrainer, SPCConfig,
        {"detection_problems": 2, "validation_samples": 2, "critic_samples": 2, "warmup_examples": 6,
         "warmup_train_steps": 1, "critic_max_new_tokens": 8},
    ),
    "rest_mcts": (
        ReSTMCTSTrainer, ReSTMCTSConfig,
        {"search_eval_problems": 1, "value_eval_pairs": 2, "num_rollouts": 1, "branch": 2, "value_train_steps": 1,
         "step_max_new_tokens": 6},
    ),
}
ARCHITECTURES = ("gpt2", "qwen2", "llama")
IN_CI = {("gpt2", "grpo"), ("qwen2", "star"), ("llama", "rest_em")}
GRID = [
    pytest.param(arch, name, marks=() if (arch, name) in IN_CI else pytest.mark.slow, id=f"{arch}-{name}")
    for arch in ARCHITECTURES
    for name in RECIPES
]


@pytest.mark.parametrize(("architecture", "recipe"), GRID)
def test_one_iteration_of_every_recipe_on_real_architectures(tmp_path, bpe_tokenizer_files, architecture, recipe):
    tokenizer = fresh_tokenizer(bpe_tokenizer_files)
    model = build_model(architecture, len(tokenizer), tokenizer.eos_token_id)
    trainer_class, config_class, options = RECIPES[recipe]
    prompt_format = "chat" if architecture == "qwen2" else "arith"
    config = config_class(output_dir=str(tmp_path / "run"), task="add", prompt_format=prompt_format, **{**TINY, **options})
    trainer = trainer_class(model=model, tokenizer=tokenizer, config=config)
    assert trainer.tokenizer.padding_side == "left" and trainer.tokenizer.pad_token == EOS
    prompt = trainer.prompt(trainer.eval_set[0])
    assert prompt.startswith("<|im_start|>system\n" if prompt_format == "chat" else "Q:")
    report = trainer.train()
    assert [record["iteration"] for record in report.history] == [0, 1]
    assert "accuracy" in report[1] and report[1]["time_rollout_s"] > 0.0
    reloaded = AutoModelForCausalLM.from_pretrained(report.model_dir).eval()
    assert type(reloaded) is type(model)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, trainer.policy.eval()(ids).logits)
