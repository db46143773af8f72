"""Flax Linen zoo: LeNets, CIFAR VGG / ResNet / WRN, ImageNet ResNet / MobileNet-V1, FastGRNN.

Models are built by name through the registry (``get_model``).
"""

from jaxprune.models import channels
from jaxprune.models.fastgrnn import FastGRNN
from jaxprune.models.lenet import LeNet5, LeNet300
from jaxprune.models.mobilenet import MobileNetV1
from jaxprune.models.registry import get_model, model_names
from jaxprune.models.resnet_cifar import BasicBlock, ResNet
from jaxprune.models.resnet_imagenet import ResNetImageNet
from jaxprune.models.vgg import VGG
from jaxprune.models.width import count_params, matching_width
from jaxprune.models.wrn import WideBasicBlock, WideResNet

__all__ = [
    "VGG",
    "BasicBlock",
    "FastGRNN",
    "LeNet5",
    "LeNet300",
    "MobileNetV1",
    "ResNet",
    "ResNetImageNet",
    "WideBasicBlock",
    "WideResNet",
    "channels",
    "count_params",
    "get_model",
    "matching_width",
    "model_names",
]
