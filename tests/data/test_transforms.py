import pytest
import torch
import torch.nn.functional as F

from hilovit.data import (
    AugmentConfig,
    BatchAugment,
    MixParams,
    Mixup,
    Normalize,
    match_channels,
    smooth_one_hot,
    soft_target_cross_entropy,
    to_float_batch,
)


# ----------------------------------------------------------------------------- basic transforms
def test_to_float_batch():
    x = torch.tensor([[0, 51, 255]], dtype=torch.uint8)
    y = to_float_batch(x)
    assert y.dtype == torch.float32 and torch.allclose(y, torch.tensor([[0.0, 0.2, 1.0]]))
    assert to_float_batch(torch.rand(2), torch.float64).dtype == torch.float64
    with pytest.raises(TypeError, match="int32"):
        to_float_batch(torch.zeros(2, dtype=torch.int32))


def test_match_channels():
    x = torch.rand(2, 1, 4, 4)
    y = match_channels(x, 3)
    assert y.shape == (2, 3, 4, 4) and all(torch.equal(y[:, c], x[:, 0]) for c in range(3))
    assert match_channels(x, 1) is x
    rgb = torch.rand(2, 3, 4, 4)
    grey = match_channels(rgb, 1)
    assert torch.allclose(grey[:, 0], 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2])
    with pytest.raises(ValueError, match="3 channels into in_chans=2"):
        match_channels(rgb, 2)
    with pytest.raises(ValueError, match="4 channels"):
        match_channels(torch.rand(1, 4, 2, 2), 3)


def test_normalize():
    norm = Normalize((0.5, 0.25, 0.0), (0.5, 0.25, 1.0))
    x = torch.rand(2, 3, 4, 4)
    y = norm(x)
    assert torch.allclose(y[:, 0], (x[:, 0] - 0.5) / 0.5) and torch.allclose(y[:, 2], x[:, 2])
    assert Normalize((0.286,), (0.353,))(torch.rand(1, 3, 2, 2)).shape == (1, 3, 2, 2)  # length 1 broadcasts
    assert not Normalize((0.5,), (0.5,)).state_dict()
    with pytest.raises(ValueError, match=r"expected \(B, 3, H, W\)"):
        norm(torch.rand(1, 2, 4, 4))
    with pytest.raises(ValueError, match="positive"):
        Normalize((0.5,), (0.0,))


# ----------------------------------------------------------------------------- BatchAugment
def test_identity_when_off():
    aug = BatchAugment(AugmentConfig.off()).train()
    x = torch.rand(3, 1, 28, 28)
    assert aug(x) is x
    aug = BatchAugment(AugmentConfig.off(img_size=28)).train()
    assert torch.equal(aug(x), x)


@pytest.mark.parametrize("chans", [1, 3])
def test_all_on_shapes_and_range(chans):
    torch.manual_seed(0)
    cfg = AugmentConfig(img_size=32, rand_augment=True, random_erasing=0.5)
    aug = BatchAugment(cfg).train()
    x = torch.rand(6, chans, 28, 28)
    y = aug(x)
    assert y.shape == (6, chans, 32, 32) and y.dtype == x.dtype
    assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
    torch.manual_seed(1)
    a = aug(x)
    torch.manual_seed(1)
    assert torch.equal(a, aug(x))  # the global seed fixes the draws


def test_eval_is_deterministic_resize():
    aug = BatchAugment(AugmentConfig(img_size=14, rand_augment=True, random_erasing=1.0)).eval()
    x = torch.rand(2, 1, 28, 28)
    ref = F.interpolate(x, size=(14, 14), mode="bilinear", align_corners=False, antialias=True)
    assert torch.equal(aug(x), ref) and torch.equal(aug(x), aug(x))
    same = BatchAugment(AugmentConfig(img_size=None)).eval()
    assert same(x) is x


def test_random_crop_and_flip_change_images():
    torch.manual_seed(0)
    x = torch.rand(8, 3, 16, 16)
    y = BatchAugment(img_size=16, random_resized_crop=True, hflip=False).train()(x)
    assert y.shape == x.shape and not torch.allclose(y, x)
    torch.manual_seed(0)
    y = BatchAugment(AugmentConfig.off(), hflip=True).train()(x)
    flipped = [torch.equal(y[i], x[i].flip(-1)) for i in range(8)]
    kept = [torch.equal(y[i], x[i]) for i in range(8)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped)


def test_rand_augment_one_channel():
    torch.manual_seed(0)
    aug = BatchAugment(AugmentConfig.off(), rand_augment=True, rand_augment_n=3, rand_augment_m=15).train()
    x = torch.rand(4, 1, 28, 28)
    y = aug(x)
    assert y.shape == (4, 1, 28, 28) and torch.isfinite(y).all() and 0 <= y.min() and y.max() <= 1
    with pytest.raises(ValueError, match="1 or 3 channels"):
        aug(torch.rand(2, 2, 8, 8))


def test_random_erasing_changes_pixels_at_p1():
    torch.manual_seed(0)
    x = torch.ones(5, 1, 20, 20)
    y = BatchAugment(AugmentConfig.off(), random_erasing=1.0, erasing_mode="const", erasing_value=0.0).train()(x)
    erased = (y == 0).flatten(1).sum(1)
    assert (erased > 0).all() and (erased < 400).all()  # every image, never the whole image
    z = torch.zeros(5, 3, 20, 20)
    y = BatchAugment(AugmentConfig.off(), random_erasing=1.0).train()(z)  # 'pixel': noise on black
    assert ((y != 0).flatten(1).sum(1) > 0).all() and y.max() <= 1


