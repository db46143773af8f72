"""MobileNet-V1 on ImageNet, small-dense: width 0.75 / 0.5 / 0.25 trained dense (Zhu & Gupta).

Zhu & Gupta (2017), "To prune, or not to prune: exploring the efficacy of pruning for model
compression" (arXiv:1710.01878): the small-dense MobileNets, compared at equal nonzero counts
with the large-sparse ones of ``mobilenet_v1_imagenet_gradual.py``. Needs ImageNet-2012 prepared
for tensorflow-datasets (see README, "Datasets"), then on a Cloud TPU pod slice or a GPU box (one
command per host; the argument picks the width multiplier alpha, default 0.5):

    python -m jaxprune.main --config configs/mobilenet_v1_imagenet_small_dense.py:0.5 \
        --workdir runs/mobilenet_v1_imagenet_small_dense_0.5 \
        --config.dataset.data_dir=gs://BUCKET/tfds

Model: MobileNet-V1 at width alpha (every channel count times alpha, Howard et al.; 224px):
0.75: 2,585,560 parameters (2,568,144 kernels); 0.5: 1,331,592 (1,319,648); 0.25: 470,072
(463,600). Training: the same 90 epochs and recipe as the large-sparse runs (``recipes.
imagenet_sgd`` at batch 1024, weight decay 4e-5), dense throughout (``flow='dense'``), so the two
configs differ only in width vs sparsity. The kernel counts pair with the large-sparse kept counts
as 0.75 ~ 50% sparse (2,104,544 kept), 0.5 ~ 75% (1,052,272), 0.25 ~ 90% (420,909):
``jaxprune.models.width.matching_width`` gives 0.67 / 0.43 / 0.23 for them, whose nearest
published multipliers these are.

Expected: published, not measured here (no ImageNet run in this repository). Zhu & Gupta's
MobileNet table (top-1 of the dense width-0.5 / 0.25 models and of the sparse width-1.0 ones)
could not be verified from the sources available to us, so its numbers are not quoted; their
conclusion, in the abstract, is that large-sparse models consistently outperform small-dense
ones of the same memory footprint.

`:smoke` (alone or with a width, e.g. `:0.25,smoke`) trains MobileNet-V1 (all 13 blocks) at 1/4
of the chosen width for a few steps on tiny synthetic 32x32 ImageNet-shaped data (tests).
"""

from jaxprune.configs import default, recipes

WIDTHS = {"0.75": 0.75, "0.5": 0.5, "0.25": 0.25}


def get_config(arg=None):
    variant, smoke = recipes.parse_arg(arg, variants=tuple(WIDTHS), default="0.5")
    width = WIDTHS[variant]
    config = default.get_config()
    config.flow = "dense"
    config.model.name = "mobilenet_v1"
    config.model.width = width
    config.dataset.name = "imagenet2012"

    recipes.imagenet_sgd(config, epochs=90.0, batch_size=1024, weight_decay=4e-5)

    if smoke:
        recipes.imagenet_smoke(config, width=width / 4)
        config.training.steps = 4
    return config
