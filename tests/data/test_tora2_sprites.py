"""SpriteVideoDataset: the item contract, seeding, the held-out appearance split, the caption tokenizer."""

import numpy as np
import pytest

from selfgen.data.sprites import (
    COLORS,
    SHAPES,
    TEXTURES,
    SpriteVideoDataset,
    appearances,
    entity_phrases,
    caption_tokenizer,
    is_heldout_appearance,
)


def test_item_contract():
    dataset = SpriteVideoDataset(6, num_frames=8, size=32, max_entities=3, seed=0)
    for item in dataset:
        video = item["video"]
        assert video.shape == (8, 32, 32, 3) and video.dtype == np.float32
        assert 0 <= video.min() and video.max() <= 1
        assert 1 <= len(item["entities"]) <= 3
        assert entity_phrases(item["prompt"]) == [entity["description"] for entity in item["entities"]]
        for entity in item["entities"]:
            trajectory = entity["trajectory"]
            assert trajectory.shape == (8, 2) and 0 <= trajectory.min() and trajectory.max() <= 1
            assert entity["reference_image"].shape == (16, 16, 3)
            assert np.linalg.norm(trajectory[-1] - trajectory[0]) >= 0.25


def test_topmost_sprite_is_drawn_at_its_trajectory():
    item = SpriteVideoDataset(1, seed=4)[0]
    entity = item["entities"][-1]  # drawn last, never occluded
    color = np.float32(COLORS[entity["description"].split()[0]])
    for frame, (x, y) in zip(item["video"], entity["trajectory"]):
        pixel = frame[int(y * 32), int(x * 32)]
        shade = pixel / color
        assert np.allclose(shade, shade[0], atol=0.02) and min(abs(shade[0] - 1), abs(shade[0] - 0.4)) < 0.02


def test_seeded_and_index_addressable():
    first, again = SpriteVideoDataset(3, seed=5), SpriteVideoDataset(3, seed=5)
    np.testing.assert_array_equal(first[2]["video"], again[2]["video"])
    assert first[2]["prompt"] == again[2]["prompt"]
    assert not np.array_equal(first[2]["video"], SpriteVideoDataset(3, seed=6)[2]["video"])


def test_heldout_appearances_never_appear_in_training():
    train_descriptions = {e["description"] for item in SpriteVideoDataset(300, seed=0) for e in item["entities"]}
    heldout = {" ".join(triple) for triple in appearances("heldout")}
    assert train_descriptions and not train_descriptions & heldout
    drawn = {e["description"] for item in SpriteVideoDataset(50, split="heldout") for e in item["entities"]}
    assert drawn <= heldout
    assert all(is_heldout_appearance(*triple) for triple in appearances("heldout"))
    for attribute, values in enumerate((COLORS, TEXTURES, SHAPES)):  # every single attribute is seen in training
        assert {triple[attribute] for triple in appearances("train")} == set(values)


def test_caption_tokenizer_keeps_sprite_words_whole_and_spells_out_the_rest():
    tokenizer = caption_tokenizer()
    assert tokenizer.tokenize("A Red striped STAR and a blue disc") == ["a", "red", "striped", "star", "and", "a", "blue", "disc"]
    pieces = tokenizer.tokenize("a purple kite")
    assert pieces == ["a", "p", "##u", "##r", "##p", "##l", "##e", "k", "##i", "##t", "##e"]
    assert tokenizer.convert_tokens_to_string(pieces) == "a purple kite"
    assert tokenizer.tokenize("a café") == ["a", "c", "##a", "##f", "##e"]  # accents stripped (BERT normaliser)
    assert tokenizer.tokenize("a brown dog") != tokenizer.tokenize("a brown cat")
    ids = tokenizer(["a red star"], padding="max_length", max_length=6).input_ids[0]
    assert ids[-3:] == [tokenizer.pad_token_id] * 3
    users = caption_tokenizer(["a purple kite"] * 3)
    assert users.tokenize("a purple kite") == ["a", "purple", "kite"]  # the user's captions join the vocabulary
    assert caption_tokenizer().get_vocab() == tokenizer.get_vocab()  # deterministic


def test_argument_errors():
    with pytest.raises(ValueError, match="split must be one of"):
        SpriteVideoDataset(2, split="test")
    with pytest.raises(ValueError, match="max_entities"):
        SpriteVideoDataset(2, max_entities=0)
    with pytest.raises(IndexError):
        SpriteVideoDataset(2)[2]
