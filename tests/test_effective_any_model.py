"""Effective masks on arbitrary Flax models, against explicit path counting on unit graphs.

Every oracle here builds the network's unit graph by hand (one node per unit, one edge per kept
weight and per position, identity edges for norms / activations, window edges for pooling), walks
it forward from the inputs and backward from the outputs, and keeps the weight edges whose source
is reachable and whose target reaches an output. ``effective_mask`` must agree bit for bit.
"""

import collections
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.models.registry import get_model
from jaxprune.pruning.effective import effective_mask
from jaxprune.pruning.layer_order import layer_order
from jaxprune.pruning.stats import sparsity_report
from jaxprune.pruning.tree import named_leaves

KEY = jax.random.key(0)


# ---------------------------------------------------------------------------------------------
# The oracle: a unit graph with keyed weight edges.


class Graph:
    """Units are hashable ids; an edge may carry a key ``(leaf name, index)`` of a kept weight."""

    def __init__(self):
        self.succ = collections.defaultdict(list)
        self.pred = collections.defaultdict(list)
        self.keyed = []

    def edge(self, src, dst, key=None):
        self.succ[src].append(dst)
        self.pred[dst].append(src)
        if key is not None:
            self.keyed.append((src, dst, key))

    def dense(self, srcs, dsts, mask, name, prefix=()):
        """A kept entry ``mask[prefix + (i, j)]`` connects ``srcs[i]`` to ``dsts[j]``."""
        for i, j in zip(*np.nonzero(mask), strict=True):
            self.edge(srcs[i], dsts[j], (name, (*prefix, int(i), int(j))))

    def identity(self, srcs, dsts):
        for s, d in zip(srcs, dsts, strict=True):
            self.edge(s, d)

    @staticmethod
    def _reach(starts, adjacency):
        seen, todo = set(starts), list(starts)
        while todo:
            for nxt in adjacency[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    def effective(self, inputs, outputs):
        """The keys of the weight edges on an input-to-output path."""
        forward = self._reach(inputs, self.succ)
        backward = self._reach(outputs, self.pred)
        return {key for src, dst, key in self.keyed if src in forward and dst in backward}


def assert_matches(emask, mask, effective, names):
    """``emask[name]`` must be exactly the kept entries whose key the oracle found effective."""
    emask, mask = dict(named_leaves(emask)), dict(named_leaves(mask))
    for name in names:
        want = np.zeros(np.shape(mask[name]), bool)
        for key_name, index in effective:
            if key_name == name:
                want[index] = True
        assert not (want & ~np.asarray(mask[name])).any()  # the oracle only uses kept entries
        np.testing.assert_array_equal(np.asarray(emask[name]), want, err_msg=name)


def random_masks(params, density, seed, prunable=lambda name, leaf: name.endswith("kernel")):
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map_with_path(
        lambda path, w: (
            rng.random(np.shape(w)) < density
            if prunable("/".join(str(getattr(p, "key", p)) for p in path), w)
            else np.ones(np.shape(w), bool)
        ),
        params,
    )


def exact_masks(params, density, seed):
    """Kernel masks keeping exactly ``round(density * size)`` entries of each kernel."""
    rng = np.random.default_rng(seed)

    def one(path, w):
        name = "/".join(str(getattr(p, "key", p)) for p in path)
        if not name.endswith("kernel"):
            return np.ones(np.shape(w), bool)
        flat = np.zeros(int(np.size(w)), bool)
        flat[rng.permutation(flat.size)[: round(density * flat.size)]] = True
        return flat.reshape(np.shape(w))

    return jax.tree_util.tree_map_with_path(one, params)


def kept(tree):
    return sum(int(np.asarray(m).sum()) for n, m in named_leaves(tree) if n.endswith("kernel"))


def chain_oracle(kernels, n_in):
    """Oracle of a chain of dense layers ``[(name, 2-D mask, index prefix)]`` (norms = identity)."""
    g = Graph()
    prev = [("in", i) for i in range(n_in)]
    for depth, (name, mask, prefix) in enumerate(kernels):
        nxt = [("h", depth, j) for j in range(mask.shape[1])]
        g.dense(prev, nxt, mask, name, prefix)
        prev = nxt
    return g.effective([("in", i) for i in range(n_in)], prev)


def small_params(seed, **shapes):
    rng = np.random.default_rng(seed)
    params = {name: {"kernel": np.zeros(shape, np.float32)} for name, shape in shapes.items()}
    mask = {name: {"kernel": rng.random(shape) < 0.5} for name, shape in shapes.items()}
    return params, mask


def vec(tag, n):
    return [(tag, i) for i in range(n)]


# ---------------------------------------------------------------------------------------------
# Models.


class NormMLP(nn.Module):
    widths: tuple[int, ...]
    norm: str = "layer"

    @nn.compact
    def __call__(self, x):
        for i, width in enumerate(self.widths):
            x = nn.Dense(width)(x)
            if i < len(self.widths) - 1:
                if self.norm == "layer":
                    x = nn.LayerNorm()(x)
                elif self.norm == "rms":
                    x = nn.RMSNorm()(x)
                elif self.norm == "group":
                    x = nn.GroupNorm(num_groups=1)(x)
                x = nn.gelu(x)
        return x


def init(model, *inputs):
    """Zero-valued variables of ``model`` (values are never used, only shapes): no compilation."""
    shapes = jax.eval_shape(model.init, KEY, *inputs)
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def apply_of(module):
    return lambda p, x: module.apply({"params": p}, x)


def chain_kernels(mask, n):
    return [(f"Dense_{i}/kernel", np.asarray(mask[f"Dense_{i}"]["kernel"]), ()) for i in range(n)]


# ---------------------------------------------------------------------------------------------
# The two reported bugs, and dense chains with norms / remat / custom_vjp.


def test_layernorm_mlp_at_half_density_is_fully_effective():
    """Reported: 77.9% effective sparsity at 50% direct; LayerNorm statistics are no paths."""
    model = NormMLP((100, 100, 10))
    x = jnp.ones((1, 20))
    params = init(model, x)["params"]
    mask = exact_masks(params, 0.5, 0)
    emask = effective_mask(apply_of(model), params, mask, x)
    effective = chain_oracle(chain_kernels(mask, 3), 20)
    assert_matches(emask, mask, effective, [f"Dense_{i}/kernel" for i in range(3)])
    report = sparsity_report(params, mask, effective_mask=emask)
    assert report.effective_sparsity == pytest.approx(report.sparsity) == pytest.approx(0.5, 1e-3)


@pytest.mark.parametrize("norm", ["layer", "rms", "group", "none"])
@pytest.mark.parametrize("seed", [0, 1])
def test_norm_mlp_equals_graph_walk(norm, seed):
    model = NormMLP((7, 6, 5, 3), norm)
    x = jnp.ones((2, 8))
    params = init(model, x)["params"]
    mask = random_masks(params, 0.2, seed)
    emask = effective_mask(apply_of(model), params, mask, x)
    effective = chain_oracle(chain_kernels(mask, 4), 8)
    assert len(effective) < kept(mask)  # the masks disconnect something
    assert_matches(emask, mask, effective, [f"Dense_{i}/kernel" for i in range(4)])


class BatchNormMLP(nn.Module):
    train: bool

    @nn.compact
    def __call__(self, x):
        for width in (6, 5):
            x = nn.Dense(width)(x)
            x = nn.BatchNorm(use_running_average=not self.train)(x)
            x = nn.relu(x)
        return nn.Dense(3)(x)


@pytest.mark.parametrize("train", [False, True])
def test_batchnorm_eval_and_train_are_identities(train):
    model = BatchNormMLP(train)
    x = jnp.ones((4, 8))
    variables = init(model, x)
    params, stats = variables["params"], variables["batch_stats"]

    def fn(p, inputs):
        out = model.apply({"params": p, "batch_stats": stats}, inputs, mutable=["batch_stats"])
        return out[0]  # (logits, updated state): only the logits are outputs

    mask = random_masks(params, 0.3, 4)
    emask = effective_mask(fn, params, mask, x)
    effective = chain_oracle(chain_kernels(mask, 3), 8)
    assert len(effective) < kept(mask)
    assert_matches(emask, mask, effective, [f"Dense_{i}/kernel" for i in range(3)])


@jax.custom_vjp
def clipped_relu(x):
    return jnp.clip(x, 0.0, 6.0)


clipped_relu.defvjp(lambda x: (clipped_relu(x), x), lambda x, g: (g * (x > 0),))


class RematCustomMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        dense = nn.remat(nn.Dense)
        for i, width in enumerate((6, 6, 5)):
            x = clipped_relu(dense(width, name=f"Dense_{i}")(x))
        return nn.Dense(3, name="Dense_3")(x)


def test_remat_and_custom_vjp_chain_equals_graph_walk():
    model = RematCustomMLP()
    x = jnp.ones((1, 7))
    params = init(model, x)["params"]
    mask = random_masks(params, 0.25, 2)
    emask = effective_mask(apply_of(model), params, mask, x)
    effective = chain_oracle(chain_kernels(mask, 4), 7)
    assert len(effective) < kept(mask)
    assert_matches(emask, mask, effective, [f"Dense_{i}/kernel" for i in range(4)])


def test_jax_checkpoint_jit_and_debug_print_in_a_plain_function():
    params = {"a": {"kernel": np.ones((5, 4))}, "b": {"kernel": np.ones((4, 3))}}

    @jax.jit
    def second(h, w):
        return jnp.tanh(h @ w)

    def fn(p, x):
        h = jax.checkpoint(lambda v: jax.nn.relu(v @ p["a"]["kernel"]))(x)
        jax.debug.print("h = {}", h)  # no outputs: ignored
        return second(h, p["b"]["kernel"])

    mask = random_masks(params, 0.3, 5)
    emask = effective_mask(fn, params, mask, jnp.ones((1, 5)))
    effective = chain_oracle(
        [("a/kernel", mask["a"]["kernel"], ()), ("b/kernel", mask["b"]["kernel"], ())], 5
    )
    assert_matches(emask, mask, effective, ["a/kernel", "b/kernel"])


# ---------------------------------------------------------------------------------------------
# nn.scan.


class ScanBody(nn.Module):
    width: int
    norm: bool

    @nn.compact
    def __call__(self, h, _):
        h = nn.Dense(self.width)(h)
        if self.norm:
            h = nn.LayerNorm()(h)
        return nn.relu(h), None


class ScanMLP(nn.Module):
    width: int
    depth: int
    n_out: int
    norm: bool = False

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(self.width, name="inp")(x)
        blocks = nn.scan(
            ScanBody,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            length=self.depth,
        )(self.width, self.norm, name="blocks")
        h, _ = blocks(h, None)
        return nn.Dense(self.n_out, name="head")(h)


def scan_kernels(mask, depth):
    stacked = np.asarray(mask["blocks"]["Dense_0"]["kernel"])
    return [
        ("inp/kernel", np.asarray(mask["inp"]["kernel"]), ()),
        *[("blocks/Dense_0/kernel", stacked[d], (d,)) for d in range(depth)],
        ("head/kernel", np.asarray(mask["head"]["kernel"]), ()),
    ]


SCAN_NAMES = ["inp/kernel", "blocks/Dense_0/kernel", "head/kernel"]


def scan_effective(model, x, mask):
    """``effective_mask`` of a scanned MLP and its graph-walk oracle (effective kernel entries)."""
    emask = effective_mask(apply_of(model), init(model, x)["params"], mask, x)
    return emask, chain_oracle(scan_kernels(mask, model.depth), x.shape[-1])


@pytest.mark.parametrize("norm", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_small_scan_mlp_equals_graph_walk(norm, seed):
    model = ScanMLP(width=8, depth=5, n_out=3, norm=norm)
    x = jnp.ones((1, 6))
    mask = random_masks(init(model, x)["params"], 0.2, seed)
    emask, effective = scan_effective(model, x, mask)
    assert len(effective) < kept(mask)
    assert_matches(emask, mask, effective, SCAN_NAMES)


def test_deep_scan_mlp_reported_case():
    """Reported: depth 60, width 64 (32 -> 64 ... 64 -> 10), 50% kept (124,224): 0 effective."""
    model = ScanMLP(width=64, depth=60, n_out=10)
    x = jnp.ones((1, 32))
    mask = exact_masks(init(model, x)["params"], 0.5, 0)
    assert kept(mask) == 124_224
    emask, effective = scan_effective(model, x, mask)
    assert len(effective) > 120_000
    assert kept(emask) == len(effective)
    assert_matches(emask, mask, effective, SCAN_NAMES)


def test_deep_scan_mlp_with_a_cut_layer():
    model = ScanMLP(width=16, depth=40, n_out=4)
    x = jnp.ones((1, 8))
    mask = random_masks(init(model, x)["params"], 0.3, 3)
    mask["blocks"]["Dense_0"]["kernel"][25, :, :12] = False  # only 4 units pass layer 25
    emask, effective = scan_effective(model, x, mask)
    assert len(effective) < kept(mask)
    assert_matches(emask, mask, effective, SCAN_NAMES)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recurrent_scan_over_a_sequence_with_a_constant_initial_state(seed):
    params, mask = small_params(seed, w=(3, 5), u=(5, 5), v=(5, 2))
    mask["u"]["kernel"] &= np.random.default_rng(seed).random((5, 5)) < 0.5  # sparser recurrence
    steps = 4

    def fn(p, x):
        def step(h, x_t):  # the zero state is a constant; it becomes a signal after one step
            return jnp.tanh(h @ p["u"]["kernel"] + x_t @ p["w"]["kernel"]), None

        h, _ = jax.lax.scan(step, jnp.zeros(5), x)
        return h @ p["v"]["kernel"]

    g = Graph()
    for t in range(steps):
        state, new = [("h", t, k) for k in range(5)], [("h", t + 1, k) for k in range(5)]
        g.dense([("x", t, i) for i in range(3)], new, mask["w"]["kernel"], "w/kernel")
        g.dense(state, new, mask["u"]["kernel"], "u/kernel")
    g.dense([("h", steps, k) for k in range(5)], vec("o", 2), mask["v"]["kernel"], "v/kernel")
    inputs = [("x", t, i) for t in range(steps) for i in range(3)]
    effective = g.effective(inputs, vec("o", 2))
    emask = effective_mask(fn, params, mask, jnp.ones((steps, 3)))
    assert_matches(emask, mask, effective, ["w/kernel", "u/kernel", "v/kernel"])


# ---------------------------------------------------------------------------------------------
# Convolutions with max and average pooling, residual blocks.


class ConvPool(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(3, (3,), padding="SAME")(x))
        x = nn.max_pool(x, (2,), strides=(2,))
        x = nn.Conv(4, (3,), padding="SAME")(x)
        x = nn.avg_pool(x, (2,), strides=(2,))
        x = nn.Conv(2, (3,), padding="SAME")(x)
        return nn.Dense(3)(x.reshape((x.shape[0], -1)))


def conv_pool_oracle(mask, length, c_in):
    g = Graph()
    inputs = [("x", p, c) for p in range(length) for c in range(c_in)]
    cur, size = (lambda p, c: ("x", p, c)), length

    def conv(cur, size, kernel, name, tag):
        k, cin, cout = kernel.shape
        for p, t in itertools.product(range(size), range(k)):
            q = p + t - k // 2
            if 0 <= q < size:
                for ci, co in zip(*np.nonzero(kernel[t]), strict=True):
                    g.edge(cur(q, ci), (tag, p, co), (name, (t, int(ci), int(co))))
        return lambda p, c: (tag, p, c)

    def pool(cur, size, channels, tag):
        for p, u, c in itertools.product(range(size // 2), range(2), range(channels)):
            g.edge(cur(2 * p + u, c), (tag, p, c))
        return (lambda p, c: (tag, p, c)), size // 2

    cur = conv(cur, size, mask["Conv_0"]["kernel"], "Conv_0/kernel", "c0")
    cur, size = pool(cur, size, 3, "p0")
    cur = conv(cur, size, mask["Conv_1"]["kernel"], "Conv_1/kernel", "c1")
    cur, size = pool(cur, size, 4, "p1")
    cur = conv(cur, size, mask["Conv_2"]["kernel"], "Conv_2/kernel", "c2")
    flat = [cur(p, c) for p in range(size) for c in range(2)]
    out = [("out", j) for j in range(3)]
    g.dense(flat, out, mask["Dense_0"]["kernel"], "Dense_0/kernel")
    return g.effective(inputs, out)


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_conv_chain_with_max_and_avg_pooling_equals_graph_walk(seed):
    model, length = ConvPool(), 8
    x = jnp.ones((1, length, 2))
    params = init(model, x)["params"]
    mask = random_masks(params, 0.3, seed)
    emask = effective_mask(apply_of(model), params, mask, x)
    effective = conv_pool_oracle(mask, length, 2)
    assert len(effective) < kept(mask)
    names = ["Conv_0/kernel", "Conv_1/kernel", "Conv_2/kernel", "Dense_0/kernel"]
    assert_matches(emask, mask, effective, names)


class ResidualNorm(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(5, name="stem")(x)
        y = nn.relu(nn.Dense(5, name="branch_a")(nn.LayerNorm()(h)))
        y = nn.Dense(5, name="branch_b")(y)
        return nn.Dense(3, name="head")(nn.LayerNorm()(h + y))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_residual_block_with_norms_equals_graph_walk(seed):
    model = ResidualNorm()
    x = jnp.ones((1, 4))
    params = init(model, x)["params"]
    mask = random_masks(params, 0.3, seed)
    g = Graph()
    xs, h, a, b, out = (
        [(t, i) for i in range(n)] for t, n in [("x", 4), ("h", 5), ("a", 5), ("b", 5), ("o", 3)]
    )
    r = [("r", i) for i in range(5)]
    g.dense(xs, h, mask["stem"]["kernel"], "stem/kernel")
    g.dense(h, a, mask["branch_a"]["kernel"], "branch_a/kernel")
    g.dense(a, b, mask["branch_b"]["kernel"], "branch_b/kernel")
    g.identity(h, r)
    g.identity(b, r)
    g.dense(r, out, mask["head"]["kernel"], "head/kernel")
    effective = g.effective(xs, out)
    emask = effective_mask(apply_of(model), params, mask, x)
    names = ["stem/kernel", "branch_a/kernel", "branch_b/kernel", "head/kernel"]
    assert_matches(emask, mask, effective, names)


class SqueezeExcite(nn.Module):
    """Reductions that are real connections: pooling into Dense layers, a gate, mean + Dense."""

    @nn.compact
    def __call__(self, x):
        h = nn.Conv(4, (1,), name="conv")(x)  # (1, 3, 4)
        squeezed = jnp.mean(h, axis=1)
        gate = nn.sigmoid(nn.Dense(4, name="se_out")(nn.relu(nn.Dense(2, name="se_in")(squeezed))))
        pooled = jnp.mean(h * gate[:, None, :], axis=1)
        return nn.Dense(3, name="proj")(pooled) + jnp.mean(pooled, axis=-1, keepdims=True)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_reductions_that_feed_layers_are_connections(seed):
    model = SqueezeExcite()
    x = jnp.ones((1, 3, 2))
    params = init(model, x)["params"]
    mask = random_masks(params, 0.4, seed)
    m = {name: np.asarray(leaf) for name, leaf in named_leaves(mask)}
    g = Graph()
    for pos in range(3):
        g.dense([("x", pos, c) for c in range(2)], [("h", pos, k) for k in range(4)],
                m["conv/kernel"][0], "conv/kernel", (0,))  # fmt: skip
        for k in range(4):
            g.edge(("h", pos, k), ("s", k))  # the squeeze: average over positions
            g.edge(("h", pos, k), ("y", pos, k))  # gated by ...
            g.edge(("e", k), ("y", pos, k))  # ... the excitation
            g.edge(("y", pos, k), ("p", k))  # average pooling
    g.dense(vec("s", 4), vec("a", 2), m["se_in/kernel"], "se_in/kernel")
    g.dense(vec("a", 2), vec("e", 4), m["se_out/kernel"], "se_out/kernel")
    g.dense(vec("p", 4), vec("o", 3), m["proj/kernel"], "proj/kernel")
    for k, j in itertools.product(range(4), range(3)):
        g.edge(("p", k), ("o", j))  # + mean(pooled): not a statistic of the Dense output
    inputs = [("x", pos, c) for pos in range(3) for c in range(2)]
    effective = g.effective(inputs, vec("o", 3))
    emask = effective_mask(apply_of(model), params, mask, x)
    names = ["conv/kernel", "se_in/kernel", "se_out/kernel", "proj/kernel"]
    assert_matches(emask, mask, effective, names)


# ---------------------------------------------------------------------------------------------
# Attention and embeddings.

SEQ, DIM, HEADS, HEAD_DIM, HIDDEN, VOCAB = 3, 4, 2, 2, 6, 5


class EncoderLayer(nn.Module):
    causal: bool = False

    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm()(x)
        mask = nn.make_causal_mask(jnp.ones(x.shape[:2])) if self.causal else None
        attention = nn.MultiHeadDotProductAttention(
            num_heads=HEADS, qkv_features=HEADS * HEAD_DIM, name="attn"
        )
        x = x + attention(h, h, mask=mask)
        h = nn.LayerNorm()(x)
        return x + nn.Dense(DIM, name="mlp_out")(nn.relu(nn.Dense(HIDDEN, name="mlp_in")(h)))


ATTN_NAMES = [
    "attn/query/kernel",
    "attn/key/kernel",
    "attn/value/kernel",
    "attn/out/kernel",
    "mlp_in/kernel",
    "mlp_out/kernel",
]


def encoder_oracle(mask, causal):
    """Documented attention rule: s[h,i,j] <- q[i,h,:] and k[j,h,:]; p = s (softmax is a
    statistic); o[i,h,d] <- p[h,i,j] and v[j,h,d] for every unmasked (i, j); norms identity."""
    g = Graph()
    m = {name: np.asarray(dict(named_leaves(mask))[name]) for name in ATTN_NAMES}
    x = [[("x", t, e) for e in range(DIM)] for t in range(SEQ)]
    heads = {
        part: [
            [("qkv", part, t, h, d) for h in range(HEADS) for d in range(HEAD_DIM)]
            for t in range(SEQ)
        ]
        for part in ("query", "key", "value")
    }
    for part, t in itertools.product(heads, range(SEQ)):  # LayerNorm is the identity
        kernel = m[f"attn/{part}/kernel"].reshape(DIM, HEADS * HEAD_DIM)
        for e, f in zip(*np.nonzero(kernel), strict=True):
            h, d = divmod(int(f), HEAD_DIM)
            g.edge(x[t][e], heads[part][t][f], (f"attn/{part}/kernel", (int(e), h, d)))
    for h, i, j in itertools.product(range(HEADS), range(SEQ), range(SEQ)):
        if causal and j > i:
            continue  # masked scores are a constant: no edge
        for d in range(HEAD_DIM):
            g.edge(heads["query"][i][h * HEAD_DIM + d], ("s", h, i, j))
            g.edge(heads["key"][j][h * HEAD_DIM + d], ("s", h, i, j))
        g.edge(("s", h, i, j), ("p", h, i, j))
    for h, i, j, d in itertools.product(range(HEADS), range(SEQ), range(SEQ), range(HEAD_DIM)):
        # The attention-weighted sum over j: both factors connect (products are unions).
        g.edge(("p", h, i, j), ("o", i, h, d))
        g.edge(heads["value"][j][h * HEAD_DIM + d], ("o", i, h, d))
    y = [[("y", t, e) for e in range(DIM)] for t in range(SEQ)]
    for t in range(SEQ):
        for h, d, e in zip(*np.nonzero(m["attn/out/kernel"]), strict=True):
            g.edge(("o", t, int(h), int(d)), y[t][e], ("attn/out/kernel", (int(h), int(d), int(e))))
        g.identity(x[t], y[t])  # residual
        hidden = [("f", t, k) for k in range(HIDDEN)]
        z = [("z", t, e) for e in range(DIM)]
        g.dense(y[t], hidden, m["mlp_in/kernel"], "mlp_in/kernel")
        g.dense(hidden, z, m["mlp_out/kernel"], "mlp_out/kernel")
        g.identity(y[t], z)  # residual
    inputs = [u for row in x for u in row]
    outputs = [("z", t, e) for t in range(SEQ) for e in range(DIM)]
    return g.effective(inputs, outputs)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_attention_encoder_equals_graph_walk(causal, seed):
    model = EncoderLayer(causal)
    x = jnp.ones((1, SEQ, DIM))
    params = init(model, x)["params"]
    mask = random_masks(params, 0.25, seed)
    emask = effective_mask(apply_of(model), params, mask, x)
    assert_matches(emask, mask, encoder_oracle(mask, causal), ATTN_NAMES)


def test_attention_heads_dead_output_and_constant_attention():
    model = EncoderLayer()
    x = jnp.ones((1, SEQ, DIM))
    params = init(model, x)["params"]
    mask = jax.tree.map(lambda w: np.ones(np.shape(w), bool), params)
    mask["attn"]["out"]["kernel"][0] = False  # head 0 reaches nothing
    mask["attn"]["query"]["kernel"][:, 1] = False  # head 1: constant scores (uniform attention)
    mask["attn"]["key"]["kernel"][:, 1] = False
    emask = effective_mask(apply_of(model), params, mask, x)
    for part in ("query", "key", "value"):
        assert not np.asarray(emask["attn"][part]["kernel"])[:, 0].any(), part
    # The value path of head 1 averages over the tokens whatever the scores are.
    assert np.asarray(emask["attn"]["value"]["kernel"])[:, 1].all()
    assert np.asarray(emask["attn"]["out"]["kernel"])[1].all()
    assert_matches(emask, mask, encoder_oracle(mask, False), ATTN_NAMES)


class EmbedDense(nn.Module):
    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(VOCAB, DIM)(tokens)
        h = nn.relu(nn.Dense(HIDDEN, name="Dense_0")(x))
        return nn.Dense(3, name="Dense_1")(h)


def test_embedding_lookup_any_token_equals_graph_walk():
    model = EmbedDense()
    tokens = jnp.zeros((1, SEQ), jnp.int32)
    params = init(model, tokens)["params"]
    prunable = r"kernel$|embedding$"
    mask = random_masks(
        params, 0.3, 6, prunable=lambda name, w: name.endswith(("kernel", "embedding"))
    )
    g = Graph()
    inputs = [("tok", t) for t in range(SEQ)]
    outputs = []
    emb = np.asarray(mask["Embed_0"]["embedding"])
    for t in range(SEQ):
        e = [("e", t, d) for d in range(DIM)]
        for r, d in zip(*np.nonzero(emb), strict=True):  # any token may select row r
            g.edge(("tok", t), e[d], ("Embed_0/embedding", (int(r), int(d))))
        hidden = [("h", t, k) for k in range(HIDDEN)]
        out = [("o", t, k) for k in range(3)]
        g.dense(e, hidden, mask["Dense_0"]["kernel"], "Dense_0/kernel")
        g.dense(hidden, out, mask["Dense_1"]["kernel"], "Dense_1/kernel")
        outputs += out
    effective = g.effective(inputs, outputs)
    emask = effective_mask(apply_of(model), params, mask, tokens, prunable=prunable)
    assert len(effective) < kept(mask) + int(emb.sum())
    assert_matches(
        emask, mask, effective, ["Embed_0/embedding", "Dense_0/kernel", "Dense_1/kernel"]
    )


# ---------------------------------------------------------------------------------------------
# Errors, outputs, zoo models.


def test_unsupported_primitive_is_named():
    params = {"Dense_0": {"kernel": np.ones((3, 2))}}

    def fn(p, x):
        h = jax.pure_callback(np.sin, jax.ShapeDtypeStruct(x.shape, x.dtype), x)
        return h @ p["Dense_0"]["kernel"]

    mask = jax.tree.map(lambda w: np.ones(w.shape, bool), params)
    with pytest.raises(NotImplementedError, match="pure_callback"):
        effective_mask(fn, params, mask, jnp.ones((1, 3)))


def test_data_dependent_while_loop_is_refused():
    params = {"w": {"kernel": np.ones((3, 3))}}

    def fn(p, x):
        return jax.lax.while_loop(lambda h: h.sum() < 10.0, lambda h: h @ p["w"]["kernel"], x)

    mask = jax.tree.map(lambda w: np.ones(w.shape, bool), params)
    with pytest.raises(NotImplementedError, match="while"):
        effective_mask(fn, params, mask, jnp.ones((1, 3)))


def test_pytree_outputs_and_static_loops():
    params = {"a": {"kernel": np.ones((4, 4))}, "b": {"kernel": np.ones((4, 2))}}

    def fn(p, x):
        h = jax.lax.fori_loop(0, 3, lambda i, h: h @ p["a"]["kernel"], x)  # a scan
        k = jax.lax.while_loop(  # a while loop whose trip count is a constant
            lambda c: c[0] < 2, lambda c: (c[0] + 1, c[1] @ p["a"]["kernel"]), (0, x)
        )[1]
        return {"logits": (h + k) @ p["b"]["kernel"], "features": h}

    mask = random_masks(params, 0.4, 1)
    emask = effective_mask(fn, params, mask, jnp.ones((1, 4)))
    a, b = mask["a"]["kernel"], mask["b"]["kernel"]
    g = Graph()
    g.dense([("x", i) for i in range(4)], [("h1", i) for i in range(4)], a, "a/kernel")
    g.dense([("h1", i) for i in range(4)], [("h2", i) for i in range(4)], a, "a/kernel")
    g.dense([("h2", i) for i in range(4)], [("h", i) for i in range(4)], a, "a/kernel")
    g.dense([("s", i) for i in range(4)], [("o", i) for i in range(2)], b, "b/kernel")
    g.dense([("h1", i) for i in range(4)], [("k", i) for i in range(4)], a, "a/kernel")
    g.identity([("h", i) for i in range(4)], [("s", i) for i in range(4)])
    g.identity([("k", i) for i in range(4)], [("s", i) for i in range(4)])
    outputs = [("o", i) for i in range(2)] + [("h", i) for i in range(4)]
    keys = g.effective([("x", i) for i in range(4)], outputs)
    effective = {(name, index) for name, index in keys}
    assert_matches(emask, mask, effective, ["a/kernel", "b/kernel"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_input_dependent_dynamic_slice_may_start_anywhere(seed):
    params, mask = small_params(seed, a=(4, 6), b=(3, 2))

    def fn(p, x):
        h = x @ p["a"]["kernel"]
        start = jnp.argmax(x[0])  # an offset computed from the input
        return jax.lax.dynamic_slice(h, (0, start), (1, 3)) @ p["b"]["kernel"]

    g = Graph()
    g.dense(vec("x", 4), vec("h", 6), mask["a"]["kernel"], "a/kernel")
    for i, o in itertools.product(range(4), range(3)):
        g.edge(("x", i), ("s", o))  # through the offset
    for o, u in itertools.product(range(3), range(4)):  # starts 0..3: s[o] may be h[o + u]
        g.edge(("h", o + u), ("s", o))
    g.dense(vec("s", 3), vec("o", 2), mask["b"]["kernel"], "b/kernel")
    emask = effective_mask(fn, params, mask, jnp.ones((1, 4)))
    assert_matches(emask, mask, g.effective(vec("x", 4), vec("o", 2)), ["a/kernel", "b/kernel"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_constant_gather_scatter_and_learned_token(seed):
    params, mask = small_params(seed, a=(3, 6), b=(6, 2), c=(4, 2))
    params["token"] = np.zeros((1, 4), np.float32)
    mask["token"] = np.ones((1, 4), bool)

    def fn(p, x):
        h = x @ p["a"]["kernel"]
        g = h[:, jnp.array([4, 0, 4])]  # g0 <- h4, g1 <- h0, g2 <- h4
        u = jnp.zeros((1, 6)).at[:, jnp.array([1, 5])].set(g[:, :2])  # u1 <- g0, u5 <- g1
        tokens = jnp.concatenate([p["token"], g[:, 2:3].repeat(4, axis=1)], axis=0)  # (2, 4)
        return u @ p["b"]["kernel"], tokens @ p["c"]["kernel"]

    g = Graph()
    g.dense(vec("x", 3), vec("h", 6), mask["a"]["kernel"], "a/kernel")
    g.identity([("h", 4), ("h", 0), ("h", 4)], vec("g", 3))
    g.identity([("g", 0), ("g", 1)], [("u", 1), ("u", 5)])
    g.dense(vec("u", 6), vec("o", 2), mask["b"]["kernel"], "b/kernel")
    g.identity([("g", 2)] * 4, vec("t", 4))  # row 1 of tokens; row 0 is a params leaf
    g.dense(vec("t", 4), vec("z", 2), mask["c"]["kernel"], "c/kernel")
    effective = g.effective(vec("x", 3), vec("o", 2) + vec("z", 2))
    emask = effective_mask(fn, params, mask, jnp.ones((1, 3)), prunable="kernel")
    assert_matches(emask, mask, effective, ["a/kernel", "b/kernel", "c/kernel"])
    assert np.asarray(emask["token"]).all()  # not prunable: keeps its mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cond_constant_index_takes_its_branch_input_index_takes_the_union(seed):
    params, mask = small_params(seed, a=(3, 4), b=(4, 3), c=(4, 3))

    def fn(p, x):
        h = x @ p["a"]["kernel"]
        first = lambda v: v @ p["b"]["kernel"]  # noqa: E731
        second = lambda v: v[:, ::-1] @ p["c"]["kernel"]  # noqa: E731
        fixed = jax.lax.cond(jnp.arange(3).sum() > 10, first, second, h)  # always `second`
        chosen = jax.lax.cond(x.sum() > 0, first, second, h)  # either
        return fixed, chosen

    g = Graph()
    g.dense(vec("x", 3), vec("h", 4), mask["a"]["kernel"], "a/kernel")
    g.dense(vec("h", 4)[::-1], vec("f", 3), mask["c"]["kernel"], "c/kernel")
    g.dense(vec("h", 4), vec("k", 3), mask["b"]["kernel"], "b/kernel")
    g.dense(vec("h", 4)[::-1], vec("k", 3), mask["c"]["kernel"], "c/kernel")
    for i, j in itertools.product(range(3), range(3)):
        g.edge(("x", i), ("k", j))  # through the input-dependent branch index
    effective = g.effective(vec("x", 3), vec("f", 3) + vec("k", 3))
    emask = effective_mask(fn, params, mask, jnp.ones((1, 3)))
    assert_matches(emask, mask, effective, ["a/kernel", "b/kernel", "c/kernel"])
    only_fixed = effective_mask(lambda p, x: fn(p, x)[0], params, mask, jnp.ones((1, 3)))
    assert not np.asarray(only_fixed["b"]["kernel"]).any()


def test_same_masks_under_jit():
    params = {"a": {"kernel": np.ones((4, 4))}, "b": {"kernel": np.ones((4, 2))}}

    def fn(p, x):
        h = jax.lax.while_loop(  # needs its constant condition concrete, even under jit
            lambda c: c[0] < 2, lambda c: (c[0] + 1, c[1] @ p["a"]["kernel"]), (0, x)
        )[1]
        return nn.LayerNorm().apply({"params": {"scale": jnp.ones(4), "bias": jnp.zeros(4)}}, h)

    mask = random_masks(params, 0.4, 3)
    x = jnp.ones((1, 4))
    eager = effective_mask(fn, params, mask, x)
    jitted = jax.jit(lambda m: effective_mask(fn, params, m, x))(mask)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.asarray(eager["b"]["kernel"]).any()  # b is unused


ZOO = [
    ("lenet300", {"width": 0.1}, (1, 28, 28, 1), 0.05),
    ("lenet5", {"width": 0.2}, (1, 28, 28, 1), 0.1),
    ("vgg11", {"width": 0.0625}, (1, 32, 32, 3), 0.1),
    ("resnet8", {"width": 0.25}, (1, 8, 8, 3), 0.15),
    ("wrn10_1", {"width": 0.25}, (1, 8, 8, 3), 0.15),
]


@pytest.mark.parametrize(("name", "kwargs", "shape", "density"), ZOO)
def test_zoo_normal_apply_equals_linear_apply(name, kwargs, shape, density):
    model = get_model(name, num_classes=4, **kwargs)
    linear = model.clone(linear=True)
    x = jnp.ones(shape)
    variables = init(model, x)
    params = variables["params"]
    others = {k: v for k, v in variables.items() if k != "params"}
    mask = random_masks(params, density, 0)

    def normal_fn(p, inputs):
        return model.apply({"params": p, **others}, inputs, train=False)

    def train_fn(p, inputs):  # BatchNorm with batch statistics; only the logits are outputs
        return model.apply({"params": p, **others}, inputs, train=True, mutable=list(others))[0]

    lmask = effective_mask(lambda p, inputs: linear.apply({"params": p}, inputs), params, mask, x)
    assert kept(lmask) < kept(mask)  # something is disconnected
    for fn in (normal_fn, train_fn):
        emask = effective_mask(fn, params, mask, x)
        for (n1, a), (n2, b) in zip(named_leaves(emask), named_leaves(lmask), strict=True):
            assert n1 == n2
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=n1)
    assert layer_order(normal_fn, params, x) == layer_order(
        lambda p, inputs: linear.apply({"params": p}, inputs), params, x
    )


# ---------------------------------------------------------------------------------------------
# layer_order on the same models.


def test_layer_order_through_scan_remat_and_attention():
    model = ScanMLP(width=4, depth=3, n_out=2, norm=True)
    params = init(model, jnp.ones((1, 3)))["params"]
    order = layer_order(apply_of(model), params, jnp.ones((1, 3)))
    assert order == SCAN_NAMES

    class Interleaved(nn.Module):
        @nn.compact
        def __call__(self, x):
            a = nn.Dense(4, name="z_first")
            b = nn.scan(
                ScanBody, variable_axes={"params": 0}, split_rngs={"params": True}, length=2
            )(4, True, name="a_scanned")
            c = nn.remat(nn.Dense)(4, name="m_remat")
            h, _ = b(a(x), None)
            return nn.Dense(2, name="b_last")(c(h))

    model = Interleaved()
    params = init(model, jnp.ones((1, 3)))["params"]
    order = layer_order(apply_of(model), params, jnp.ones((1, 3)))
    assert order == [
        "z_first/kernel",
        "a_scanned/Dense_0/kernel",
        "m_remat/kernel",
        "b_last/kernel",
    ]
    model = EncoderLayer()
    params = init(model, jnp.ones((1, SEQ, DIM)))["params"]
    order = layer_order(apply_of(model), params, jnp.ones((1, SEQ, DIM)))
    assert order[-2:] == ["mlp_in/kernel", "mlp_out/kernel"]
    assert order[-3] == "attn/out/kernel"
