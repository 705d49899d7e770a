"""The LLM core on transformers architectures: selective (chunked) logprobs equal a full log-softmax,
rollout scores equal a full forward, dropout is off for policy gradients, prompt/completion token
boundaries follow the joint tokenisation, ``torch_dtype`` loading."""

import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from selfgen.train.llm import objectives
from selfgen.train.llm.grpo import GRPOConfig, GRPOTrainer
from selfgen.train.llm.modeling import build_char_tokenizer, load_policy, resolve_dtype
from selfgen.train.llm.objectives import (
    DPOCollator,
    PreferencePair,
    SFTCollator,
    TextPair,
    encode_pair,
    split_continuation,
    token_logprobs,
)
from selfgen.train.llm.rollout import SamplingParams, generate_rollouts


def tiny_qwen2(vocab_size: int, seed: int = 0, **overrides) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False, **overrides,
    )
    return Qwen2ForCausalLM(config).eval()


def full_logprobs(model, input_ids, attention_mask, temperature=1.0):
    """The reference: every position's full-vocabulary float32 log-softmax, gathered."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask,
                   position_ids=objectives.position_ids_from_mask(attention_mask)).logits[:, :-1].float()
    return (logits / temperature).log_softmax(-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)


@pytest.mark.parametrize("chunk_elements", [2**24, 7 * 97])  # one chunk; 7 rows per chunk
def test_selective_logprobs_equal_full_log_softmax_with_gradients(monkeypatch, chunk_elements):
    monkeypatch.setattr(objectives, "LOGIT_CHUNK_ELEMENTS", chunk_elements)
    model = tiny_qwen2(97)
    input_ids = torch.randint(0, 97, (3, 11), generator=torch.Generator().manual_seed(1))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :3] = 0  # left padding
    mask = torch.ones(3, 5, dtype=torch.long)
    mask[2, 3:] = 0
    ours = token_logprobs(model, input_ids, attention_mask, temperature=0.7, last=5, mask=mask)
    reference = full_logprobs(model, input_ids, attention_mask, 0.7)[:, -5:] * mask
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    assert (ours[2, 3:] == 0).all()
    weight = model.lm_head.weight
    torch.testing.assert_close(torch.autograd.grad(ours.sum(), weight)[0], torch.autograd.grad(reference.sum(), weight)[0])


def test_rollout_logprobs_equal_a_full_forward_within_1e5():
    tokenizer = build_char_tokenizer()
    model = tiny_qwen2(len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    prompts = ["Q:1+2\n", "Q:345+78\n"]
    params = SamplingParams(temperature=0.8, num_samples=3, max_new_tokens=10, stop_strings=("7",))
    rollouts = generate_rollouts(model, tokenizer, prompts, params, seed=2)
    assert len({tuple(r.completion_ids) for r in rollouts}) > 1
    for rollout in rollouts:
        ids = torch.tensor([rollout.prompt_ids + rollout.completion_ids])
        with torch.no_grad():
            expected = full_logprobs(model, ids, torch.ones_like(ids), 0.8)[0, len(rollout.prompt_ids) - 1 :]
        torch.testing.assert_close(torch.tensor(rollout.logprobs), expected, rtol=1e-5, atol=1e-5)


def first_step_logs(tmp_path, disable_dropout: bool) -> dict:
    tokenizer = build_char_tokenizer()
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128, resid_pdrop=0.1,
        embd_pdrop=0.1, attn_pdrop=0.1, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config).eval()
    grpo = GRPOConfig(
        output_dir=str(tmp_path / "run"), iterations=1, problems_per_iteration=4, eval_problems=1,
        samples_per_problem=4, max_train_steps=1, train_batch_size=16, max_new_tokens=8, max_digits=2,
        logging_steps=1, disable_dropout=disable_dropout, beta=0.04,
    )
    GRPOTrainer(model=model, tokenizer=tokenizer, task="add", config=grpo).train()
    return json.loads((tmp_path / "run" / "iteration-1" / "logs" / "metrics.jsonl").read_text().splitlines()[0])


def test_dropout_is_off_for_the_first_grpo_step_of_gpt2(tmp_path):
    logs = first_step_logs(tmp_path / "off", disable_dropout=True)
    assert logs["clip_fraction"] == 0 and logs["kl"] < 1e-4
    kept = first_step_logs(tmp_path / "on", disable_dropout=False)  # the switch keeps dropout: ratios move
    assert kept["clip_fraction"] > 0 or kept["kl"] > 1e-4


def metaspace_tokenizer() -> PreTrainedTokenizerFast:
    """A SentencePiece-style BPE (``▁`` for spaces, prepended to the text's first piece), trained offline."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex("\n"), behavior="isolated"), pre_tokenizers.Metaspace(prepend_scheme="first")]
    )
    backend.decoder = decoders.Metaspace(prepend_scheme="first")
    corpus = [f"Question: {a} plus {b}\nAnswer: {a + b} apples" for a in range(30) for b in range(0, 30, 7)]
    trainer = trainers.BpeTrainer(vocab_size=160, special_tokens=["<pad>", "<eos>", "<unk>"])
    backend.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    tokenizer.padding_side = "left"
    return tokenizer


