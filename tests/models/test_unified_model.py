import pytest
import torch

from selfgen import UnifiedTransformer
from selfgen.data.scenes import PAD_ID, VOCAB


@pytest.fixture
def model():
    torch.manual_seed(0)
    model = UnifiedTransformer(vocab_size=len(VOCAB), dim=32, num_layers=2, num_heads=2).eval()
    with torch.no_grad():  # the velocity head starts at zero; give it weights so outputs depend on inputs
        model.velocity_head.weight.normal_(std=0.1)
    return model


def _inputs(batch=2):
    generator = torch.Generator().manual_seed(1)
    prompt_ids = torch.randint(5, len(VOCAB), (batch, 12), generator=generator)
    prompt_ids[:, 9:] = PAD_ID
    question_ids = torch.randint(5, len(VOCAB), (batch, 16), generator=generator)
    question_ids[:, :4] = PAD_ID
    return {
        "sample": torch.randn(batch, 3, 32, 32, generator=generator),
        "timestep": torch.tensor([100.0, 700.0][:batch]),
        "prompt_ids": prompt_ids,
        "pixel_values": torch.rand(batch, 3, 32, 32, generator=generator) * 2 - 1,
        "question_ids": question_ids,
    }


def test_one_forward_serves_both_tasks(model):
    output = model(**_inputs())
    assert output.sample.shape == (2, 3, 32, 32) and output.logits.shape == (2, 16, len(VOCAB))
    with pytest.raises(ValueError, match="timestep and prompt_ids"):
        model(sample=torch.zeros(1, 3, 32, 32))


def test_understanding_does_not_depend_on_generation_weights(model):
    inputs = _inputs()
    before = model(pixel_values=inputs["pixel_values"], question_ids=inputs["question_ids"]).logits
    with torch.no_grad():
        for param in model.generation_parameters():
            param.add_(torch.randn_like(param))
    after = model(pixel_values=inputs["pixel_values"], question_ids=inputs["question_ids"]).logits
    torch.testing.assert_close(before, after)
    names = {name for name, _ in model.named_parameters() if model.is_generation_parameter(name)}
    assert "blocks.0.attn.gen_to_q.weight" in names and "blocks.0.mlp.1.0.weight" in names
    assert (
        "blocks.0.attn.to_q.weight" not in names and "lm_head.weight" not in names and "token_embed.weight" not in names
    )


def test_question_tokens_are_causal_and_pads_are_ignored(model):
    inputs = _inputs()
    logits = model(pixel_values=inputs["pixel_values"], question_ids=inputs["question_ids"]).logits
    changed = inputs["question_ids"].clone()
    changed[:, -1] = 7
    later = model(pixel_values=inputs["pixel_values"], question_ids=changed).logits
    torch.testing.assert_close(logits[:, :-1], later[:, :-1])
    assert not torch.allclose(logits[:, -1], later[:, -1])


def test_generation_reads_the_prompt_and_ignores_padding_content(model):
    inputs = _inputs()
    velocity = model(sample=inputs["sample"], timestep=inputs["timestep"], prompt_ids=inputs["prompt_ids"]).sample
    other = inputs["prompt_ids"].clone()
    other[:, 3] = 9 if other[0, 3] != 9 else 10
    assert not torch.allclose(
        velocity, model(sample=inputs["sample"], timestep=inputs["timestep"], prompt_ids=other).sample
    )


