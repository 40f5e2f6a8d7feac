"""fast.dense: linear layers under autograd on oneDNN's kernel, against nn.Linear and float64 math."""

import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as prune
from torch.utils.flop_counter import FlopCounterMode

from hilovit.layers import fast


def ran_onednn(out: torch.Tensor) -> bool:
    """Whether the oneDNN autograd function is in ``out``'s graph (right below a view, if any)."""
    fns = [out.grad_fn] + [f for f, _ in out.grad_fn.next_functions if f is not None]
    return any(type(f).__name__ == "_OneDnnLinearBackward" for f in fns)


def grads(fn, layer, x):
    layer.zero_grad(set_to_none=True)
    x.grad = None
    out = fn(x, layer)
    (out.float() * torch.linspace(-1, 1, out.shape[-1])).square().sum().backward()
    return out, [None if t is None or t.grad is None else t.grad.clone() for t in (x, layer.weight, layer.bias)]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(37, 24), (3, 5, 14, 24)])
def test_values_and_gradients_equal_nn_linear_in_float32(bias, shape):
    torch.manual_seed(0)
    layer = nn.Linear(24, 40, bias=bias)
    x = torch.randn(*shape[:-1], 2 * shape[-1])[..., ::2].requires_grad_()  # strided input
    out, got = grads(fast.dense, layer, x)
    assert ran_onednn(out)
    ref, want = grads(lambda t, m: m(t), layer, x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for g, w in zip(got, want):
        if w is None:
            assert g is None
        else:
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
    # and against float64 math
    with torch.no_grad():
        exact = x.double() @ layer.weight.double().t() + (layer.bias.double() if bias else 0)
    torch.testing.assert_close(out.double(), exact, atol=1e-5, rtol=1e-5)


def test_frozen_input_or_frozen_weight():
    torch.manual_seed(1)
    layer = nn.Linear(16, 8)
    x = torch.randn(10, 16)
    out, (gx, gw, gb) = grads(fast.dense, layer, x)  # only the parameters want gradients
    assert ran_onednn(out) and gx is None and gw is not None
    _, (_, gw_ref, gb_ref) = grads(lambda t, m: m(t), layer, x)
    torch.testing.assert_close(gw, gw_ref)
    torch.testing.assert_close(gb, gb_ref)
    layer.requires_grad_(False)
    x.requires_grad_()
    out, (gx, gw, gb) = grads(fast.dense, layer, x)  # only the input does
    assert gw is None and gb is None
    torch.testing.assert_close(gx, grads(lambda t, m: m(t), layer, x)[1][0])


def test_bfloat16_autocast_is_autocast_linear():
    """Under bfloat16 autocast the kernel was no faster (benchmarks/train_linear.md): the layer runs."""
    torch.manual_seed(2)
    layer = nn.Linear(64, 96)
    x = torch.randn(4, 50, 64, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, got = grads(fast.dense, layer, x)
        ref, want = grads(lambda t, m: m(t), layer, x)
    assert not ran_onednn(out)
    assert out.dtype == ref.dtype == torch.bfloat16
    assert [g.dtype for g in got] == [torch.float32] * 3  # float32 parameters get float32 gradients
    torch.testing.assert_close(out.float(), ref.float(), atol=2e-2, rtol=2e-2)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=0.1, rtol=2e-2)


def test_double_backward_equals_nn_linear():
    torch.manual_seed(3)
    layer = nn.Linear(12, 20)
    x = torch.randn(6, 12, requires_grad=True)
    results = []
    for fn in (fast.dense, lambda t, m: m(t)):
        gx, = torch.autograd.grad(fn(x, layer).square().sum(), x, create_graph=True)
        results.append(torch.autograd.grad(gx.square().sum(), layer.weight)[0])
    torch.testing.assert_close(results[0], results[1], atol=1e-5, rtol=1e-5)


def test_stands_aside_where_it_should():
    layer = nn.Linear(8, 4)
    x = torch.randn(3, 8, requires_grad=True)
    with torch.no_grad():
        assert fast.dense(x, layer).grad_fn is None
    with fast.fast_inference(False):
        assert not ran_onednn(fast.dense(x, layer))
    assert not ran_onednn(fast.dense(x.double(), layer.double()))  # float64: torch's products
    with pytest.raises(RuntimeError):  # a dtype mismatch raises as nn.Linear does, no silent cast
        fast.dense(x.float(), layer)
    layer.float()
    with FlopCounterMode(display=False) as counter:  # FLOP counters see torch's products
        fast.dense(x, layer).sum().backward()
    assert counter.get_total_flops() == 3 * 2 * 3 * 8 * 4  # forward, input and weight gradients


def test_a_training_step_of_a_model_runs_its_linears_on_onednn(monkeypatch):
    import hilovit

    calls = []
    apply = fast._OneDnnLinear.apply
    monkeypatch.setattr(fast._OneDnnLinear, "apply", lambda *a: calls.append(a[1]) or apply(*a))
    model = hilovit.create_model("swin_nano", num_classes=10).train()
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    linears = [m for m in model.modules() if type(m) is nn.Linear and m is not model.head]
    # float32 weights go in as themselves; the shifted windows' qkv runs once per window type
    assert {id(w) for w in calls} == {id(m.weight) for m in linears}


def test_layers_with_hooks_run_through_their_call():
    """Pruning recomputes the weight in a forward pre-hook: the layer must be called, or the stale
    weight of the previous forward would be used (and its graph backpropagated twice)."""
    torch.manual_seed(4)
    layer = nn.Linear(10, 6)
    prune.l1_unstructured(layer, "weight", amount=0.5)
    x = torch.randn(5, 10, requires_grad=True)
    for _ in range(2):  # a second step would fail on the first step's freed graph
        out = fast.dense(x, layer)
        assert not ran_onednn(out)
        out.sum().backward()
    assert (layer.weight_orig.grad[layer.weight_mask == 0] == 0).all()
    seen = []
    plain = nn.Linear(10, 6)
    handle = plain.register_forward_hook(lambda m, args, out: seen.append(out))
    out = fast.dense(x, plain)
    assert len(seen) == 1 and seen[0] is out
    handle.remove()
    assert ran_onednn(fast.dense(x, plain))
