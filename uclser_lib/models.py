"""Encoders (ResNet-18, VGG-like, CRNN), the projection head, and loading of the authors' released encoders.

Every encoder takes log-mel patches ``(B, 1, 101, 96)`` (batch, channel, frames, bands) and exposes
``embed(x) -> (B, embedding_dim)`` (the representation fed to the projection head) and
``forward(x) -> (B, n_classes)`` logits. State-dict key names follow the released checkpoints
(docs/method.md §7), so the authors' model zoo loads strictly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ARCHITECTURES",
    "arch_of",
    "CRNN",
    "BasicBlock",
    "ContrastiveModel",
    "ConvBlock",
    "Encoder",
    "ProjectionHead",
    "ResNet18",
    "VGGLike",
    "build_encoder",
]

ARCHITECTURES = ("resnet18", "vgglike", "crnn")


class Encoder(nn.Module):
    """Base of the encoders: ``forward(x) = classifier(embed(x))``."""

    embedding_dim: int

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def classifier(self) -> nn.Linear:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 101, 96) -> logits (B, n_classes)."""
        return self.classifier()(self.embed(x))


# ---------------------------------------------------------------- ResNet-18 (torchvision layout and key names)


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: two 3x3 conv-BN, identity or 1x1-conv-BN shortcut, ReLU after the sum."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(Encoder):
    """torchvision's ResNet-18 with a 1-channel stem; embedding = global average pool (512)."""

    embedding_dim = 512

    def __init__(self, n_classes: int = 20):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        widths = (64, 128, 256, 512)
        in_ch = 64
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(in_ch, width, stride), BasicBlock(width, width)))
            in_ch = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, n_classes)
        # torchvision's initialisation
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def classifier(self) -> nn.Linear:
        return self.fc


# ---------------------------------------------------------------- VGG-like and CRNN (the released key names)


class ConvBlock(nn.Module):
    """Conv (bias-free, 'same' padding) -> BatchNorm -> ReLU -> optional max pool; keys ``conv.*``, ``bn.*``."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, pool: tuple[int, int] | None = None):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.pool = nn.MaxPool2d(pool) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.bn(self.conv(x))))


class VGGLike(Encoder):
    """conv 32,32,32 + pool, 64,64 + pool, 128 + pool; [global max, global avg] (256) -> dense1 512 -> ReLU.

    The 512-d output of that ReLU is the embedding.
    """

    embedding_dim = 512

    def __init__(self, n_classes: int = 20):
        super().__init__()
        self.conv0 = ConvBlock(1, 32, 3)
        self.conv1 = ConvBlock(32, 32, 3)
        self.conv2 = ConvBlock(32, 32, 3, pool=(2, 2))
        self.conv3 = ConvBlock(32, 64, 3)
        self.conv4 = ConvBlock(64, 64, 3, pool=(2, 2))
        self.conv5 = ConvBlock(64, 128, 3, pool=(2, 2))
        self.dense1 = nn.Linear(256, self.embedding_dim)
        self.dense_out = nn.Linear(self.embedding_dim, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        for block in (self.conv0, self.conv1, self.conv2, self.conv3, self.conv4, self.conv5):
            x = block(x)
        pooled = torch.cat([x.amax(dim=(2, 3)), x.mean(dim=(2, 3))], dim=1)  # (B, 256)
        return F.relu(self.dense1(pooled))

    def classifier(self) -> nn.Linear:
        return self.dense_out


class CRNN(Encoder):
    """Three conv 5x5 (128) blocks pooling (2,5), (2,4), (2,2) -> (B, 128, 12, 2) -> (B, 12, 256) -> BiGRU(64).

    Embedding (64) = forward-direction output at the last time step times backward-direction output at the
    last time step (elementwise; Keras' ``merge_mode='mul'`` as released).
    """

    embedding_dim = 64

    def __init__(self, n_classes: int = 20):
        super().__init__()
        self.conv1 = ConvBlock(1, 128, 5, pool=(2, 5))
        self.conv2 = ConvBlock(128, 128, 5, pool=(2, 4))
        self.conv3 = ConvBlock(128, 128, 5, pool=(2, 2))
        self.rnn1 = nn.GRU(input_size=256, hidden_size=self.embedding_dim, batch_first=True, bidirectional=True)
        self.dense = nn.Linear(self.embedding_dim, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3(self.conv2(self.conv1(x)))  # (B, C, T, F)
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], x.shape[2], -1)  # (B, T, F * C), channel fastest
        out, _ = self.rnn1(x)  # (B, T, 2 * H)
        last = out[:, -1].view(-1, 2, self.embedding_dim)
        return last[:, 0] * last[:, 1]

    def classifier(self) -> nn.Linear:
        return self.dense


# ---------------------------------------------------------------- projection head and contrastive wrapper


class ProjectionHead(nn.Module):
    """Linear(D -> hidden) -> BatchNorm1d -> ReLU -> Linear(hidden -> out_dim), then L2-normalise (docs/method.md §8).

    Parameters sit in ``net1`` (an ``nn.Sequential``) so the released ``proj.net1.*`` weights load after
    stripping the ``proj.`` prefix. (B, D) -> (B, out_dim), unit norm.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 512):
        super().__init__()
        self.net1 = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net1(h), dim=1)


class ContrastiveModel(nn.Module):
    """Encoder + projection head: ``forward(x)`` (B, 1, 101, 96) -> L2-normalised projections (B, out_dim)."""

    def __init__(self, encoder: Encoder, head: ProjectionHead):
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.embed(x))


def _classes() -> dict[str, type[Encoder]]:
    return {"resnet18": ResNet18, "vgglike": VGGLike, "crnn": CRNN}


def build_encoder(arch: str, n_classes: int = 20) -> Encoder:
    """A fresh encoder: ``arch`` in ``ARCHITECTURES`` ("resnet18", "vgglike", "crnn")."""
    classes = _classes()
    if arch not in classes:
        raise ValueError(f"unknown encoder architecture {arch!r}; expected one of {ARCHITECTURES}")
    return classes[arch](n_classes=n_classes)


def arch_of(encoder: torch.nn.Module) -> str | None:
    """The :func:`build_encoder` name of ``encoder``'s architecture ("resnet18", ...); None for another module."""
    return next((arch for arch, cls in _classes().items() if type(encoder) is cls), None)
