"""Model registry: ``get_model("resnet20", num_classes=10, width=0.5)``.

Names (case-insensitive; ``-`` / ``_`` between parts optional):

* ``lenet300``, ``lenet5``; CIFAR ``vgg11``, ``vgg13``, ``vgg16``, ``vgg19``.
* ImageNet ResNets (torchvision): ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``,
  ``resnet152`` (:class:`~jaxprune.models.resnet_imagenet.ResNetImageNet`).
* CIFAR ResNets: ``resnet{6n+2}`` (``resnet20``, ``resnet32``, ``resnet44``, ``resnet56``,
  ``resnet110``, ...) except the ImageNet depths above. A name never means two models:
  ``resnet50`` is the ImageNet ResNet-50 (25.6M parameters), and the CIFAR net of depth 50
  (6 * 8 + 2, 0.76M parameters) is ``resnet50_cifar``. Any CIFAR depth may be written
  ``resnet{6n+2}_cifar`` explicitly.
* ``mobilenet_v1`` (MobileNet-V1; ``width=`` is the multiplier alpha).
* ``wrn{depth}_{k}`` with ``depth = 6n + 4`` (CIFAR ``wrn28_10``, ``wrn28_8``, ``wrn16_8``, ...).
* ``fastgrnn``: the FastGRNN sequence classifier (:class:`~jaxprune.models.fastgrnn.FastGRNN`,
  inputs ``(batch, time, features)``; ``hidden_size``, ``w_rank``, ``u_rank``, ...).

Keyword arguments are passed to the model (``width``, ``widths`` for CIFAR VGG / ResNet,
``linear``, ``dtype``, ``dropout_rate`` for WRNs and MobileNet, ``hidden_size`` / ``w_rank`` /
``u_rank`` for FastGRNN, ...).
"""

import functools
import re
from collections.abc import Callable

import flax.linen as nn

from jaxprune.models import resnet_cifar, resnet_imagenet, wrn
from jaxprune.models.fastgrnn import FastGRNN
from jaxprune.models.lenet import LeNet5, LeNet300
from jaxprune.models.mobilenet import MobileNetV1
from jaxprune.models.resnet_cifar import ResNet
from jaxprune.models.resnet_imagenet import ResNetImageNet
from jaxprune.models.vgg import VGG
from jaxprune.models.wrn import WideResNet

_VGG_CFG_BY_DEPTH = {11: "A", 13: "B", 16: "D", 19: "E"}

_FIXED: dict[str, Callable[..., nn.Module]] = {
    "lenet300": LeNet300,
    "lenet5": LeNet5,
    "fastgrnn": FastGRNN,
    **{f"vgg{depth}": functools.partial(VGG, cfg=cfg) for depth, cfg in _VGG_CFG_BY_DEPTH.items()},
}
_MOBILENET_V1 = re.compile(r"mobilenet[-_]?v1")
# ``resnet<depth>``: ImageNet if depth is in resnet_imagenet.CONFIGS, else CIFAR (6n + 2);
# ``resnet<depth>_cifar``: always CIFAR (the only way to name the CIFAR depth-50 net).
_RESNET = re.compile(r"resnet[-_]?(\d+)")
_RESNET_CIFAR = re.compile(r"resnet[-_]?(\d+)[-_]cifar")
_WRN = re.compile(r"wrn[-_]?(\d+)[-_](\d+)")

_LISTED = (
    "lenet300",
    "lenet5",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet50_cifar",
    "mobilenet_v1",
    "wrn16_8",
    "wrn28_8",
    "wrn28_10",
    "wrn40_4",
    "fastgrnn",
)


def model_names() -> list[str]:
    """Returns the listed model names (CIFAR ``resnet*`` and ``wrn*_*`` accept other depths)."""
    return list(_LISTED)


def _unknown(name: str, reason: str = "") -> KeyError:
    return KeyError(
        f"unknown model name {name!r}{reason}; known names: {', '.join(_LISTED)} "
        "(also resnet{6n+2}, resnet{6n+2}_cifar and wrn{6n+4}_{k})"
    )


def _cifar_resnet(name: str, depth: int, num_classes: int, kwargs: dict) -> nn.Module:
    try:
        resnet_cifar.blocks_per_stage(depth)
    except ValueError as error:
        raise _unknown(name, f" ({error})") from None
    return ResNet(depth=depth, num_classes=num_classes, **kwargs)


def get_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Returns the zoo model called ``name`` with ``num_classes`` outputs.

    Args:
      name: a model name (see :func:`model_names` and the module docstring); ``resnet{6n+2}``,
        ``resnet{6n+2}_cifar`` and ``wrn{6n+4}_{k}`` are parsed; ``resnet18/34/50/101/152`` are
        the ImageNet ResNets (so ``resnet50`` is not the CIFAR depth-50 net).
      num_classes: number of output logits.
      **kwargs: further model fields (``width``, ``widths``, ``linear``, ``dtype``, ...).

    Returns:
      An unbound Flax Linen module; call ``model.init(key, x)`` / ``model.apply(vars, x, train)``.

    Raises:
      KeyError: if ``name`` is unknown (the message lists the known names).
      ValueError: if ``num_classes < 1``.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    key = str(name).strip().lower()
    if key in _FIXED:
        return _FIXED[key](num_classes=num_classes, **kwargs)
    if _MOBILENET_V1.fullmatch(key):
        return MobileNetV1(num_classes=num_classes, **kwargs)
    if match := _RESNET.fullmatch(key):
        depth = int(match.group(1))
        if depth in resnet_imagenet.CONFIGS:
            return ResNetImageNet(depth=depth, num_classes=num_classes, **kwargs)
        return _cifar_resnet(name, depth, num_classes, kwargs)
    if match := _RESNET_CIFAR.fullmatch(key):
        return _cifar_resnet(name, int(match.group(1)), num_classes, kwargs)
    if match := _WRN.fullmatch(key):
        depth, k = int(match.group(1)), int(match.group(2))
        try:
            wrn.blocks_per_stage(depth)
        except ValueError as error:
            raise _unknown(name, f" ({error})") from None
        if k < 1:
            raise _unknown(name, f" (widen factor must be >= 1, got {k})")
        return WideResNet(depth=depth, widen_factor=k, num_classes=num_classes, **kwargs)
    raise _unknown(name)
