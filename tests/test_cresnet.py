"""cResNet / ImageNet ResNet / DeepLab (jaxcomp.models.cresnet) and the FLOP counter (jaxcomp.metrics.flops).

Paper-sized networks are only traced (``jax.eval_shape`` / ``jax.make_jaxpr``: no parameters are
allocated, nothing compiled); the networks that actually run are tiny (``cresnet-1-1-1`` etc. at
widths 1/8-1/4).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp.metrics.flops import count_flops, count_macs, flops_by_layer, jaxpr_flops, xla_flops
from jaxcomp.models import count_params
from jaxcomp.models.cresnet import PAPER_NETWORKS, PAPER_PAIRS, DeepLab, ImageNetResNet, understanding_network

KEY = jax.random.PRNGKey(0)
DN = ("NHWC", "HWIO", "NHWC")


def _abstract(model, shape, **kwargs):
    """Abstract variables and input of ``model`` for an input of ``shape`` (nothing allocated)."""
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.eval_shape(lambda x: model.init(KEY, x, **kwargs), x), x


def _variables(model, x):
    """He-normal kernels, unit BN scales and variances, zero biases and means, made on the host from the
    abstract init: compiling ``model.init`` (its random number generation) costs several seconds a shape
    on CPU, ``model.apply`` a fraction of one."""
    rng = np.random.default_rng(0)

    def fill(path, s):
        name = path[-1].key
        if name == "kernel":
            return jnp.asarray(rng.normal(size=s.shape) * np.sqrt(2 / np.prod(s.shape[:-1])), jnp.float32)
        return (jnp.ones if name in ("scale", "var") else jnp.zeros)(s.shape, s.dtype)

    return jax.tree_util.tree_map_with_path(fill, _abstract(model, x.shape)[0])


def _run(model, x):
    """Apply (eval mode, compiled) with :func:`_variables`."""
    return jax.jit(model.apply)(_variables(model, x), x)


def _features_shape(model, shape):
    variables, x = _abstract(model, shape)
    return jax.eval_shape(lambda v, x: model.apply(v, x, method="features"), variables, x).shape


# ---------------------------------------------------------------------------------------------- models


@pytest.mark.parametrize("shape", [(2, 8, 8, 32), (2, 8, 8, 64), (2, 12, 12, 32)])
def test_cresnet_on_latents(shape):
    model = understanding_network("cresnet-1-1-1", 7, width=0.125)
    logits = _run(model, jax.random.normal(KEY, shape))
    assert logits.shape == (2, 7) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))
    # conv3_x at stride 1 on the latent, conv4_x and conv5_x halve it: 1/4 of the latent (1/32 of the image)
    h = shape[1]
    assert _features_shape(model, shape) == (2, -(-h // 4), -(-h // 4), 8 * 8)


def test_rgb_resnet_on_images():
    model = understanding_network("resnet-1-1-1-1", 5, width=0.125)
    x = jax.random.normal(KEY, (2, 64, 64, 3))
    variables = _variables(model, x)
    logits = jax.jit(model.apply)(variables, x)
    assert logits.shape == (2, 5) and np.all(np.isfinite(logits))
    # training mode: batch statistics, and the running averages move towards them
    train_logits, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
    assert train_logits.shape == (2, 5) and not np.allclose(train_logits, logits)
    assert not np.allclose(updates["batch_stats"]["root_bn"]["mean"], 0)
    assert _features_shape(model, (2, 64, 64, 3)) == (2, 2, 2, 64)  # output stride 32


def test_paper_networks_shapes():
    """The paper's pairs see a 224x224 image / its 28x28xC latent and end on the same 7x7x2048 map."""
    for rgb, comp in PAPER_PAIRS:
        assert _features_shape(understanding_network(rgb, 1000), (1, 224, 224, 3)) == (1, 7, 7, 2048)
        assert _features_shape(understanding_network(comp, 1000), (1, 28, 28, 32)) == (1, 7, 7, 2048)