def test_targets_are_the_tokens_that_follow_the_prompt_with_a_metaspace_tokenizer():
    tokenizer = metaspace_tokenizer()
    prompt, completion = "Question: 12 plus 7\n", "Answer: 19 apples"
    alone = tokenizer(completion, add_special_tokens=False).input_ids
    assert tokenizer.convert_ids_to_tokens(alone)[0].startswith("▁")  # the spurious leading ▁ of the old split
    prompt_ids, completion_ids = encode_pair(tokenizer, prompt, completion, max_length=64)
    joint = tokenizer(prompt + completion, add_special_tokens=False).input_ids
    # what generation conditions on is the prompt's own tokenisation; the targets are the joint tail
    assert prompt_ids == tokenizer(prompt, add_special_tokens=False).input_ids
    assert prompt_ids + completion_ids[:-1] == joint and completion_ids[-1] == tokenizer.eos_token_id
    assert completion_ids[:-1] != alone
    assert tokenizer.decode(prompt_ids + completion_ids, skip_special_tokens=True) == prompt + completion
    sft = SFTCollator(tokenizer)([TextPair(prompt, completion, weighted_spans=((8, 10, 3.0),))])
    assert sft["input_ids"][0][sft["completion_mask"][0].bool()].tolist() == completion_ids
    weighted = [tokenizer.decode([i]) for i, w in zip(sft["input_ids"][0], sft["loss_weights"][0]) if w == 3.0]
    assert "".join(weighted).strip() == "19"
    dpo = DPOCollator(tokenizer)([PreferencePair(prompt, completion, "Answer: 20 apples")])
    assert dpo["input_ids"][0][dpo["completion_mask"][0].bool()].tolist() == completion_ids


class SlowView:
    """A tokenizer without offsets (``is_fast`` False), delegating ids to a fast one."""

    is_fast = False

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, text, add_special_tokens=False):
        return self.tokenizer(text, add_special_tokens=add_special_tokens)


def test_slow_tokenizers_split_after_the_prompt_ids_when_they_are_a_prefix():
    tokenizer = metaspace_tokenizer()
    prompt, completion = "Question: 12 plus 7\n", "Answer: 19 apples"
    fast = split_continuation(tokenizer, prompt, completion)
    slow = split_continuation(SlowView(tokenizer), prompt, completion)
    assert slow[:2] == fast[:2] and slow[2] == []


def test_load_policy_torch_dtype(tmp_path):
    tokenizer = build_char_tokenizer()
    model = tiny_qwen2(len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    model.to(torch.bfloat16).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert load_policy(tmp_path)[0].dtype == torch.float32  # default: float32, as before
    assert load_policy(tmp_path, "auto")[0].dtype == torch.bfloat16  # the checkpoint's own dtype
    policy, tokenizer = load_policy(tmp_path, "bf16")
    assert policy.dtype == torch.bfloat16
    params = SamplingParams(temperature=1.0, num_samples=2, max_new_tokens=6)
    bf16 = generate_rollouts(policy, tokenizer, ["Q:1+2\n"], params, seed=0)
    fp32 = load_policy(tmp_path, "fp32")[0]
    for rollout in bf16:  # bf16 on CPU samples and scores; float32 scores of the same ids agree loosely
        ids = torch.tensor([rollout.prompt_ids + rollout.completion_ids])
        with torch.no_grad():
            expected = token_logprobs(fp32, ids, torch.ones_like(ids))[0, len(rollout.prompt_ids) - 1 :]
        torch.testing.assert_close(torch.tensor(rollout.logprobs), expected, rtol=0, atol=0.1)
    with pytest.raises(ValueError, match="torch_dtype"):
        resolve_dtype("int8")
