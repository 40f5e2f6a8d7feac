"""The inference fast path (hilovit.layers.fast): the switch, the reasons it stands aside, the kernel
self-tests, and every registered model computing the same function with it on and off."""

import os
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

import hilovit
from hilovit.layers import fast


@pytest.fixture(autouse=True)
def _restore_switch():
    before = fast.fast_inference_enabled()
    yield
    fast.set_fast_inference(before)


# --------------------------------------------------------------------------- the switch
def test_function_and_context_manager():
    x = torch.randn(2, 3)
    with torch.no_grad():
        assert fast.why_not_fast(x) == ""
        hilovit.set_fast_inference(False)
        assert "switched off" in hilovit.why_not_fast(x) and not fast.fast_inference_enabled()
        with hilovit.fast_inference(True):
            assert fast.why_not_fast(x) == ""
            with pytest.raises(RuntimeError, match="inside"), hilovit.fast_inference(False):
                assert "switched off" in fast.why_not_fast(x)
                raise RuntimeError("inside")
            assert fast.why_not_fast(x) == ""  # restored after an exception too
        assert "switched off" in fast.why_not_fast(x)
        hilovit.set_fast_inference(True)
        assert fast.why_not_fast(x) == ""
    for bad in (0, "no", None):
        with pytest.raises(TypeError, match="enabled must be a bool"):
            hilovit.set_fast_inference(bad)
        with pytest.raises(TypeError, match="enabled must be a bool"), hilovit.fast_inference(bad):
            pass


@pytest.mark.parametrize("value, on", [("0", False), ("off", False), ("1", True), ("", True)])
def test_environment_variable_is_read_at_import(value, on):
    code = "import hilovit.layers.fast as f; print(f.fast_inference_enabled())"
    env = dict(os.environ, HILOVIT_FAST_INFERENCE=value, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(on)


# --------------------------------------------------------------------------- the reasons
class _Probe(torch.nn.Module):
    """Records the reason the fast path gives inside its forward."""

    def forward(self, x):
        self.reason = fast.why_not_fast(x, self)
        return x * 2


def test_why_not_fast_names_each_reason():
    x = torch.randn(2, 3)
    probe = _Probe().eval()
    with torch.no_grad():
        assert fast.why_not_fast(x, probe) == ""
        assert "training mode" in fast.why_not_fast(x, probe.train())
        probe.eval()
        assert "device 'meta'" in fast.why_not_fast(torch.empty(2, 3, device="meta"))
        assert "dtype torch.float64" in fast.why_not_fast(x.double())
        assert "dtype torch.float16" in fast.why_not_fast(x.half())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert fast.why_not_fast(x) == "" and fast.inference_dtype(x) == torch.bfloat16
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False):
            assert "dispatch mode" in fast.why_not_fast(x)
        torch.jit.trace(probe, x, check_trace=False)
        assert "tracing" in probe.reason
    assert "autograd" in fast.why_not_fast(x, probe)
    with torch.inference_mode():
        assert fast.why_not_fast(x, probe) == ""
    # training=True asks about layouts valid under autograd and on any device
    assert fast.why_not_fast(x, probe.train(), training=True) == ""
    assert fast.why_not_fast(torch.empty(1, device="meta"), training=True) == ""


def test_why_not_fast_under_torch_compile():
    def f(x):
        return x + 1 if "torch.compile" in fast.why_not_fast(x) else x - 1

    x = torch.zeros(3)
    with torch.no_grad():
        assert torch.equal(f(x), x - 1)
        assert torch.equal(torch.compile(f, backend="eager")(x), x + 1)


def test_a_kernel_failing_its_self_test_warns_once_and_the_plain_ops_run(monkeypatch):
    monkeypatch.setitem(fast._SELF_TESTS, "linear", lambda dtype: "it disagrees with F.linear")
    monkeypatch.setattr(fast, "_KERNELS", {})
    monkeypatch.setattr(fast, "_CACHE", type(fast._CACHE)())
    layer = torch.nn.Linear(8, 5)
    x, r = torch.randn(4, 8), torch.randn(4, 5)
    with torch.no_grad():
        with pytest.warns(RuntimeWarning, match="linear kernel is off in float32 .it disagrees"):
            out = fast.linear(x, layer, act=torch.nn.GELU(), residual=r)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once only
            assert not fast.kernel_ok("linear")
            again = fast.linear(x, layer)
    torch.testing.assert_close(out, F.gelu(layer(x)) + r)
    torch.testing.assert_close(again, layer(x))
    with pytest.raises(ValueError, match="kernel must be one of"):
        fast.kernel_ok("attention")