def test_cresnet_has_no_root_and_no_conv2():
    comp, _ = _abstract(understanding_network("cresnet-51", 1000, width=0.125), (1, 28, 28, 32))
    rgb, _ = _abstract(understanding_network("resnet-50", 1000, width=0.125), (1, 224, 224, 3))
    comp_names, rgb_names = set(comp["params"]), set(rgb["params"])
    assert not any(n.startswith(("root", "conv2_")) for n in comp_names), sorted(comp_names)
    assert {f"conv3_block{i}" for i in range(4)} | {f"conv4_block{i}" for i in range(10)} | {
        f"conv5_block{i}" for i in range(3)} | {"head"} == comp_names
    assert {"root_conv", "root_bn", "conv2_block0", "conv2_block2", "conv5_block2", "head"} <= rgb_names
    assert "conv2_block3" not in rgb_names and "conv4_block6" not in rgb_names
    # the latent's C channels feed conv3_x's first block directly, at stride 1
    assert comp["params"]["conv3_block0"]["conv1"]["kernel"].shape == (1, 1, 32, 16)
    assert comp["params"]["conv3_block0"]["proj"]["kernel"].shape == (1, 1, 32, 64)
    assert "conv3_block0" in comp["batch_stats"]


def test_parameter_counts_match_torchvision():
    """torchvision's resnet50 / resnet18 (1000 classes): pins blocks, widths, projections and the head."""
    assert count_params(understanding_network("resnet-50", 1000), (1, 224, 224, 3)) == 25_557_032
    assert count_params(understanding_network("resnet-18", 1000), (1, 224, 224, 3)) == 11_689_512
    assert count_params(understanding_network("resnet-34", 1000), (1, 224, 224, 3)) == 21_797_672


def test_understanding_network_names():
    assert understanding_network("cresnet-51", 10).stage_sizes == (4, 10, 3)
    assert understanding_network("cResNet-72", 10).stage_sizes == (4, 17, 3)
    assert understanding_network("resnet-71", 10).stage_sizes == (3, 4, 13, 3)
    m = understanding_network("cresnet-2-1-3", 10, width=0.25)
    assert (m.stage_sizes, m.bottleneck, m.compressed, m.base_width) == ((2, 1, 3), False, True, 16)
    m = understanding_network("resnet-1-2-1-1", 10, bottleneck=True)
    assert (m.stage_sizes, m.bottleneck, m.compressed) == ((1, 2, 1, 1), True, False)
    seg = understanding_network("cresnet-39", 21, task="segmentation", width=0.5, rates=(6, 12, 18, 24))
    assert isinstance(seg, DeepLab) and seg.compressed and seg.rates == (6, 12, 18, 24)
    assert (seg.base_width, seg.aspp_features) == (32, 128)
    assert isinstance(understanding_network("resnet-50", 10), ImageNetResNet)
    for bad in ("resnet-49", "resnet50", "cresnet-1-1", "cresnet-1-0-1", "vgg-16"):
        with pytest.raises(ValueError):
            understanding_network(bad, 10)
    with pytest.raises(ValueError, match="task"):
        understanding_network("resnet-50", 10, task="detection")
    with pytest.raises(ValueError, match="width"):
        understanding_network("resnet-50", 10, width=0.001)
    with pytest.raises(ValueError, match="stage_sizes"):  # a cResNet lists 3 stages, not 4
        _abstract(ImageNetResNet((3, 4, 6, 3), compressed=True), (1, 8, 8, 4))


@pytest.mark.parametrize("shape", [(2, 8, 8, 32), (2, 64, 64, 3)])
def test_segmentation_full_resolution(shape):
    compressed = shape[-1] != 3
    name = "cresnet-1-1-1" if compressed else "resnet-1-1-1-1"
    model = understanding_network(name, 5, task="segmentation", width=0.125)
    out = _run(model, jax.random.normal(KEY, shape))
    assert out.shape == (2, 64, 64, 5) and np.all(np.isfinite(out))
    # the logits are made at output stride 8 (8x8 here) and upsampled, not predicted at 64x64
    variables, x = _abstract(model, shape)
    jaxpr = jax.make_jaxpr(model.apply)(variables, x)
    convs = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "conv_general_dilated"]
    assert convs[-1].outvars[0].aval.shape == (2, 8, 8, 5)


