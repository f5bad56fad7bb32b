"""Models for examples/train.py: an MLP and a small CNN for the small datasets, and the CIFAR
variants of ResNet-18 and VGG-16 (3x3 stem, no max-pool, for 32x32 inputs)."""

from __future__ import annotations

import math

import torch
from torch import nn

MODELS = ("mlp", "cnn", "resnet18", "vgg16")
DEFAULT_MODEL = {"digits": "mlp", "mnist5k": "mlp", "synthetic": "mlp", "cifar10": "resnet18"}


class MLP(nn.Module):
    def __init__(self, inputs: int, classes: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(inputs, hidden), nn.ReLU(),
                                 nn.Linear(hidden, classes))

    def forward(self, x):
        return self.net(x)


class SmallCNN(nn.Module):
    """Two 3x3 convolutions with batch norm and pooling, then a linear classifier."""

    def __init__(self, channels: int, side: int, classes: int, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.MaxPool2d(2))
        self.head = nn.Linear(2 * width * (side // 4) ** 2, classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 images: 3x3 stem, four stages of two basic blocks (64-512)."""

    def __init__(self, classes: int = 10, channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, 64, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(64), nn.ReLU())
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(512, classes)

    def forward(self, x):
        out = self.layers(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                512, 512, 512, "M")


class VGG16(nn.Module):
    """VGG-16 with batch norm for 32x32 images: 13 convolutions, one linear classifier."""

    def __init__(self, classes: int = 10, channels: int = 3):
        super().__init__()
        layers, cin = [], channels
        for v in VGG16_LAYOUT:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
                cin = v
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(512, classes)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


def make_model(name: str, input_shape, classes: int) -> nn.Module:
    """The model ``name`` for inputs of ``input_shape`` (without the batch dimension)."""
    if name == "mlp":
        return MLP(math.prod(input_shape), classes)
    if name == "cnn":
        if len(input_shape) != 3:
            raise ValueError(f"--model cnn needs images, got inputs of shape {input_shape}")
        return SmallCNN(input_shape[0], input_shape[1], classes)
    if name in ("resnet18", "vgg16"):
        if len(input_shape) != 3 or input_shape[1:] != (32, 32):
            raise ValueError(f"--model {name} is the CIFAR variant for 32x32 images, got inputs "
                             f"of shape {input_shape}")
        return (ResNet18 if name == "resnet18" else VGG16)(classes, input_shape[0])
    raise ValueError(f"model must be one of {', '.join(MODELS)}, got {name!r}")
