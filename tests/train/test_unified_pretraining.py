import json
import random

import numpy as np
import pytest
import torch

from selfgen import UnifiedPipeline, UnifiedTransformer
from selfgen.data.scenes import (
    MAX_QUESTION_TOKENS,
    PAD_ID,
    TOKEN_IDS,
    VOCAB,
    SceneObject,
    ScenesDataset,
    encode_question,
    parse_prompt,
    prompt_split,
    question_about_prompt,
    relation_in_scene,
    relation_pair,
    render_scene,
)
from selfgen.train.srum_shapes import region_slices
from selfgen.eval.scenes import detect_objects, judge_image
from selfgen.train.unified import (
    JointObjective,
    UnifiedConfig,
    build_pipeline,
    checkpoint_model,
    collate,
    judge_verification,
    whole_prompt_threshold,
    occupancy_auc,
    question_lm_loss,
    train,
    with_learned_understanding_positions,
    with_new_understanding_encoder,
)


def test_joint_objective_answers_every_question_of_a_scene_and_its_loss_falls():
    torch.manual_seed(0)
    model = UnifiedTransformer(vocab_size=len(VOCAB), pad_token_id=PAD_ID, dim=32, num_layers=1, num_heads=2)
    dataset = ScenesDataset(8, seed=0, questions_per_image=3)
    batch = collate([dataset[index] for index in range(8)])
    assert batch["question_ids"].shape == (8, 3, MAX_QUESTION_TOKENS)
    objective = JointObjective(cfg_dropout=0.0, understanding_weight=1.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        torch.manual_seed(1)  # the same noise every step: only the weights change
        loss, logs = objective.compute_loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(logs["loss_understanding"])
    assert losses[-1] < 0.7 * losses[0]


def test_continuing_from_a_missing_stage_names_it(tmp_path):
    config = UnifiedConfig(output_dir=str(tmp_path), pretrained=str(tmp_path / "no-stage1"), max_train_steps=1)
    with pytest.raises(FileNotFoundError, match="no-stage1"):
        train(config)


def _colours(pixels: torch.Tensor) -> list[list[float]]:
    return np.unique(pixels.flatten(1).T.numpy(), axis=0).tolist()


def test_scrambled_questions_reject_a_patch_scattered_copy_of_the_scene():
    plain = ScenesDataset(6, seed=0, questions_per_image=2)[1]
    assert torch.equal(plain["question_pixel_values"], plain["pixel_values"][None].expand(2, -1, -1, -1))
    item = ScenesDataset(6, seed=0, questions_per_image=2, scrambled_fraction=1.0)[1]
    assert torch.equal(item["pixel_values"], plain["pixel_values"])  # generation still sees the scene
    assert item["question_ids"].tolist() == [encode_question(question_about_prompt(item["prompt"]))] * 2
    assert item["answer_id"].tolist() == [TOKEN_IDS["no"]] * 2
    for scrambled in item["question_pixel_values"]:
        assert not torch.equal(scrambled, item["pixel_values"])
        assert _colours(scrambled) == _colours(item["pixel_values"])  # same colours, broken shapes
    with pytest.raises(ValueError, match="scrambled_fraction"):
        ScenesDataset(6, scrambled_fraction=1.5)


class _QuadrantOracle:
    """Answers "is there an object in the {r}?" from the pixels (or ignores the image)."""

    def __init__(self, sees_the_image: bool) -> None:
        self.sees_the_image = sees_the_image

    def yes_probability(self, images: np.ndarray, questions: list[str]) -> torch.Tensor:
        slices = region_slices(*images.shape[1:3])
        regions = [question.split(" in the ")[1].rstrip("?") for question in questions]
        lit = [float(image[slices[region]].any()) for image, region in zip(images, regions)]
        return torch.tensor(lit if self.sees_the_image else [0.4] * len(lit))


def test_occupancy_auc_tells_a_model_that_locates_objects_from_one_that_cannot():
    assert occupancy_auc(_QuadrantOracle(sees_the_image=True), num_scenes=12) > 0.7  # by any pixel, not by centre
    assert occupancy_auc(_QuadrantOracle(sees_the_image=False), num_scenes=12) == 0.5


def test_region_fraction_asks_region_questions_that_match_the_scene():
    dataset = ScenesDataset(6, seed=0, questions_per_image=3, region_fraction=1.0)
    for index in range(6):
        item = dataset[index]
        prompt, objects, _ = dataset.example(index)
        assert torch.equal(item["pixel_values"], ScenesDataset(6, seed=0)[index]["pixel_values"])
        for ids, answer in zip(item["question_ids"].tolist(), item["answer_id"].tolist()):
            words = [VOCAB[token] for token in ids if token != PAD_ID]
            region = words[-2]  # <q> is there ... in the {region} <a>
            assert words[-3:-1] == ["the", region] and "in" in words
            noun = None if words[4] == "object" else f"{words[4]} {words[5]}"
            there = [obj for obj in objects if obj.region == region and noun in (None, f"{obj.colour} {obj.shape}")]
            assert answer == TOKEN_IDS["yes" if there else "no"]
    with pytest.raises(ValueError, match="region_fraction"):
        ScenesDataset(6, region_fraction=-0.1)
    with pytest.raises(ValueError, match="occupancy_fraction"):
        ScenesDataset(6, region_fraction=0.5, occupancy_fraction=0.6)
    occupancy = ScenesDataset(6, seed=0, questions_per_image=3, occupancy_fraction=1.0)[2]
    assert all(VOCAB[ids[-5]] == "object" for ids in occupancy["question_ids"].tolist())  # object in the r <a>


@pytest.mark.parametrize("stage", ["understanding", "generation"])
def test_one_path_stage_keeps_the_other_paths_weights_and_logs_occupancy(tmp_path, stage):
    torch.manual_seed(0)
    model = UnifiedTransformer(vocab_size=len(VOCAB), pad_token_id=PAD_ID, dim=32, num_layers=1, num_heads=2)
    build_pipeline(model).save_pretrained(tmp_path / "start")
    config = UnifiedConfig(
        output_dir=str(tmp_path / "run"),
        pretrained=str(tmp_path / "start"),
        max_train_steps=3,
        train_batch_size=2,
        learning_rate=1e-2,
        num_examples=6,
        questions_per_image=2,
        region_fraction=0.5,
        train_parameters=stage,
        understanding_weight=float(stage == "understanding"),
        occupancy_eval_steps=3,
    )
    trained = UnifiedPipeline.from_pretrained(train(config).pipeline_dir).transformer
    start = dict(model.named_parameters())
    for name, param in trained.named_parameters():  # the frozen path bit for bit, every weight of the other moved
        assert torch.equal(param, start[name]) == (model.is_generation_parameter(name) == (stage == "understanding")), name
    record = json.loads((tmp_path / "run" / "logs" / "occupancy_auc.jsonl").read_text())
    assert record["step"] == 3 and 0 <= record["occupancy_auc"] <= 1
    with pytest.raises(ValueError, match="train_parameters"):
        UnifiedConfig(train_parameters="judge")


def test_generation_weight_zero_trains_understanding_alone():
    torch.manual_seed(0)
    model = UnifiedTransformer(vocab_size=len(VOCAB), pad_token_id=PAD_ID, dim=32, num_layers=1, num_heads=2)
    batch = collate([ScenesDataset(4, seed=0, questions_per_image=2)[index] for index in range(4)])
    loss, logs = JointObjective(cfg_dropout=0.0, understanding_weight=2.0, generation_weight=0.0).compute_loss(model, batch)
    assert "loss_generation" not in logs and torch.isclose(loss, torch.tensor(2 * logs["loss_understanding"]))
    loss.backward()
    assert all(param.grad is None or not param.grad.any() for param in model.generation_parameters())  # no flow forward


def test_prompt_fraction_asks_whole_prompt_questions_with_training_split_negatives():
    dataset = ScenesDataset(12, seed=0, questions_per_image=2, prompt_fraction=1.0)
    answers = []
    for index in range(12):
        item = dataset[index]
        prompt = dataset.example(index)[0]
        for ids, answer in zip(item["question_ids"].tolist(), item["answer_id"].tolist()):
            words = [VOCAB[token] for token in ids if token != PAD_ID][1:-1]  # strip <q> ... <a>
            assert words[:4] == ["does", "the", "image", "show"]
            asked = " ".join(words[4:])
            assert (answer == TOKEN_IDS["yes"]) == (asked == prompt)
            assert asked in prompt_split(parse_prompt(asked).category, "train")  # never a held-out prompt
            answers.append(answer)
    assert TOKEN_IDS["yes"] in answers and TOKEN_IDS["no"] in answers
    with pytest.raises(ValueError, match="prompt_fraction"):
        ScenesDataset(6, region_fraction=0.5, prompt_fraction=0.6)


class _RuleJudgePipe:
    """Answers every yes/no question from the pixels with the rule-based detector (or ignores the image)."""

    def __init__(self, sees_the_image: bool) -> None:
        self.sees_the_image = sees_the_image

    @staticmethod
    def _answer(image: np.ndarray, question: str) -> bool:
        if question.startswith("does the image show "):
            return judge_image(image, question.removeprefix("does the image show ").rstrip("?"))
        what, region = question.removeprefix("is there ").rstrip("?").split(" in the ")
        found = [
            f"{d.colour} {d.shape}" for d in detect_objects(image)
            if f"{'top' if d.cy < 16 else 'bottom'}-{'left' if d.cx < 16 else 'right'}" == region
        ]
        return bool(found) if what == "an object" else what.removeprefix("a ") in found

    def yes_probability(self, images: np.ndarray, questions: list[str]) -> torch.Tensor:
        if not self.sees_the_image:
            return torch.full((len(questions),), 0.4)
        return torch.tensor([float(self._answer(image, question)) for image, question in zip(images, questions)])


def test_judge_verification_scores_a_judge_that_reads_the_image_and_one_that_cannot():
    seeing = judge_verification(_RuleJudgePipe(sees_the_image=True), num_scenes=16)
    assert seeing["whole_prompt_accuracy"] == 1.0 and seeing["whole_prompt_auc"] == 1.0
    assert seeing["region_accuracy"] > 0.9
    kinds = {key.removeprefix("num_"): value for key, value in seeing.items() if key.startswith("num_")}
    assert sum(kinds.values()) == 16 and {"colour", "shape"} <= set(kinds) <= {"colour", "shape", "count", "relation"}
    assert all(seeing[f"paired_auc_{kind}"] == 1.0 for kind in kinds)
    blind = judge_verification(_RuleJudgePipe(sees_the_image=False), num_scenes=16)
    assert blind["whole_prompt_accuracy"] == 0.5 and blind["whole_prompt_auc"] == 0.5  # "no" to every prompt
    assert all(blind[key] == 0.5 for key in blind if key.startswith("paired_auc_") and key.count("_") == 2)
    assert blind["region_accuracy_low"] <= blind["region_accuracy"] <= blind["region_accuracy_high"]
    assert blind["region_accuracy_high"] < 1.0


def test_whole_prompt_threshold_is_chosen_where_the_judge_separates_and_applied():
    # P(yes) of own prompts 0.30-0.40, of negatives 0.10-0.20: 0.5 rejects every own prompt, 0.21..0.29 is perfect
    rng = np.random.default_rng(0)
    probability = np.stack([rng.uniform(0.3, 0.4, 50), rng.uniform(0.1, 0.2, 50), np.ones(50), np.ones(50)], 1)
    truth = np.tile([True, False, True, True], (50, 1))
    threshold = whole_prompt_threshold(probability, truth)
    assert 0.2 <= threshold < 0.3
    shy = _RuleJudgePipe(sees_the_image=True)
    scaled = type("Shy", (), {"yes_probability": lambda self, i, q: 0.3 * shy.yes_probability(i, q) + 0.05})()
    assert judge_verification(scaled, num_scenes=8)["whole_prompt_accuracy"] == 0.5  # 0.35 vs 0.05 at 0.5
    assert judge_verification(scaled, num_scenes=8, threshold=threshold)["whole_prompt_accuracy"] == 1.0


def test_a_new_understanding_encoder_keeps_every_other_weight_and_the_generation_output():
    torch.manual_seed(0)
    model = UnifiedTransformer(
        vocab_size=len(VOCAB), pad_token_id=PAD_ID, dim=32, num_layers=1, num_heads=2, generation_conv_channels=4
    ).eval()
    with torch.no_grad():
        model.gen_conv_out.weight.normal_(std=0.1)
    swapped = with_new_understanding_encoder(model, patch_size=8, understanding_conv_channels=4).eval()
    assert swapped.config.patch_size == 8 and swapped.generation_patch_size == 4
    assert swapped.und_patch_embed.in_features == 4 * 8 * 8 and model.und_conv_in is None
    old = dict(model.named_parameters())
    for name, param in swapped.named_parameters():
        if not name.startswith(("und_patch_embed", "und_conv_in")):
            assert torch.equal(param, old[name]), name
    generator = torch.Generator().manual_seed(0)
    sample, prompt_ids = torch.randn(2, 3, 32, 32, generator=generator), torch.randint(5, len(VOCAB), (2, 12))
    with torch.no_grad():
        expected = model(sample=sample, timestep=torch.tensor([300.0, 800.0]), prompt_ids=prompt_ids).sample
        actual = swapped(sample=sample, timestep=torch.tensor([300.0, 800.0]), prompt_ids=prompt_ids).sample
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
    assert expected.abs().max() > 1e-3  # the comparison is not between two zero velocities


def test_question_lm_loss_scores_the_question_words_and_skips_padding_and_the_answer():
    question_ids = torch.tensor([encode_question("is there a red circle?"), encode_question("how many red circles?")])
    confident = torch.full((2, MAX_QUESTION_TOKENS, len(VOCAB)), -20.0)
    confident[:, :-1].scatter_(2, question_ids[:, 1:, None], 20.0)  # every next token predicted with certainty
    assert question_lm_loss(confident, question_ids) < 1e-6
    wrong_padding_and_answer = confident.clone()
    wrong_padding_and_answer[question_ids == PAD_ID] = 0.0  # positions before the question starts
    wrong_padding_and_answer[:, -1] = 0.0  # the answer position
    torch.testing.assert_close(question_lm_loss(wrong_padding_and_answer, question_ids), question_lm_loss(confident, question_ids))
    wrong_word = confident.clone()
    wrong_word[0, -4] = 0.0  # the word before "circle": uniform over the vocabulary
    expected = np.log(len(VOCAB)) / int(((question_ids[:, :-1] != PAD_ID) & (question_ids[:, 1:] != PAD_ID)).sum())
    torch.testing.assert_close(question_lm_loss(wrong_word, question_ids), torch.tensor(expected, dtype=torch.float32), rtol=1e-4, atol=1e-5)


def test_question_lm_loss_can_keep_only_the_true_statements():
    question_ids = torch.tensor([encode_question("is there a red circle?"), encode_question("how many red circles?")])
    confident = torch.full((2, MAX_QUESTION_TOKENS, len(VOCAB)), -20.0)
    confident[:, :-1].scatter_(2, question_ids[:, 1:, None], 20.0)
    wrong_second = confident.clone()
    wrong_second[1] = 0.0  # the second question's words: uniform
    keep_first = torch.tensor([True, False])
    assert question_lm_loss(wrong_second, question_ids, keep_first) < 1e-6  # the dropped question costs nothing
    assert question_lm_loss(wrong_second, question_ids) > 0.5


def test_located_and_relation_questions_say_where_objects_are_and_never_ask_held_out_prompts():
    dataset = ScenesDataset(60, seed=0, questions_per_image=2, located_fraction=0.5, relation_fraction=0.5)
    answers, flipped, binding_scenes_asked = [], 0, 0
    for index in range(60):
        item = dataset[index]
        prompt, objects, _ = dataset.example(index)
        spec = parse_prompt(prompt)
        for ids, answer in zip(item["question_ids"].tolist(), item["answer_id"].tolist()):
            words = [VOCAB[token] for token in ids if token != PAD_ID][1:-1]
            answers.append(answer)
            if words[0] == "is":  # is there a {noun} in the {region}: about a noun of the scene
                noun, region = f"{words[3]} {words[4]}", words[-1]
                assert noun in {f"{obj.colour} {obj.shape}" for obj in objects}
                there = any(f"{o.colour} {o.shape}" == noun and o.region == region for o in objects)
                assert answer == TOKEN_IDS["yes" if there else "no"]
                continue
            asked = parse_prompt(" ".join(words[4:]))
            assert asked.text() in prompt_split(asked.category, "train")  # never a held-out prompt
            if asked.relation and asked.objects == spec.objects:  # the relation the two objects show, or its opposite
                shown = relation_in_scene(spec, objects)
                assert answer == TOKEN_IDS["yes" if asked.relation == shown.relation else "no"]
                flipped += answer == TOKEN_IDS["no"]
                binding_scenes_asked += spec.category == "binding"
            else:
                assert (answer == TOKEN_IDS["yes"]) == (asked.text() == prompt)
    assert 0.3 < np.mean(np.array(answers) == TOKEN_IDS["yes"]) < 0.7 and flipped > 0 and binding_scenes_asked > 0
    with pytest.raises(ValueError, match="located_fraction"):
        ScenesDataset(6, located_fraction=0.6, relation_fraction=0.6)


def test_relation_pairs_differ_only_in_direction_on_one_image():
    spec = parse_prompt("a red circle and a blue square")
    left = [SceneObject("red", "circle", 9, 0, 10), SceneObject("blue", "square", 9, 20, 11)]
    truths = {"a red circle left of a blue square", "a blue square right of a red circle"}
    orders = set()
    for seed in range(20):
        (true_q, yes), (flip_q, no) = relation_pair(spec, left, random.Random(seed), "train")
        assert (yes, no) == ("yes", "no")
        true_text, flip_text = (q.removeprefix("does the image show ").removesuffix("?") for q in (true_q, flip_q))
        assert true_text in truths and flip_text not in truths  # the flip is false about this image
        assert true_text.split()[:3] == flip_text.split()[:3] and true_text.split()[-3:] == flip_text.split()[-3:]
        orders.add(true_text)
    assert orders == truths  # both namings of the objects are asked
    diagonal = [SceneObject("red", "circle", 9, 0, 0), SceneObject("blue", "square", 9, 18, 18)]
    assert relation_pair(spec, diagonal, random.Random(0), "train") is None
    dataset = ScenesDataset(80, seed=0, questions_per_image=2, relation_pair_fraction=1.0, scrambled_fraction=1.0)
    paired = 0
    for index in range(80):
        item = dataset[index]
        spec, objects = parse_prompt(dataset.example(index)[0]), dataset.example(index)[1]
        if relation_pair(spec, objects, random.Random(0), "train") is None:
            continue
        paired += 1
        words = [[VOCAB[t] for t in ids if t != PAD_ID][1:-1] for ids in item["question_ids"].tolist()]
        assert item["answer_id"].tolist() == [TOKEN_IDS["yes"], TOKEN_IDS["no"]]
        assert sum(a != b for a, b in zip(*words)) == 1  # one word apart: the relation's direction
        asked = [parse_prompt(" ".join(w[4:])) for w in words]
        assert all(prompt.text() in prompt_split(prompt.category, "train") for prompt in asked)
        assert torch.equal(item["question_pixel_values"][0], item["pixel_values"])  # never scrambled
    assert paired > 20
    with pytest.raises(ValueError, match="questions_per_image must be >= 2"):
        ScenesDataset(6, relation_pair_fraction=0.5)


def test_relation_in_scene_reads_the_placement():
    spec = parse_prompt("a red circle and a blue square")
    left = [SceneObject("red", "circle", 9, 0, 10), SceneObject("blue", "square", 9, 20, 11)]
    assert relation_in_scene(spec, left) == parse_prompt("a red circle left of a blue square")
    above = [SceneObject("red", "circle", 9, 10, 0), SceneObject("blue", "square", 9, 11, 20)]
    assert relation_in_scene(spec, above).relation == "above"
    diagonal = [SceneObject("red", "circle", 9, 0, 0), SceneObject("blue", "square", 9, 18, 18)]
    assert relation_in_scene(spec, diagonal) is None  # neither axis dominates
    assert relation_in_scene(parse_prompt("two red circles"), left) is None


def test_learned_understanding_positions_start_at_the_fixed_table_and_train():
    torch.manual_seed(0)
    model = UnifiedTransformer(
        vocab_size=len(VOCAB), pad_token_id=PAD_ID, dim=32, num_layers=1, num_heads=2, patch_size=8,
        understanding_conv_channels=4,
    ).eval()
    learned = with_learned_understanding_positions(model).eval()
    assert isinstance(learned.und_image_pos, torch.nn.Parameter) and "und_image_pos" not in dict(model.named_parameters())
    assert torch.equal(learned.und_image_pos.data, model.und_image_pos)
    assert not learned.is_generation_parameter("und_image_pos")
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    question_ids = torch.tensor([encode_question("is there an object in the top-left?")] * 2)
    with torch.no_grad():
        torch.testing.assert_close(learned(pixel_values=images, question_ids=question_ids).logits,
                                   model(pixel_values=images, question_ids=question_ids).logits)
    learned(pixel_values=images, question_ids=question_ids).logits[:, -1].sum().backward()
    assert learned.und_image_pos.grad.abs().sum() > 0
    restarted = with_learned_understanding_positions(model, scale=2.0).und_image_pos.detach()[0]
    old = model.und_image_pos[0]
    off_diagonal = ~torch.eye(len(old), dtype=torch.bool)
    assert torch.cdist(restarted, restarted)[off_diagonal].min() > 2 * torch.cdist(old, old)[off_diagonal].min()
    torch.testing.assert_close(restarted.norm(dim=-1), 2 * old.norm(dim=-1))  # sin-cos pairs: same norm per token


def test_a_position_stage_restarts_and_trains_the_position_table_and_keeps_generation(tmp_path):
    torch.manual_seed(0)
    model = UnifiedTransformer(vocab_size=len(VOCAB), pad_token_id=PAD_ID, dim=32, num_layers=1, num_heads=2)
    build_pipeline(model).save_pretrained(tmp_path / "start")
    config = UnifiedConfig(
        output_dir=str(tmp_path / "run"), pretrained=str(tmp_path / "start"), max_train_steps=2, train_batch_size=4,
        learning_rate=1e-2, num_examples=8, generation_weight=0.0, train_parameters="understanding",
        learned_understanding_positions=True, understanding_position_scale=3.0, occupancy_fraction=0.4,
        located_fraction=0.3, relation_fraction=0.3, question_lm_weight=1.0, question_lm_true_only=True,
    )
    trained = UnifiedPipeline.from_pretrained(train(config).pipeline_dir).transformer
    restarted = with_learned_understanding_positions(model, 3.0).und_image_pos
    assert trained.config.learned_understanding_positions
    assert not torch.allclose(trained.und_image_pos, restarted) and not torch.allclose(trained.und_image_pos, model.und_image_pos)
    torch.testing.assert_close(trained.und_image_pos, restarted, atol=0.1, rtol=0)  # 2 Adam steps of 1e-2 from the restart
    start = dict(model.named_parameters())
    assert all(torch.equal(param, start[name]) for name, param in trained.named_parameters() if model.is_generation_parameter(name))


def test_a_checkpoint_rebuilds_the_model_the_run_exports(tmp_path):
    config = UnifiedConfig(
        output_dir=str(tmp_path / "run"), max_train_steps=2, train_batch_size=2, num_examples=4, dim=32,
        num_layers=1, num_heads=2, generation_conv_channels=8, generation_conv_blocks=1, understanding_weight=0.0,
        use_ema=True, ema_decay=0.5, learning_rate=1e-2, checkpointing_steps=2,
    )
    exported = UnifiedPipeline.from_pretrained(train(config).pipeline_dir).transformer
    rebuilt = checkpoint_model(tmp_path / "run" / "checkpoints" / "step-2")
    assert rebuilt.config.generation_conv_blocks == 1
    for (name, param), (_, other) in zip(rebuilt.named_parameters(), exported.named_parameters()):
        assert torch.equal(param, other), name  # the EMA weights the export holds, bit for bit
    state = tmp_path / "run" / "checkpoints" / "step-2" / "trainer_state.json"
    record = json.loads(state.read_text())
    record["config"]["use_ema"] = False
    state.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="use_ema"):
        checkpoint_model(state.parent)


