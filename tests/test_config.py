"""params.yaml → config: the checks on the variants' combinations, and a cell's identity."""

from __future__ import annotations

import pytest

from pipeline.config import cell_identity, parse_params, resolve_cell
from pipeline.errors import UserError


def cell(**sections: dict):
    return resolve_cell(parse_params({"runs": {"c": {}}, **sections}), "c")


@pytest.mark.parametrize(("sections", "message"), [
    ({"optim": {"class_balanced": True}}, "class_balanced needs iters_per_epoch"),
    ({"method": {"lof_reference": "G", "confidence_set": False}}, "lof_reference 'G' needs"),
    ({"method": {"moco_momentum": 1.5}}, "must be 'auto' or lie in"),
    ({"method": {"min_class_keep": 1.5}}, "must be 'auto' or lie in"),
    ({"optim": {"iters_per_epoch": 0}}, "iters_per_epoch"),
    ({"runtime": {"eval_batch_size": 0}}, "must be 'auto' or a batch"),
    ({"method": {"classification_loss": "gce", "logit_adjustment": "uniform"}}, "logit_adjustment needs"),
    ({"method": {"gce_q": 0.0}}, "gce_q"),
    ({"method": {"agreement": "posterior", "agreement_min_prob": 0.5}}, "replaces agreement_min_prob"),
    ({"method": {"posterior_min": 1.0}}, "posterior_min"),
])
def test_settings_that_would_be_ignored_or_invalid_stop_with_one_line(sections: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        cell(**sections)


def test_valid_variant_settings_resolve() -> None:
    c = cell(optim={"iters_per_epoch": "S", "class_balanced": True}, method={"lof_reference": "G", "moco_momentum": 0.99})
    assert (c.optim.iters_per_epoch, c.method.moco_momentum, c.method.lof_reference) == ("S", 0.99, "G")
    assert cell(optim={"iters_per_epoch": 40}).optim.iters_per_epoch == 40
    assert cell(method={"min_class_keep": "auto"}).method.min_class_keep == "auto"
    assert cell(method={"classification_loss": "gce", "gce_q": 1.0}).method.classification_loss == "gce"


def test_identity_of_a_real_noise_cell_has_no_rate() -> None:
    assert cell_identity(cell(noise={"kind": "none"})).rate is None
    simulated = cell_identity(cell(noise={"kind": "sym", "rate": 0.8}))
    assert simulated.rate == 0.8 and simulated.row == "MTaDCS (full)"


def test_eval_batch_auto_is_small_on_cpu_and_a_number_is_kept() -> None:
    from pipeline.method.device import Placement

    cpu = {"device": "cpu", "threads": 0}
    assert Placement.for_runtime(cell(runtime=cpu).runtime).eval_batch == 64
    assert Placement.for_runtime(cell(runtime=cpu | {"eval_batch_size": 300}).runtime).eval_batch == 300
