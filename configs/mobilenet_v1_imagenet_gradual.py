"""MobileNet-V1 on ImageNet, large-sparse: gradual pruning to 50/75/90% in training (Zhu & Gupta).

Zhu & Gupta (2017), "To prune, or not to prune: exploring the efficacy of pruning for model
compression" (arXiv:1710.01878): the large-sparse MobileNets, compared at equal nonzero counts
with the small-dense ones of ``mobilenet_v1_imagenet_small_dense.py``. Needs ImageNet-2012
prepared for tensorflow-datasets (see README, "Datasets"), then on a Cloud TPU pod slice or a GPU
box (one command per host; the argument picks the final sparsity, default 90):

    python -m jaxprune.main --config configs/mobilenet_v1_imagenet_gradual.py:75 \
        --workdir runs/mobilenet_v1_imagenet_gradual_75 --config.dataset.data_dir=gs://BUCKET/tfds

Model: MobileNet-V1 at width 1.0, 224px (4,209,088 prunable kernels). One run of 90 epochs at
batch 1024 (1,251 steps per epoch; ``recipes.imagenet_sgd``: SGD with Nesterov momentum 0.9, 0.4
after a 5-epoch warm-up, cosine, weight decay 4e-5): dense for 10 epochs (12,510 steps), then
the masks are recomputed from the current weights every epoch (1,251 steps) up to epoch 60
(75,060 steps) on the cubic schedule 0% -> 50%, 75% or 90%, then 30 epochs of recovery. Global
MP over every kernel (depthwise, the stem and the classifier included), exactly 2,104,544 (50%),
1,052,272 (75%) or 420,909 (90%) kernels kept at the end. Zhu & Gupta's TensorFlow pruning
library prunes each weight tensor to the target on its own (``selection='layerwise'``,
``quota='uniform'`` here), but that selection does not run in flow 'gradual' on BatchNorm models
yet (its layer ordering applies the model without ``batch_stats``), hence Global MP. The
schedule's begin step, end step and frequency are our choices scaled to 90 epochs; Zhu & Gupta's
MobileNet pruning hyper-parameters and training recipe could not be verified from the sources
available to us.

Pairing with small-dense (``jaxprune.models.width.matching_width`` on the kept counts above):
the dense width whose kernel count equals the 50% / 75% / 90% kept count is 0.67 / 0.43 / 0.23,
nearest of the published multipliers 0.75 (2,568,144 kernels), 0.5 (1,319,648) and 0.25
(463,600).

Expected: published, not measured here (no ImageNet run in this repository). Zhu & Gupta's
MobileNet table (top-1 of the sparse width-1.0 models and of the dense width-0.5 / 0.25 models)
could not be verified from the sources available to us, so its numbers are not quoted; their
conclusion, in the abstract, is that large-sparse models consistently outperform small-dense
ones of the same memory footprint.

`:smoke` (alone or with a sparsity, e.g. `:75,smoke`) runs MobileNet-V1 (all 13 blocks) at
width 1/8 for a few steps with three mask updates on tiny synthetic 32x32 ImageNet-shaped data
(tests).
"""

from jaxprune.configs import default, recipes

SPARSITIES = {"50": 0.5, "75": 0.75, "90": 0.9}


def get_config(arg=None):
    variant, smoke = recipes.parse_arg(arg, variants=tuple(SPARSITIES), default="90")
    sparsity = SPARSITIES[variant]
    config = default.get_config()
    config.flow = "gradual"
    config.model.name = "mobilenet_v1"
    config.dataset.name = "imagenet2012"

    recipes.imagenet_sgd(config, epochs=90.0, batch_size=1024, weight_decay=4e-5)
    steps_per_epoch = recipes.imagenet_steps_per_epoch(config.training.batch_size)

    config.pruning.score = "magnitude"
    config.pruning.selection = "global"
    config.pruning.sparsity = sparsity  # unused by flow='gradual'; kept equal to the target

    schedule = config.pruning.schedule
    schedule.type = "polynomial"
    schedule.initial_sparsity = 0.0
    schedule.final_sparsity = sparsity
    schedule.begin_step = 10 * steps_per_epoch
    schedule.end_step = 60 * steps_per_epoch
    schedule.frequency = steps_per_epoch
    schedule.power = 3.0

    if smoke:
        recipes.imagenet_smoke(config, width=0.125)
        config.training.steps = 4
        schedule.begin_step = 1
        schedule.end_step = 3
        schedule.frequency = 1
    return config