def test_latent_generation_trains_on_the_frozen_autoencoder_and_exports_it(tmp_path):
    from selfgen.models.scene_autoencoder import encode_latents, scene_autoencoder

    torch.manual_seed(0)
    scene_autoencoder((8, 8, 8)).save_pretrained(tmp_path / "ae")
    config = UnifiedConfig(
        output_dir=str(tmp_path / "run"), max_train_steps=2, train_batch_size=4, dim=32, num_layers=1, num_heads=2,
        generation_patch_size=1, generation_autoencoder=str(tmp_path / "ae"), understanding_weight=0.0,
        num_examples=8, checkpointing_steps=0, report_to=None,
    )
    train(config)
    pipe = UnifiedPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    assert pipe.transformer.generation_shape == (4, 8, 8)
    before = {name: value.clone() for name, value in pipe.vae.state_dict().items()}
    autoencoder = type(pipe.vae).from_pretrained(tmp_path / "ae")
    assert all(torch.equal(value, autoencoder.state_dict()[name]) for name, value in before.items())  # frozen
    images = pipe.generate(["a red circle"], num_inference_steps=2, output_type="np").images
    assert images.shape == (1, 32, 32, 3) and 0 <= images.min() and images.max() <= 1
    batch = collate([ScenesDataset(4)[index] for index in range(4)])
    objective = JointObjective(cfg_dropout=0.0, understanding_weight=0.0, autoencoder=pipe.vae)
    inputs, target = objective._generation_inputs(batch)
    assert inputs["sample"].shape == target.shape == (4, 4, 8, 8)
    sigmas = (inputs["timestep"] / 1000).view(-1, 1, 1, 1)  # x_sigma = x0 + sigma (eps - x0): x0 is the latent
    torch.testing.assert_close(inputs["sample"] - sigmas * target, encode_latents(pipe.vae, batch["pixel_values"]),
                               atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="no vae"):
        UnifiedPipeline(pipe.transformer, pipe.scheduler)
    with pytest.raises(ValueError, match="from scratch"):
        train(UnifiedConfig(**{**config.__dict__, "pretrained": str(tmp_path / "run" / "pipeline"),
                               "output_dir": str(tmp_path / "again")}))