def test_dilated_backbone_output_stride_8():
    for name, shape in (("cresnet-1-1-1", (2, 8, 8, 32)), ("resnet-1-1-1-1", (2, 64, 64, 3)),
                        ("cresnet-51", (1, 28, 28, 32)), ("resnet-50", (1, 224, 224, 3))):
        m = understanding_network(name, 5, width=0.125)
        assert _features_shape(m.clone(dilate=True), shape)[1:3] == (shape[1] // (1 if m.compressed else 8),) * 2
    # conv4_x at dilation 2, conv5_x at 4 (their 3x3 convs), the ASPP at its rates
    model = understanding_network("cresnet-1-1-2", 5, task="segmentation", width=0.125, rates=(1, 3, 5))
    variables, x = _abstract(model, (2, 8, 8, 32))
    dil = [e.params["rhs_dilation"][0] for e in jax.make_jaxpr(model.apply)(variables, x).jaxpr.eqns
           if e.primitive.name == "conv_general_dilated" and e.invars[1].aval.shape[0] == 3]
    assert dil == [1, 1, 2, 2, 4, 4, 4, 4, 1, 3, 5]


# ----------------------------------------------------------------------------------------------- FLOPs


def _small_net(x, w1, w2, w3):
    """conv 3x3 3->8 (stride 1, SAME) - ReLU - conv 3x3/2 8->16 (SAME) - ReLU - mean pool - dense 16->10."""
    y = jax.nn.relu(jax.lax.conv_general_dilated(x, w1, (1, 1), "SAME", dimension_numbers=DN))
    y = jax.nn.relu(jax.lax.conv_general_dilated(y, w2, (2, 2), "SAME", dimension_numbers=DN))
    return y.mean((1, 2)) @ w3


SMALL_ARGS = [jax.ShapeDtypeStruct(s, jnp.float32) for s in [(2, 16, 16, 3), (3, 3, 3, 8), (3, 3, 8, 16), (16, 10)]]


def test_count_flops_by_hand():
    conv1 = 2 * (2 * 16 * 16 * 8) * (3 * 3 * 3)  # 2 x output elements x (taps x C_in) = 221,184
    conv2 = 2 * (2 * 8 * 8 * 16) * (3 * 3 * 8)  # stride 2: 8x8 outputs = 294,912
    dense = 2 * 2 * 16 * 10  # batch 2 x K 16 x N 10 = 640
    assert count_flops(_small_net, *SMALL_ARGS) == conv1 + conv2 + dense == 516_736
    assert count_macs(_small_net, *SMALL_ARGS) == 258_368
    # only taps inside the input: 16 SAME -> 46 of 48 taps per row/column; 16 -> 8 at stride 2 pads
    # one column at the end: 23 of 24
    jaxpr = jax.make_jaxpr(_small_net)(*SMALL_ARGS)
    assert jaxpr_flops(jaxpr, count_padding=False) == 2 * 2 * 8 * 46**2 * 3 + 2 * 2 * 16 * 23**2 * 8 + dense


def test_count_flops_grouped_dilated_and_control_flow():
    x = jax.ShapeDtypeStruct((1, 8, 8, 8), jnp.float32)
    grouped = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN,
                                                        feature_group_count=4)
    # 4 groups of 2 -> 2 channels: 64 positions x 8 outputs x 9 taps x 2 inputs
    assert count_flops(grouped, x, jax.ShapeDtypeStruct((3, 3, 2, 8), jnp.float32)) == 2 * 64 * 8 * 9 * 2
    depthwise = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN,
                                                          feature_group_count=8)
    assert count_flops(depthwise, x, jax.ShapeDtypeStruct((5, 5, 1, 8), jnp.float32)) == 2 * 64 * 8 * 25
    atrous = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), ((2, 2), (2, 2)), rhs_dilation=(2, 2),
                                                       dimension_numbers=DN)
    assert count_flops(atrous, x, jax.ShapeDtypeStruct((3, 3, 8, 4), jnp.float32)) == 2 * 64 * 4 * 9 * 8

    m = jax.ShapeDtypeStruct((4, 6), jnp.float32)

    def looped(a, flag):
        a = jax.jit(lambda a: a @ jnp.ones((6, 6)))(a)  # 2*4*6*6 = 288
        a = jax.lax.scan(lambda c, _: (c @ jnp.ones((6, 6)), None), a, None, length=5)[0]  # 5 x 288
        return jax.lax.cond(flag, lambda a: a @ jnp.ones((6, 3)), lambda a: (a @ jnp.ones((6, 6)))[:, :3], a)

    assert count_flops(looped, m, jax.ShapeDtypeStruct((), jnp.bool_)) == 288 + 5 * 288 + 288
    assert count_flops(lambda a, b: jnp.einsum("bij,bjk->bik", a, b), jax.ShapeDtypeStruct((3, 4, 5), jnp.float32),
                       jax.ShapeDtypeStruct((3, 5, 7), jnp.float32)) == 2 * 3 * 4 * 7 * 5


