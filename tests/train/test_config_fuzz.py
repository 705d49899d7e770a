"""Fuzzing the config surface: whatever a user types, only the documented exception types escape
(``ValueError`` naming the field/file, ``FileNotFoundError`` for a missing file)."""
import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selfgen.train.config import TrainingConfig, load_config, parse_overrides
from selfgen.train.ddpm import DDPMConfig

CONFIG_CLASSES = [TrainingConfig, DDPMConfig]
DOCUMENTED = (ValueError, FileNotFoundError)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

numbers = st.one_of(st.integers(-10**20, 10**20), st.floats(allow_nan=True, allow_infinity=True)).map(str)
scalars = st.one_of(
    numbers,
    st.sampled_from(["1e-4", "-1", "0", "1e400", ".nan", "-.inf", "null", "~", "true", "no", "[1, 2]", "[a]", "{a: 1}",
                     "[1, 2", "'", "!!python/object:os.system 1", "\t", "bf16", "cosine", "latest", "2024-01-01"]),
    st.text(max_size=12),
)
raw_values = st.one_of(scalars, st.just(True))  # True: a bare --flag


@pytest.mark.parametrize("config_class", CONFIG_CLASSES, ids=lambda cls: cls.__name__)
@FUZZ
@given(data=st.data())
def test_command_line_overrides_raise_only_documented_errors(config_class, data):
    names = [item.name for item in dataclasses.fields(config_class)] + ["bogus_key"]
    overrides = data.draw(st.dictionaries(st.sampled_from(names), raw_values, max_size=4))
    try:
        load_config(config_class, None, overrides)
    except DOCUMENTED:
        pass


@FUZZ
@given(tokens=st.lists(st.one_of(st.sampled_from(["--seed", "--output_dir", "--use_ema", "--", "-x", "--a=b"]), scalars),
                       max_size=6))
def test_parse_overrides_raises_only_value_errors(tokens):
    try:
        parse_overrides(tokens)
    except ValueError:
        pass


@FUZZ
@given(text=st.one_of(
    st.text(max_size=60),
    st.dictionaries(st.sampled_from(["learning_rate", "seed", "lr_scheduler", "block_out_channels", "nope"]), scalars,
                    max_size=3).map(lambda values: "".join(f"{key}: {value}\n" for key, value in values.items())),
))
def test_yaml_files_raise_only_documented_errors(tmp_path, text):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(text.encode("utf-8", "replace"))
    try:
        load_config(DDPMConfig, path)
    except DOCUMENTED:
        pass


def test_every_methods_config_raises_only_documented_errors():
    """The same fuzzing, fewer examples, over every registered method's config (its own __post_init__ included)."""
    from selfgen.train.registry import discover_methods

    for config_class in sorted({method.config_class for method in discover_methods().values()}, key=str):
        names = [item.name for item in dataclasses.fields(config_class)]

        @settings(max_examples=30, deadline=None, database=None)
        @given(st.dictionaries(st.sampled_from(names), raw_values, max_size=3))
        def fuzz(overrides):
            try:
                load_config(config_class, None, overrides)
            except DOCUMENTED:
                pass

        fuzz()