def test_config_errors():
    with pytest.raises(ValueError, match="random_erasing=1.5"):
        AugmentConfig(random_erasing=1.5)
    with pytest.raises(ValueError, match="scale"):
        AugmentConfig(scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="rand_augment_m=30"):
        AugmentConfig(rand_augment_m=30)
    with pytest.raises(TypeError, match="unknown option"):
        BatchAugment(vflip=True)
    with pytest.raises(TypeError, match="float tensor"):
        BatchAugment().train()(torch.zeros(1, 1, 4, 4, dtype=torch.uint8))


# ----------------------------------------------------------------------------- Mixup / CutMix
def test_smooth_one_hot():
    y = smooth_one_hot(torch.tensor([2, 0]), 4, 0.1)
    assert torch.allclose(y.sum(1), torch.ones(2))
    assert y[0].tolist() == pytest.approx([0.025, 0.025, 0.925, 0.025])
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        smooth_one_hot(torch.tensor([4]), 4)


def test_soft_target_cross_entropy_matches_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(6, 5, dtype=torch.float64)
    t = torch.randint(0, 5, (6,))
    assert torch.allclose(soft_target_cross_entropy(logits, F.one_hot(t, 5).double()), F.cross_entropy(logits, t))
    smooth = smooth_one_hot(t, 5, 0.1, dtype=torch.float64)
    assert torch.allclose(soft_target_cross_entropy(logits, smooth),
                          F.cross_entropy(logits, t, label_smoothing=0.1))
    per = soft_target_cross_entropy(logits, smooth, reduction="none")
    assert per.shape == (6,)
    with pytest.raises(ValueError, match="reduction"):
        soft_target_cross_entropy(logits, smooth, reduction="max")


def test_mixup_hand_computation():
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 3])
    mix = Mixup(mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.1, num_classes=5)
    out, soft = mix(x, t, generator=torch.Generator().manual_seed(7))
    p = mix.last
    assert p.mode == "mixup" and 0 < p.lam < 1
    assert torch.allclose(out, p.lam * x + (1 - p.lam) * x.flip(0))
    one = torch.full((4, 5), 0.02, dtype=torch.float64)
    one[torch.arange(4), t] = 0.92
    assert torch.allclose(soft, p.lam * one + (1 - p.lam) * one.flip(0))
    assert torch.allclose(soft.sum(1), torch.ones(4, dtype=torch.float64))
    # the same generator seed gives the same draw; another seed another one
    out2, _ = mix(x, t, generator=torch.Generator().manual_seed(7))
    assert torch.equal(out, out2) and mix.last == p
    mix(x, t, generator=torch.Generator().manual_seed(8))
    assert mix.last.lam != p.lam


def test_cutmix_box_matches_lambda():
    torch.manual_seed(3)
    x = torch.rand(6, 3, 20, 24)
    t = torch.arange(6) % 4
    mix = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, num_classes=4)
    for seed in range(5):
        out, soft = mix(x, t, generator=torch.Generator().manual_seed(seed))
        p = mix.last
        y0, y1, x0, x1 = p.box
        area = (y1 - y0) * (x1 - x0)
        assert p.mode == "cutmix" and p.lam == pytest.approx(1 - area / (20 * 24))
        inside = torch.zeros(20, 24, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert torch.equal(out[:, :, inside], x.flip(0)[:, :, inside])
        assert torch.equal(out[:, :, ~inside], x[:, :, ~inside])
        assert torch.allclose(soft.sum(1), torch.ones(6))
        assert torch.allclose(soft[0, t[0]], torch.tensor((1 - 0.1 + 0.025) * p.lam + 0.025 * (1 - p.lam)))


def test_mixup_switch_and_global_seed():
    x, t = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    mix = Mixup(num_classes=4, switch_prob=0.5)
    modes = set()
    for s in range(20):
        torch.manual_seed(s)
        mix(x, t)
        modes.add(mix.last.mode)
    assert modes == {"mixup", "cutmix"}
    torch.manual_seed(0)
    a = mix(x, t)[0]
    torch.manual_seed(0)
    assert torch.equal(a, mix(x, t)[0])


@pytest.mark.parametrize("kwargs", [dict(prob=0.0), dict(mixup_alpha=0.0, cutmix_alpha=0.0)])
def test_mixup_off_gives_smoothed_one_hot(kwargs):
    x, t = torch.rand(3, 1, 8, 8), torch.tensor([2, 0, 1])
    mix = Mixup(label_smoothing=0.1, num_classes=3, **kwargs)
    out, soft = mix(x, t)
    assert torch.equal(out, x) and mix.last == MixParams("none", 1.0)
    assert torch.allclose(soft, smooth_one_hot(t, 3, 0.1))


def test_mixup_errors():
    with pytest.raises(ValueError, match="prob=1.5"):
        Mixup(prob=1.5, num_classes=3)
    with pytest.raises(ValueError, match="num_classes=0"):
        Mixup(num_classes=0)
    mix = Mixup(num_classes=3)
    with pytest.raises(TypeError, match="float tensor"):
        mix(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="targets"):
        mix(torch.rand(2, 1, 4, 4), torch.tensor([0, 1, 2]))
