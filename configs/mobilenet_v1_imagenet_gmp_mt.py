"""MobileNet-V1 on ImageNet: dense, prune to 90% with Global MP + MT, fine-tune (Gupta et al.).

Gupta et al. (2022), "Is Complexity Required for Neural Network Pruning? A Case Study on Global
Magnitude Pruning" (arXiv:2209.14624), MobileNet-V1 setting. Needs ImageNet-2012 prepared for
tensorflow-datasets (see README, "Datasets"), then on a Cloud TPU pod slice or a GPU box (one
command per host):

    python -m jaxprune.main --config configs/mobilenet_v1_imagenet_gmp_mt.py \
        --workdir runs/mobilenet_v1_imagenet_gmp_mt --config.dataset.data_dir=gs://BUCKET/tfds

Model: MobileNet-V1 at width 1.0, 224px (4,231,976 parameters; 4,209,088 prunable kernels,
depthwise and classifier included). Dense phase: the standard ImageNet recipe
(``recipes.imagenet_sgd``) for 90 epochs at batch 1024 (1,251 steps per epoch; SGD with Nesterov
momentum 0.9, 0.4 after a 5-epoch warm-up, cosine) with weight decay 4e-5, the usual value for
MobileNets (Howard et al. use little or no decay on the depthwise filters; here it applies to
every kernel). Then one-shot Global MP to 90% sparsity (420,909 kernels kept) with the Minimum
Threshold 0.05% of all prunable weights per layer (every layer keeps at least 2,105 weights, or
all of a smaller one, e.g. the 864-weight stem): MT is what prevents the layer collapse of Global
MP on MobileNet-V1 that Gupta et al. report. 120 epochs of fine-tuning at 0.4096, cosine. The
90% target, the 0.05% MT and the fine-tuning length and rate are the defaults of the authors'
script (GPMT-Authors/Global-Pruning-With-Minimum-Threshold, ``GP + MT/prune_GPMT.py``, written
for their ResNet-50 runs; 0.1024 at batch 256 scaled to 1024), not MobileNet-specific values
taken from the paper; the paper's MobileNet-V1 sparsities and MT value were not verified.

Expected: published, not measured here (no ImageNet run in this repository). Gupta et al.'s
MobileNet-V1 accuracies could not be verified from the sources available to us and are not
quoted; the authors' repository README (GPMT-Authors/Global-Pruning-With-Minimum-Threshold)
lists ResNet-50 numbers only (see ``resnet50_imagenet_gmp_mt.py``).

`--config configs/mobilenet_v1_imagenet_gmp_mt.py:smoke` runs MobileNet-V1 (all 13 blocks) at
width 1/8 for a few steps on tiny synthetic 32x32 ImageNet-shaped data (1000 classes; tests).
"""

from jaxprune.configs import default, recipes


def get_config(arg=None):
    _, smoke = recipes.parse_arg(arg)
    config = default.get_config()
    config.flow = "prune_finetune"
    config.model.name = "mobilenet_v1"
    config.dataset.name = "imagenet2012"

    recipes.imagenet_sgd(config, epochs=90.0, batch_size=1024, weight_decay=4e-5)

    config.pruning.score = "magnitude"
    config.pruning.selection = "global"
    config.pruning.sparsity = 0.9
    config.pruning.min_keep_fraction = 0.0005  # 0.05% of all prunable weights per layer

    config.finetune.epochs = 120.0
    config.finetune.learning_rate = 0.1024 * 1024 / 256
    config.finetune.lr_schedule = "cosine"

    if smoke:
        recipes.imagenet_smoke(config, width=0.125)
    return config
