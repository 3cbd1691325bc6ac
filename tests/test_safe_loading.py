"""Checkpoints and .pt label files never execute code: a pickle carrying a payload is refused with
one clear line, and the payload does not run."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from pipeline.errors import UserError


class Payload:
    """Unpickling this calls os.system: what a malicious checkpoint would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_payload(path, marker) -> None:
    torch.save({"model": {}, "labels": Payload(str(marker))}, path, pickle_protocol=pickle.DEFAULT_PROTOCOL)


def test_a_checkpoint_carrying_a_payload_is_refused_and_the_payload_never_runs(tmp_path) -> None:
    from pipeline.method.trainer import load_checkpoint

    marker = tmp_path / "pwned"
    write_payload(tmp_path / "checkpoint.pt", marker)
    with pytest.raises(UserError, match="unreadable checkpoint"):
        load_checkpoint(tmp_path / "checkpoint.pt")
    assert not marker.exists()


def test_a_pt_label_file_carrying_a_payload_is_refused_and_the_payload_never_runs(tmp_path) -> None:
    from pipeline.data.noise import labels_from_file

    marker = tmp_path / "pwned"
    write_payload(tmp_path / "labels.pt", marker)
    with pytest.raises(UserError, match="labels.pt"):
        labels_from_file(tmp_path / "labels.pt", key=None, index=np.arange(4), num_classes=10)
    assert not marker.exists()
