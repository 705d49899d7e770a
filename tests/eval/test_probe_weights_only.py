import pickle

import pytest
import torch

from selfgen.eval.probe import inception_features


class RunsCodeWhenUnpickled:
    def __reduce__(self):
        return (print, ("this ran while loading weights",))


def test_inception_weights_that_are_not_plain_tensors_are_refused(tmp_path):
    weights = tmp_path / "inception.pth"
    torch.save({"fc.weight": RunsCodeWhenUnpickled()}, weights)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        inception_features(torch.zeros(1, 1, 8, 8), weights)


def test_weights_only_is_asked_for_explicitly(tmp_path, monkeypatch):
    """torch < 2.6 (allowed by torch>=2.4) unpickles anything by default: the call must not rely on it."""
    calls = []
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: calls.append(kwargs) or {})
    (tmp_path / "w.pth").write_bytes(b"")
    with pytest.raises(RuntimeError):  # the empty state dict does not fit Inception; the call is what we check
        inception_features(torch.zeros(1, 1, 8, 8), tmp_path / "w.pth")
    assert calls == [{"map_location": "cpu", "weights_only": True}]
