"""Encoders with the two heads MTaDCS needs: a classifier h and a projection g.

Every model returns a `ModelOutput` of three tensors computed from one forward pass:

* `logits = h(pooled)`: the classifier acts on the *un-normalised* globally pooled
  penultimate feature, as Sel-CL's code does (`linear2(out_)`); a linear layer on a
  unit vector trains more slowly (its logits are bounded by the weight norm).
* `feature = pooled / ||pooled||`: the paper's f(x), the space LOF selection and the
  kNN evaluation work in (Euclidean distance on unit vectors ranks like cosine).
* `projection = g(pooled) / ||g(pooled)||`, g one `Linear(D, proj_dim)` (Sel-CL's
  `headType Linear`, 128-d): the embedding of the supervised MoCo loss only.

`PreActResNet18` is the CIFAR network exactly as DivideMix (`PreResNet.py`) and Sel-CL
(`utils/models/preact_resnet.py`) write it: a 3x3 stem conv followed by BN-ReLU, then
pre-activation blocks whose shortcut is a plain 1x1 conv (no BN) when the shape changes
and starts after the block's first BN-ReLU (see `PreActBlock`), and *no* BN-ReLU after
the last block (the pooled feature is the raw residual sum). That form, not He et al.'s
(2016) bare stem with a final BN-ReLU, is what the Sel-CL schedule MTaDCS copies was
tuned with. `width` scales every stage (64 = paper, 16 = the CPU protocol, about 0.7 M
parameters). Conv weights get Sel-CL's Kaiming (fan_out) initialisation.

`ResNet18` is torchvision's ImageNet ResNet-18 (7x7 stride-2 stem and max-pool) for
WebVision at 224 px. Deviation: Sel-CL's WebVision script builds its CIFAR-stem
ResNet-18 (3x3 stride-1 stem, no max-pool) at 224 px, which costs about 16x the compute
per image; the standard ImageNet stem is the usual choice at that resolution.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

MODEL_ARCHS = ("preact_resnet18", "resnet18")


class ModelOutput(NamedTuple):
    """What every model returns; see the module docstring for why each is computed where."""

    logits: torch.Tensor  # h(pooled), (B, K)
    feature: torch.Tensor  # L2-normalised pooled penultimate feature f, (B, D)
    projection: torch.Tensor  # L2-normalised g(pooled), (B, proj_dim)


class _TwoHeads(nn.Module):
    """Classifier and projection heads on a pooled feature of size `feature_dim`."""

    def __init__(self, feature_dim: int, num_classes: int, proj_dim: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(feature_dim, num_classes)
        self.projection = nn.Linear(feature_dim, proj_dim)

    def forward(self, pooled: torch.Tensor) -> ModelOutput:
        # The heads run in float32 even under bf16 autocast: bf16 keeps 8 significant bits, a step
        # of 0.06 at a logit of 10, enough to flip near-ties in the predictions selection reads.
        # Two small matmuls: no measurable cost.
        with torch.autocast(pooled.device.type, enabled=False):
            pooled = pooled.float()
            return ModelOutput(
                logits=self.classifier(pooled),
                feature=F.normalize(pooled, dim=1),
                projection=F.normalize(self.projection(pooled), dim=1),
            )


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


class PreActBlock(nn.Module):
    """Pre-activation basic block as DivideMix/Sel-CL write it.

    Both shortcuts branch off *after* the first BN-ReLU: their `self.shortcut` is an empty
    `nn.Sequential` when shapes match, so even the identity shortcut carries relu(bn1(x)),
    not x (He et al. and kuangliu/pytorch-cifar pass x). Kept because it is what the
    Sel-CL schedule was tuned with.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            # Plain projection, no BN: the DivideMix/Sel-CL form.
            self.shortcut = nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """PreAct ResNet-18 in the DivideMix/Sel-CL form (see the module docstring).

    Stem conv3x3-BN-ReLU, PreActBlocks [2, 2, 2, 2] with widths w, 2w, 4w, 8w (w = `width`),
    global average pool, linear classifier and a one-layer projection head.
    """

    def __init__(self, num_classes: int, width: int = 64, proj_dim: int = 128) -> None:
        super().__init__()
        self.feature_dim = 8 * width
        self.stem = nn.Sequential(_conv3x3(3, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        stages, in_ch = [], width
        for i in range(4):
            out_ch = width * 2**i
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(PreActBlock(in_ch, out_ch, stride), PreActBlock(out_ch, out_ch)))
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.heads = _TwoHeads(self.feature_dim, num_classes, proj_dim)
        _init_like_sel_cl(self)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        out = self.stages(self.stem(x))
        pooled = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return self.heads(pooled)


class ResNet18(nn.Module):
    """torchvision's ResNet-18 (weights=None) with `fc` removed, for 224-px WebVision.

    Only `width=64` exists: torchvision's BasicBlock refuses any other base width, and a
    narrowed ImageNet ResNet is not a network any baseline reports.
    """

    def __init__(self, num_classes: int, width: int = 64, proj_dim: int = 128) -> None:
        super().__init__()
        if width != 64:
            raise ValueError(f"arch 'resnet18' (torchvision) supports only width 64, got {width}")
        from torchvision.models import resnet18  # here: torchvision.models imports every model (~3 s)

        self.backbone = resnet18(weights=None)
        self.feature_dim = self.backbone.fc.in_features
        self.backbone.fc = nn.Identity()  # the backbone now returns the pooled feature
        self.heads = _TwoHeads(self.feature_dim, num_classes, proj_dim)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        return self.heads(self.backbone(x))


def _init_like_sel_cl(model: nn.Module) -> None:
    """Kaiming fan_out for convs, BN to identity; linear layers keep PyTorch's default."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build_model(arch: str, num_classes: int, *, width: int = 64, proj_dim: int = 128) -> nn.Module:
    """Instantiate `arch` (one of `MODEL_ARCHS`) with freshly initialised weights."""
    if arch == "preact_resnet18":
        return PreActResNet18(num_classes, width=width, proj_dim=proj_dim)
    if arch == "resnet18":
        return ResNet18(num_classes, width=width, proj_dim=proj_dim)
    raise ValueError(f"unknown arch {arch!r}; allowed: {', '.join(MODEL_ARCHS)}")


def count_parameters(model: nn.Module) -> int:
    """Number of parameters, heads included (buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters())
