"""dvc.yaml agrees with the code: deps exist, training stages list what the fingerprint hashes."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.config import SECTIONS
from stages.training import TRAINING_CODE

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def body(stage: str) -> dict:
    return STAGES[stage].get("do", STAGES[stage])


def test_training_stages_depend_on_the_code_their_fingerprint_hashes() -> None:
    for stage in ("warmup", "train", "finetune"):
        missing = set(TRAINING_CODE) - set(body(stage)["deps"])
        assert not missing, f"{stage} lacks deps {sorted(missing)}"


def test_every_code_dep_exists_and_every_param_is_a_section() -> None:
    for stage in STAGES:
        for dep in body(stage)["deps"]:
            if dep.startswith(("pipeline/", "stages/")):
                assert (ROOT / dep).exists(), f"{stage}: {dep} does not exist"
        for param in body(stage)["params"]:
            assert param.split(".")[0] in (*SECTIONS, "runs"), f"{stage}: unknown params section {param}"


def test_stages_call_python_m_stages_cli() -> None:
    for stage in STAGES:
        assert body(stage)["cmd"].startswith("python -m stages.cli "), stage


def test_params_yaml_lists_every_key_of_every_section() -> None:
    """params.yaml is where a user looks for a knob: a field the config has but params.yaml
    omits (method.keep_verified once) changes results without being visible or tracked by DVC."""
    from pipeline.config import Params

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, field in Params.model_fields.items():
        if section == "runs":
            continue
        missing = set(field.annotation.model_fields) - set(params[section])
        assert not missing, f"params.yaml {section}: missing {sorted(missing)}"
