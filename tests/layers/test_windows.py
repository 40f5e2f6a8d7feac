"""hilovit.layers.windows against plain constructions written here: partition / reverse, padding,
the shifted-window mask (the official slice construction, region by region) and the relative
position index (the definition, pair by pair)."""

import itertools

import pytest
import torch

from hilovit.layers.window_attention import _region_mask
from hilovit.layers.windows import (
    pad_to_multiple,
    relative_position_index,
    shifted_window_mask,
    to_2tuple,
    window_partition,
    window_reverse,
)


@pytest.mark.parametrize("B, H, W, window", [(2, 14, 21, 7), (1, 6, 10, (3, 5)), (3, 4, 4, 4), (2, 8, 6, (1, 2))])
def test_partition_is_the_row_major_window_order_and_reverse_inverts_it(B, H, W, window):
    wh, ww = to_2tuple(window)
    x = torch.randn(B, H, W, 5)
    win = window_partition(x, window)
    assert win.shape == (B * (H // wh) * (W // ww), wh, ww, 5)
    k = 0
    for b in range(B):
        for i in range(0, H, wh):  # windows row-major: window row, then window column
            for j in range(0, W, ww):
                assert torch.equal(win[k], x[b, i : i + wh, j : j + ww])
                k += 1
    assert torch.equal(window_reverse(win, window, H, W), x)


def test_partition_refuses_a_map_that_is_not_a_multiple():
    with pytest.raises(ValueError, match="not a multiple"):
        window_partition(torch.randn(1, 7, 8, 2), 4)


@pytest.mark.parametrize("H, W, m", [(5, 7, 4), (8, 8, 4), (1, 9, (2, 3)), (6, 6, (4, 1))])
def test_pad_to_multiple_pads_zeros_bottom_right(H, W, m):
    mh, mw = to_2tuple(m)
    x = torch.randn(2, H, W, 3)
    y, ph, pw = pad_to_multiple(x, m)
    assert (ph, pw) == ((-H) % mh, (-W) % mw)
    assert y.shape == (2, H + ph, W + pw, 3) and y.shape[1] % mh == 0 and y.shape[2] % mw == 0
    assert torch.equal(y[:, :H, :W], x)
    assert y[:, H:].abs().sum() == 0 and y[:, :, W:].abs().sum() == 0
    if ph == pw == 0:
        assert y is x  # no copy when nothing is padded


def plain_shift_mask(H, W, window, shift):
    """The official construction: label the 3 x 3 regions of the map by slices, cut the label map
    into windows, and mask (-100) every pair of tokens of one window with different labels."""
    (wh, ww), (sh, sw) = to_2tuple(window), to_2tuple(shift)
    img = torch.zeros(H, W)
    cnt = 0
    for hs in (slice(0, H - wh), slice(H - wh, H - sh), slice(H - sh, H)):
        for ws in (slice(0, W - ww), slice(W - ww, W - sw), slice(W - sw, W)):
            img[hs, ws] = cnt
            cnt += 1
    masks = []
    for i in range(0, H, wh):
        for j in range(0, W, ww):
            lab = img[i : i + wh, j : j + ww].reshape(-1)
            masks.append(torch.where(lab[:, None] == lab[None, :], 0.0, -100.0))
    return torch.stack(masks)


@pytest.mark.parametrize("H, W, window, shift", [(14, 14, 7, 3), (14, 21, 7, 3), (8, 12, 4, 2), (6, 10, (3, 5), (1, 2)),
                                                 (8, 8, 4, (0, 2)), (7, 7, 7, 3)])
def test_shifted_window_mask_is_the_official_construction(H, W, window, shift):
    ref = plain_shift_mask(H, W, window, shift)
    got = shifted_window_mask(H, W, window, shift)
    torch.testing.assert_close(got, ref, atol=0, rtol=0)
    # the export form builds the same mask by arithmetic
    torch.testing.assert_close(_region_mask(H, W, to_2tuple(window), to_2tuple(shift), None), ref, atol=0, rtol=0)
    # only the windows of the last window row (rows shifted) or column (columns shifted) hold tokens that wrapped
    # around and tokens that did not, so only they mask anything; every token sees itself
    (wh, ww), (sh, sw) = to_2tuple(window), to_2tuple(shift)
    n = torch.arange(got.shape[0])
    mixed = ((n // (W // ww) == H // wh - 1) & (sh > 0)) | ((n % (W // ww) == W // ww - 1) & (sw > 0))
    assert torch.equal(got.ne(0).flatten(1).any(1), mixed)
    assert (got.diagonal(dim1=1, dim2=2) == 0).all()


@pytest.mark.parametrize("window", [7, (3, 5), 1, (2, 1)])
def test_relative_position_index_is_the_definition(window):
    wh, ww = to_2tuple(window)
    idx = relative_position_index(window)
    coords = list(itertools.product(range(wh), range(ww)))  # row-major tokens of a window
    assert idx.shape == (wh * ww, wh * ww) and idx.dtype == torch.int64
    for a, (yi, xi) in enumerate(coords):
        for b, (yj, xj) in enumerate(coords):
            assert idx[a, b] == (yi - yj + wh - 1) * (2 * ww - 1) + (xi - xj + ww - 1)
    assert int(idx.max()) == (2 * wh - 1) * (2 * ww - 1) - 1 and int(idx.min()) == 0


def test_to_2tuple_checks_its_argument():
    assert to_2tuple(3) == (3, 3) and to_2tuple((2, 5)) == (2, 5) and to_2tuple([4, 1]) == (4, 1)
    for bad in (True, 2.5, (1, 2, 3), "7", (1, 2.0)):
        with pytest.raises(TypeError, match="window_size"):
            to_2tuple(bad, "window_size")
