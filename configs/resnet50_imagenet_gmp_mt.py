"""ResNet-50 on ImageNet: train dense, prune to 90% with Global MP + MT, fine-tune (Gupta et al.).

Gupta et al. (2022), "Is Complexity Required for Neural Network Pruning? A Case Study on Global
Magnitude Pruning" (arXiv:2209.14624), ResNet-50 setting. Needs ImageNet-2012 prepared for
tensorflow-datasets (see README, "Datasets"), then on a Cloud TPU pod slice or a GPU box (one
command per host):

    python -m jaxprune.main --config configs/resnet50_imagenet_gmp_mt.py \
        --workdir runs/resnet50_imagenet_gmp_mt --config.dataset.data_dir=gs://BUCKET/tfds

Model: the torchvision ResNet-50 (25,557,032 parameters; 25,502,912 prunable conv and dense
kernels). Dense phase: the standard ImageNet recipe (``recipes.imagenet_sgd``): 90 epochs at
batch 1024 (1,251 steps per epoch), SGD with Nesterov momentum 0.9, learning rate 0.4
(0.1 x 1024 / 256) after a 5-epoch linear warm-up, cosine decay, weight decay 1e-4. Then one-shot
Global MP to 90% sparsity over all kernels (2,550,291 kept) with the Minimum Threshold 0.05% of all
prunable weights per layer (MT: every layer keeps at least 12,751 weights, or all of a smaller
layer), and 120 epochs of fine-tuning under the fixed mask with a cosine schedule from 0.4096
(the authors' script's 0.1024 at batch 256, scaled to batch 1024). 90%, MT 0.05% and the
fine-tuning length and rate are the defaults of the authors' script (GPMT-Authors/
Global-Pruning-With-Minimum-Threshold, ``GP + MT/prune_GPMT.py``: ``--sparsity 0.90``,
``--min-threshold 0.05`` (percent), ``--epochs 120``, ``--lr 0.1024``, batch 256); that script
also uses label smoothing 0.1, momentum 0.875 and weight decay 7e-6 in fine-tuning, which this
config does not reproduce (no label smoothing here; momentum and weight decay are shared by both
phases). The authors prune a separately trained dense checkpoint (77.04%); here the dense phase
trains it (or pass ``--config.init_from=RUN`` to prune another run's weights).

Expected: published, not measured here (no ImageNet run in this repository). The authors'
repository (GPMT-Authors/Global-Pruning-With-Minimum-Threshold, README) lists ResNet-50 top-1
accuracy: dense 77.04%; Global MP at 90% 75.44%, Global MP + 0.05% MT at 90% 75.42%; at 80%
76.84% / 76.81% (GP / GP + 0.05% MT); at 95.30% 71.63% / 71.55% (GP / GP + 0.005% MT); at
98.05% 62.12% / 61.83%. The dense number of this recipe is typically about 76-77% (ours is
not measured).

`--config configs/resnet50_imagenet_gmp_mt.py:smoke` runs the full-depth ResNet-50 at width
1/16 for a few steps on tiny synthetic 32x32 ImageNet-shaped data (1000 classes; tests).
"""

from jaxprune.configs import default, recipes


def get_config(arg=None):
    _, smoke = recipes.parse_arg(arg)
    config = default.get_config()
    config.flow = "prune_finetune"
    config.model.name = "resnet50"
    config.dataset.name = "imagenet2012"

    recipes.imagenet_sgd(config, epochs=90.0, batch_size=1024)

    config.pruning.score = "magnitude"
    config.pruning.selection = "global"
    config.pruning.sparsity = 0.9
    config.pruning.min_keep_fraction = 0.0005  # 0.05% of all prunable weights per layer
    config.pruning.score_batch_size = 256  # unused by magnitude scores

    config.finetune.epochs = 120.0
    config.finetune.learning_rate = 0.1024 * 1024 / 256
    config.finetune.lr_schedule = "cosine"

    if smoke:
        recipes.imagenet_smoke(config, width=0.0625)
    return config