def test_attention_backends_agree(model):
    inputs = _inputs()
    reference = model(**inputs)
    model.set_attention_backend("math")
    math_output = model(**inputs)
    torch.testing.assert_close(math_output.sample, reference.sample, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(math_output.logits, reference.logits, atol=1e-5, rtol=1e-4)


def test_save_and_reload_is_exact(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    reloaded = UnifiedTransformer.from_pretrained(tmp_path).eval()
    inputs = _inputs()
    first, second = model(**inputs), reloaded(**inputs)
    for name, weight in reloaded.state_dict().items():
        assert torch.equal(weight, model.state_dict()[name]), name
    torch.testing.assert_close(first.sample, second.sample)
    torch.testing.assert_close(first.logits, second.logits)


def test_generation_path_with_small_patches_and_conv_stem_head():
    torch.manual_seed(0)
    model = UnifiedTransformer(
        vocab_size=len(VOCAB), dim=32, num_layers=1, num_heads=2, generation_patch_size=2, generation_conv_channels=8
    ).eval()
    inputs = _inputs()
    output = model(**inputs)
    assert output.sample.shape == (2, 3, 32, 32) and output.logits.shape == (2, 16, len(VOCAB))
    torch.testing.assert_close(output.sample, torch.zeros_like(output.sample))  # the conv head starts at zero
    assert model.gen_image_pos.shape[1] == 256 and model.und_image_pos.shape[1] == 64  # 2x2 vs 4x4 tokens
    names = {name for name, _ in model.named_parameters() if model.is_generation_parameter(name)}
    assert {"gen_conv_in.weight", "gen_conv_out.weight"} <= names
    with torch.no_grad():
        model.gen_conv_out.weight.normal_(std=0.1)
    moved = model(sample=inputs["sample"], timestep=inputs["timestep"], prompt_ids=inputs["prompt_ids"]).sample
    shifted = inputs["sample"].clone()
    shifted[:, :, :2, :2] += 1.0  # one 2x2 generation patch changes -> its conv neighbourhood changes
    other = model(sample=shifted, timestep=inputs["timestep"], prompt_ids=inputs["prompt_ids"]).sample
    assert not torch.allclose(moved, other)
    with pytest.raises(ValueError, match="generation_patch_size"):
        UnifiedTransformer(vocab_size=len(VOCAB), generation_patch_size=3)
    with pytest.raises(ValueError, match="generation_conv_channels"):
        UnifiedTransformer(vocab_size=len(VOCAB), generation_conv_channels=-1)


def test_understanding_path_with_its_own_conv_stem_and_patches():
    torch.manual_seed(0)
    model = UnifiedTransformer(
        vocab_size=len(VOCAB), dim=32, num_layers=1, num_heads=2, patch_size=8, generation_patch_size=4,
        understanding_conv_channels=8,
    ).eval()
    inputs = _inputs()
    logits = model(pixel_values=inputs["pixel_values"], question_ids=inputs["question_ids"]).logits
    assert logits.shape == (2, 16, len(VOCAB))
    assert model.und_image_pos.shape[1] == 16 and model.gen_image_pos.shape[1] == 64  # 8x8 vs 4x4 patches
    assert model.und_patch_embed.in_features == 8 * 8 * 8
    assert not any(model.is_generation_parameter(name) for name, _ in model.und_conv_in.named_parameters("und_conv_in"))
    shifted = inputs["pixel_values"].clone()
    shifted[0, :, 7, 7] += 1.0  # one pixel at a patch corner: the conv stem carries it into the neighbouring patches
    tokens, moved = (model._embed_clean_image(pixels, torch.float32) for pixels in (inputs["pixel_values"], shifted))
    changed = (tokens - moved).abs().amax(-1)[0] > 1e-6
    assert changed.nonzero().flatten().tolist() == [0, 1, 4, 5]  # the 2x2 patches around pixel (7, 7)
    with pytest.raises(ValueError, match="understanding_conv_channels"):
        UnifiedTransformer(vocab_size=len(VOCAB), understanding_conv_channels=-1)


def test_learned_understanding_positions_save_and_reload(tmp_path):
    torch.manual_seed(0)
    model = UnifiedTransformer(vocab_size=len(VOCAB), dim=32, num_layers=1, num_heads=2, learned_understanding_positions=True)
    with torch.no_grad():
        model.und_image_pos.add_(torch.randn_like(model.und_image_pos))  # trained away from sin-cos
    model.save_pretrained(tmp_path)
    reloaded = UnifiedTransformer.from_pretrained(tmp_path)
    assert torch.equal(reloaded.und_image_pos, model.und_image_pos)
    assert not torch.equal(reloaded.und_image_pos, UnifiedTransformer(vocab_size=len(VOCAB), dim=32, num_layers=1, num_heads=2).und_image_pos)


def _with_trained_weights(model):
    with torch.no_grad():  # a "pretrained" generator: every weight non-trivial (the velocity head included)
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model


@pytest.mark.parametrize("prompt", [False, True])
def test_generation_adaln_starts_as_the_same_function_then_reads_the_timestep_and_prompt(prompt):
    from selfgen.train.unified import with_generation_adaln

    torch.manual_seed(0)
    base = _with_trained_weights(UnifiedTransformer(vocab_size=len(VOCAB), dim=32, num_layers=2, num_heads=2)).eval()
    modulated = with_generation_adaln(base, prompt).eval()
    inputs = _inputs()
    generation = {key: inputs[key] for key in ("sample", "timestep", "prompt_ids")}
    torch.testing.assert_close(modulated(**inputs).sample, base(**inputs).sample, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(modulated(**inputs).logits, base(**inputs).logits, rtol=1e-5, atol=1e-6)
    names = {name for name, _ in modulated.named_parameters() if modulated.is_generation_parameter(name)}
    added = set(dict(modulated.named_parameters())) - set(dict(base.named_parameters()))
    assert added and added <= names  # every new weight belongs to the generation path (SRUM trains it)
    assert ("gen_prompt_proj.weight" in added) == prompt and "blocks.1.gen_modulation.1.weight" in added
    # the modulation, once trained, changes the velocity and makes it depend on the timestep through it
    with torch.no_grad():
        for name, param in modulated.named_parameters():
            if name in added:
                param.normal_(std=0.1)
    moved = modulated(**generation).sample
    assert not torch.allclose(moved, base(**generation).sample, atol=1e-4)
    pixels, questions = inputs["pixel_values"], inputs["question_ids"]  # understanding never sees the modulation
    torch.testing.assert_close(
        modulated(pixel_values=pixels, question_ids=questions).logits,
        base(pixel_values=pixels, question_ids=questions).logits, rtol=1e-5, atol=1e-6,
    )
    # the condition: t_emb alone, or plus the mean of the valid prompt embeddings (padding content never counts)
    t_emb, text = torch.randn(2, 32), torch.randn(2, 12, 32)
    valid = torch.arange(12)[None] < torch.tensor([[9], [5]])
    condition = modulated._generation_condition(t_emb, text, valid)
    text_pads_changed, text_word_changed = text.clone(), text.clone()
    text_pads_changed[:, 9:] += 1.0
    text_word_changed[:, 0] += 1.0
    torch.testing.assert_close(modulated._generation_condition(t_emb, text_pads_changed, valid), condition)
    assert torch.allclose(modulated._generation_condition(t_emb, text_word_changed, valid), condition) != prompt
    assert prompt or torch.equal(condition, t_emb)
    with pytest.raises(ValueError, match="generation_adaln_prompt needs generation_adaln"):
        UnifiedTransformer(vocab_size=len(VOCAB), generation_adaln_prompt=True)


def test_generation_adaln_save_and_reload_is_exact(tmp_path):
    torch.manual_seed(0)
    model = _with_trained_weights(
        UnifiedTransformer(vocab_size=len(VOCAB), dim=32, num_layers=1, num_heads=2, generation_adaln=True,
                           generation_adaln_prompt=True)
    ).eval()
    model.save_pretrained(tmp_path)
    reloaded = UnifiedTransformer.from_pretrained(tmp_path).eval()
    state = reloaded.state_dict()
    assert all(torch.equal(value, state[name]) for name, value in model.state_dict().items())
    inputs = _inputs()
    torch.testing.assert_close(reloaded(**inputs).sample, model(**inputs).sample, rtol=1e-5, atol=1e-6)


def test_generation_conv_blocks_start_as_identity_and_are_generation_weights(tmp_path):
    kwargs = dict(vocab_size=len(VOCAB), dim=32, num_layers=1, num_heads=2, generation_conv_channels=8)
    torch.manual_seed(0)
    plain = UnifiedTransformer(**kwargs).eval()
    torch.manual_seed(0)
    blocks = UnifiedTransformer(**kwargs, generation_conv_blocks=2).eval()
    missing, unexpected = blocks.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(name.startswith("gen_blocks_") for name in missing)
    assert all(blocks.is_generation_parameter(name) for name in missing)  # SRUM's generation update trains them
    with torch.no_grad():  # a trained conv head, so the velocity depends on the input
        for model in (plain, blocks):
            model.gen_conv_out.weight.copy_(torch.linspace(-0.1, 0.1, model.gen_conv_out.weight.numel()).view_as(
                model.gen_conv_out.weight))
    inputs = _inputs()
    generation = {k: inputs[k] for k in ("sample", "timestep", "prompt_ids")}
    torch.testing.assert_close(blocks(**generation).sample, plain(**generation).sample, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        for block in (*blocks.gen_blocks_in, *blocks.gen_blocks_out):
            block.conv2.weight.normal_(std=0.1)
    early = blocks(**generation).sample
    later = blocks(**{**generation, "timestep": generation["timestep"] + 200}).sample
    assert not torch.allclose(early, plain(**generation).sample) and not torch.allclose(early, later)
    blocks.save_pretrained(tmp_path)
    reloaded = UnifiedTransformer.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(reloaded(**generation).sample, early, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="generation_conv_blocks"):
        UnifiedTransformer(vocab_size=len(VOCAB), generation_conv_blocks=1)  # needs the conv stem/head


def test_latent_generation_denoises_the_autoencoder_grid_from_a_zero_velocity_and_keeps_understanding_on_pixels():
    kwargs = dict(vocab_size=len(VOCAB), dim=32, num_layers=1, num_heads=2)
    torch.manual_seed(0)
    latent = UnifiedTransformer(**kwargs, generation_patch_size=1, generation_latent_channels=4,
                                generation_latent_size=8).eval()
    assert latent.generation_shape == (4, 8, 8) and latent.gen_image_pos.shape == (1, 64, 32)
    assert latent.gen_patch_embed.in_features == 4 and latent.velocity_head.out_features == 4  # vae2llm / llm2vae
    inputs = _inputs()
    velocity = latent(sample=torch.randn(2, 4, 8, 8), timestep=inputs["timestep"], prompt_ids=inputs["prompt_ids"])
    assert velocity.sample.shape == (2, 4, 8, 8) and not velocity.sample.abs().any()  # llm2vae starts at zero
    logits = latent(pixel_values=inputs["pixel_values"], question_ids=inputs["question_ids"]).logits
    assert logits.shape == (2, 16, len(VOCAB))
    for bad in ({"generation_latent_channels": 4}, {"generation_latent_size": 8}):
        with pytest.raises(ValueError, match="both be > 0"):
            UnifiedTransformer(**kwargs, **bad)
    with pytest.raises(ValueError, match="generation_patch_size"):
        UnifiedTransformer(**kwargs, generation_patch_size=3, generation_latent_channels=4, generation_latent_size=8)
