"""AnchorGenerator against the official RetinaNet anchors (``anchors.{l}``, exactly) and a scalar loop."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from hilovit.ops.anchors import AnchorGenerator

FIXTURE = "retinanet_litv2_e16_70x102_61x90_a0.9_ws0042"
RETINA = dict(strides=[8, 16, 32, 64, 128], ratios=[0.5, 1.0, 2.0], octave_base_scale=4, scales_per_octave=3)


def scalar_anchors(h, w, stride, base_size, ratios, scales, center_offset=0.0):
    """Row-major grid points (y outer, x inner), then ratio-major / scale-minor base anchors."""
    out = []
    for y in range(h):
        for x in range(w):
            for r in ratios:
                for s in scales:
                    hr = math.sqrt(r)
                    aw, ah = base_size * (1 / hr) * s, base_size * hr * s
                    cx = x * stride + center_offset * base_size
                    cy = y * stride + center_offset * base_size
                    out.append([cx - aw / 2, cy - ah / 2, cx + aw / 2, cy + ah / 2])
    return torch.tensor(out, dtype=torch.float64)


def test_official_retinanet_anchors_exactly(fixtures_dir):
    io = load_file(str(fixtures_dir / f"{FIXTURE}.io.safetensors"))
    meta = json.loads((fixtures_dir / f"{FIXTURE}.json").read_text())
    gen = AnchorGenerator(**RETINA)
    sizes = [tuple(io[f"cls_score.{lvl}"].shape[-2:]) for lvl in range(5)]
    anchors = gen.grid_priors(sizes)
    for lvl in range(5):
        assert anchors[lvl].dtype == torch.float32
        assert torch.equal(anchors[lvl], io[f"anchors.{lvl}"]), lvl
        assert anchors[lvl].shape[0] == meta["derived"]["anchors"]["per_level_count"][lvl]
    assert torch.equal(torch.stack(gen.base_anchors), torch.tensor(meta["derived"]["anchors"]["base_anchors"]))


@pytest.mark.parametrize("center_offset", [0.0, 0.5])
def test_grid_matches_the_scalar_loop(center_offset):
    gen = AnchorGenerator(strides=[4, 8], ratios=[0.5, 1.0, 2.0], scales=[8.0, 10.0], center_offset=center_offset)
    got = gen.grid_priors([(3, 5), (2, 3)])
    for lvl, (h, w), stride in ((0, (3, 5), 4), (1, (2, 3), 8)):
        ref = scalar_anchors(h, w, stride, stride, [0.5, 1.0, 2.0], [8.0, 10.0], center_offset)
        torch.testing.assert_close(got[lvl].double(), ref, rtol=0, atol=1e-4)
    assert gen.num_base_anchors == [6, 6]


def test_valid_flags_follow_each_images_pad_shape():
    gen = AnchorGenerator(**RETINA)
    sizes = [(12, 16), (6, 8), (3, 4), (2, 2), (1, 1)]
    flags = gen.valid_flags(sizes, (64, 96))  # the 61 x 90 image padded to 64 x 96 in a 96 x 128 batch
    for lvl, ((h, w), f) in enumerate(zip(sizes, flags)):
        stride = 8 * 2**lvl
        vh, vw = min(math.ceil(64 / stride), h), min(math.ceil(96 / stride), w)
        ref = [(y < vh and x < vw) for y in range(h) for x in range(w) for _ in range(9)]
        assert f.tolist() == ref, lvl


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="strides must hold positive ints"):
        AnchorGenerator(strides=[8, 0], ratios=[1.0], scales=[1.0])
    with pytest.raises(ValueError, match="needs scales or octave_base_scale"):
        AnchorGenerator(strides=[8], ratios=[1.0])
    with pytest.raises(ValueError, match="either scales or octave_base_scale"):
        AnchorGenerator(strides=[8], ratios=[1.0], scales=[1.0], octave_base_scale=4, scales_per_octave=3)
    with pytest.raises(ValueError, match="ratios must hold positive numbers"):
        AnchorGenerator(strides=[8], ratios=[0.0], scales=[1.0])
    with pytest.raises(ValueError, match="base_sizes .* one entry per stride"):
        AnchorGenerator(strides=[8, 16], ratios=[1.0], scales=[1.0], base_sizes=[8])
    with pytest.raises(ValueError, match="featmap_sizes must list 5"):
        AnchorGenerator(**RETINA).grid_priors([(2, 2)])