def test_a_kernel_that_raises_is_off_without_touching_the_forward(monkeypatch):
    def boom(dtype):
        raise RuntimeError("could not create a primitive")

    monkeypatch.setitem(fast._SELF_TESTS, "conv", boom)
    monkeypatch.setattr(fast, "_KERNELS", {})
    with pytest.warns(RuntimeWarning, match="conv kernel is off .*RuntimeError: could not create"):
        assert not fast.kernel_ok("conv", torch.float32)
    from hilovit.layers.mlp import ConvFFN

    ffn = ConvFFN(8, 16).eval()
    x = torch.randn(2, 5, 6, 8)
    with torch.no_grad():
        fast_out = ffn(x)
        with fast.fast_inference(False):
            plain = ffn(x)
    torch.testing.assert_close(fast_out, plain, atol=1e-5, rtol=1e-5)


def test_kernel_status_names_every_kernel():
    status = fast.kernel_status()
    assert {"linear float32", "linear bfloat16", "conv float32", "conv bfloat16"} <= set(status)
    assert all(isinstance(v, str) for v in status.values())


# --------------------------------------------------------------------------- the cache
def test_cache_follows_parameter_changes_and_drops_with_the_module():
    import gc

    layer = torch.nn.Linear(6, 4)
    with torch.no_grad():
        w1, _ = fast.inference_weights((layer,), torch.bfloat16)
        assert fast.inference_weights((layer,), torch.bfloat16)[0] is w1  # kept
        layer.weight.add_(1.0)  # in place: the version counter moves
        w2, _ = fast.inference_weights((layer,), torch.bfloat16)
    assert w2 is not w1 and torch.equal(w2.float(), layer.weight.detach().bfloat16().float())
    f32, _ = fast.inference_weights((layer,), torch.float32)
    assert f32.data_ptr() == layer.weight.data_ptr()  # float32: the parameter itself, no copy
    n = len(fast._CACHE)
    del layer
    gc.collect()
    assert len(fast._CACHE) == n - 1


# --------------------------------------------------------------------------- every model, on vs off
def _relative_error(a, b, ref):
    return float((a.double() - b.double()).abs().max() / ref.double().abs().max().clamp_min(1e-12))


# every classifier and backbone; of the segmenters (the same backbones under an FPN) the small one
# (detectors: tests/models/test_retinanet.py, test_mask_rcnn.py)
FAST_MODELS = [n for n in hilovit.list_models() if not n.startswith(("semfpn_", "retinanet_", "mask_rcnn_"))]
FAST_MODELS += ["semfpn_litv2_nano"]


@pytest.mark.parametrize("name", FAST_MODELS)
def test_every_model_fast_on_equals_fast_off(name):
    """float32: the fast path computes the same function (1e-5). bfloat16 autocast: both paths
    round to bfloat16 (8 significant bits, ~0.4% per rounding, through tens of layers), the fast
    path more often (its residual stream stays bfloat16); its distance from the float32 result
    must stay within the bfloat16 budget: at most 3x the plain path's own distance plus 1% of
    the logits' scale."""
    torch.manual_seed(0)
    model = hilovit.create_model(name, num_classes=10).eval()
    x = torch.randn(1, getattr(model, "in_chans", None) or model.backbone.in_chans, 32, 32)
    with torch.inference_mode():
        on = model(x)
        with hilovit.fast_inference(False):
            off = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            on16 = model(x)
            with hilovit.fast_inference(False):
                off16 = model(x)
    assert on.dtype == off.dtype == torch.float32 and on.shape == off.shape and on.shape[:2] == (1, 10)
    torch.testing.assert_close(on, off, atol=1e-5, rtol=1e-5)
    err_fast, err_plain = _relative_error(on16, off, off), _relative_error(off16, off, off)
    assert err_fast <= 3 * err_plain + 0.01, (err_fast, err_plain)


def test_hooks_on_swin_attention_fire_in_inference():
    torch.manual_seed(0)
    model = hilovit.create_model("swin_nano").eval()
    attn = model.layers[0].blocks[1].attn
    seen = []
    handle = attn.register_forward_hook(lambda m, args, out: seen.append((args[0], out)))
    with torch.inference_mode():
        model(torch.randn(2, 3, 28, 28))
        assert len(seen) == 1
        x, out = seen[0]
        with hilovit.fast_inference(False):
            torch.testing.assert_close(out, attn.forward_windows(x), atol=1e-5, rtol=1e-5)
    handle.remove()
