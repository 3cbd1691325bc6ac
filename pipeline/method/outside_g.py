"""Losses on the samples outside the confidence set (Ḡ), which the paper's Eq. 6 leaves unused.

Two variants, each a pure function of logits and labels (`Trainer._unlabelled_batches` draws the batches):

* FixMatch (Sohn et al., NeurIPS 2020; as DivideMix/FixMatch repositories use unlabelled
  data): the argmax of a weak view is the target for a strong view of the same image, where
  its probability reaches a threshold; the loss is averaged over the whole unlabelled batch,
  so an unconfident batch contributes little.
* Forward loss correction (Patrini et al., CVPR 2017) with the transition matrix estimated
  on trusted data as in Gold Loss Correction (Hendrycks et al., NeurIPS 2018): a model
  trained on the noisy labels predicts p(noisy label | x); averaged over the verified samples
  of clean class i it estimates row i of T = p(noisy | clean). The given (noisy) label of a
  sample outside G is then learnt through T: -log (softmax(logits) T)[given].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def fixmatch_loss(strong_logits: Tensor, weak_probs: Tensor, threshold: float) -> tuple[Tensor, float]:
    """Mean over the batch of CE(strong, argmax weak) where max weak >= threshold; and the
    share of the batch that passed."""
    confidence, targets = weak_probs.max(1)
    keep = (confidence >= threshold).float()
    loss = (F.cross_entropy(strong_logits.float(), targets, reduction="none") * keep).mean()
    return loss, keep.mean().item()


def estimate_transition(probs: Tensor, clean_labels: Tensor, num_classes: int) -> Tensor:
    """T[i, j] = mean predicted p(j) over the trusted samples of clean class i (GLC). A class
    with no trusted sample keeps the identity row (no correction for it)."""
    T = torch.eye(num_classes, dtype=torch.float32)
    for c in range(num_classes):
        members = clean_labels == c
        if members.any():
            row = probs[members].float().mean(0)
            T[c] = row / row.sum()
    return T


def forward_corrected_loss(logits: Tensor, noisy_labels: Tensor, transition: Tensor) -> Tensor:
    """Batch mean of -log (softmax(logits) @ T)[noisy label] (Patrini's forward correction), in
    float32 with autocast off (it would run the product in bf16 before the log)."""
    with torch.autocast(logits.device.type, enabled=False):
        noisy_probs = logits.float().softmax(1) @ transition.to(logits.device, torch.float32)
    return F.nll_loss(noisy_probs.clamp_min(1e-12).log(), noisy_labels)