def test_count_flops_agrees_with_xla():
    """XLA's cost analysis counts (a) only the taps inside the input, not the padding, and (b) the
    elementwise ops too (ReLUs, the mean: ~1 FLOP per element each; 8,192 here, 1.7%). So it must be at
    least our padding-free count and exceed it by at most 2 FLOPs per activation element (the two
    ReLU'd maps, 6,144 elements), and be within 10% of the all-taps convention (8% of taps are padding
    on these 16x16 / 8x8 maps)."""
    xla = xla_flops(_small_net, *SMALL_ARGS)
    if np.isnan(xla):
        pytest.skip("the XLA backend reports no FLOP count")
    ours_valid = jaxpr_flops(jax.make_jaxpr(_small_net)(*SMALL_ARGS), count_padding=False)
    activations = 2 * 16 * 16 * 8 + 2 * 8 * 8 * 16
    assert ours_valid <= xla <= ours_valid + 2 * activations, (xla, ours_valid)
    assert xla == pytest.approx(ours_valid, rel=0.03)
    assert xla == pytest.approx(count_flops(_small_net, *SMALL_ARGS), rel=0.10)


def test_resnet50_flops():
    """torchvision: ResNet-50 4.09 GMACs, ResNet-18 1.81 GMACs at 224x224 (traced, not compiled)."""
    for name, gmacs in (("resnet-50", 4.09), ("resnet-18", 1.81)):
        model = understanding_network(name, 1000)
        variables, x = _abstract(model, (1, 224, 224, 3))
        assert count_flops(model.apply, variables, x) == pytest.approx(2 * gmacs * 1e9, rel=0.02), name
    table = flops_by_layer(model.apply, variables, x)
    assert sum(table.values()) == count_flops(model.apply, variables, x)
    assert table["ImageNetResNet/root_conv:conv_general_dilated"] == 2 * 112 * 112 * 64 * 7 * 7 * 3
    assert table["ImageNetResNet/head:dot_general"] == 2 * 512 * 1000
    # the root's max-pool keeps 56x56 (padding 1): conv2_x's first 3x3 conv, 64 -> 64 channels
    assert table["ImageNetResNet/conv2_block0/conv1:conv_general_dilated"] == 2 * 56 * 56 * 64 * 3 * 3 * 64


@pytest.mark.parametrize("bottleneck", [True, False])
def test_residual_block_adds_its_shortcut(bottleneck):
    """With the residual branch's last batch-norm scale at 0 a block is ``relu(shortcut)``: the
    identity when the shape is kept."""
    from flax.core import unfreeze

    from jaxcomp.models.cresnet import ResidualBlock

    block = ResidualBlock(width=4 if bottleneck else 16, bottleneck=bottleneck)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 5, 5, 16)), jnp.float32)

    def fill(path, s):
        name = path[-1].key
        value = {"kernel": 0.1, "scale": 1.0, "var": 1.0}.get(name, 0.0)
        return jnp.full(s.shape, value, s.dtype)

    variables = unfreeze(jax.tree_util.tree_map_with_path(fill, jax.eval_shape(lambda x: block.init(KEY, x, False), x)))
    last = "bn3" if bottleneck else "bn2"
    variables["params"][last]["scale"] = jnp.zeros_like(variables["params"][last]["scale"])
    np.testing.assert_allclose(np.asarray(block.apply(variables, x, False)), np.maximum(np.asarray(x), 0.0), atol=1e-6)


def test_cresnet_cheaper_than_its_rgb_pair():
    """The paper's pairs: cResNet-k on the 28x28xC latent of a 224x224 image costs less than the RGB
    ResNet of about equal depth (the RGB side also pays for decoding, not counted here)."""
    flops = {}
    for name in PAPER_NETWORKS:
        model = understanding_network(name, 1000)
        variables, x = _abstract(model, (1, 28, 28, 32) if model.compressed else (1, 224, 224, 3))
        flops[name] = count_flops(model.apply, variables, x)
    for rgb, comp in PAPER_PAIRS + (("resnet-50", "cresnet-39"),):
        ratio = flops[comp] / flops[rgb]
        print(f"{comp} / {rgb}: {flops[comp] / 1e9:.2f} / {flops[rgb] / 1e9:.2f} GFLOPs = {ratio:.3f}")
        assert ratio < 1
    # cResNet-39 is ResNet-50 less the root block, conv2_x and the stride-2 half of conv3_block0
    assert flops["cresnet-39"] / flops["resnet-50"] == pytest.approx(0.76, abs=0.01)
    assert flops["cresnet-51"] / flops["resnet-50"] > 0.95  # "about equal compute"
