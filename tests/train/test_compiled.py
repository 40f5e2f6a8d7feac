"""``hilovit train --compile``: which module each step runs, and the timing report's arithmetic.

The compiler is replaced by a wrapper that records its calls and advances a fake clock by a known
time in its first call (the "compilation"), so the schedule (eager steps first, one compilation,
compiled steps after) and the reported numbers are checked exactly. The last test runs a real
compiled training (TorchDynamo and AOTAutograd through the ``aot_eager`` backend); inductor's code
generation is checked in ``tests/test_compile.py``.
"""

from __future__ import annotations

import pytest
import torch.nn as nn

from hilovit.train.compiled import CompiledTraining


class _Clock:
    """A clock that moves only when told: step and compile times are exact, whatever the machine's load."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _FakeCompiled(nn.Module):
    def __init__(self, inner: nn.Module, delay: float, clock: _Clock) -> None:
        super().__init__()
        self.inner, self.delay, self.clock, self.calls = inner, delay, clock, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 1:
            self.clock.now += self.delay  # the "compilation"
        return self.inner(x)


def _run(steps: int, enabled: bool = True, eager_cost: float = 0.02, compiled_cost: float = 0.01,
         compile_delay: float = 0.2):
    model = nn.Identity()
    made = []
    clock = _Clock()

    def compile_fn(m):
        made.append(_FakeCompiled(m, compile_delay, clock))
        return made[-1]

    timer = CompiledTraining(model, enabled, eager_steps=3, steady_steps=3, compile_fn=compile_fn, clock=clock)
    used, reports = [], []
    for _ in range(steps):
        module = timer.module_for_step()
        used.append(module)
        module(1)
        clock.now += eager_cost if module is model else compiled_cost
        r = timer.step_done()
        if r is not None:
            reports.append(r)
    return model, made, used, reports, timer


def test_eager_steps_first_then_one_compilation():
    model, made, used, reports, _ = _run(8)
    assert len(made) == 1 and made[0].inner is model
    assert used[:3] == [model] * 3
    assert all(m is made[0] for m in used[3:])
    assert len(reports) == 1  # reported once, after the compiling step and 3 steady ones


def test_report_separates_compile_time_from_step_time():
    *_, reports, timer = _run(8, eager_cost=0.03, compiled_cost=0.01, compile_delay=0.25)
    r = reports[0]
    assert r["compile_seconds"] == pytest.approx(0.25, abs=0.06)
    assert r["eager_step_ms"] == pytest.approx(30, abs=8)
    assert r["compiled_step_ms"] == pytest.approx(10, abs=8)
    assert r["speedup"] > 1.5
    assert r["steps_timed"] == {"eager": 2, "compiled": 3}
    assert "compiling took" in CompiledTraining.describe(r)


def test_too_few_steps_give_no_result_but_say_so():
    *_, reports, timer = _run(4)  # 3 eager + the compiling step: no steady compiled step yet
    assert reports == [] and timer.result() is None
    assert "too few steps" in CompiledTraining.describe(timer.result())


def test_disabled_never_compiles():
    model, made, used, reports, timer = _run(6, enabled=False)
    assert made == [] and all(m is model for m in used) and reports == [] and timer.result() is None


def test_replacing_the_module_compiles_the_new_one():
    model, made, used, reports, timer = _run(5)
    other = nn.Identity()
    timer.replace_module(other)
    assert timer.module_for_step().inner is other and len(made) == 2


def test_bad_step_counts_are_refused():
    with pytest.raises(ValueError, match="eager_steps"):
        CompiledTraining(nn.Identity(), True, eager_steps=1)


def test_train_with_compile_trains_the_same_model(idx_dir, tmp_path, monkeypatch):
    """``train(compile=True)`` end to end: 3 eager steps, then the compiled module (TorchDynamo's
    capture and AOTAutograd's forward and backward graphs, through the ``aot_eager`` backend: no
    code generation, so seconds instead of inductor's minutes) trains the weights an eager run trains,
    and the summary reports the timing."""

    import torch
    from safetensors.torch import load_file

    from hilovit.train import train

    torch._dynamo.reset()  # graphs other tests compiled stay out of this one's guards and caches
    opts = dict(model="litv2_nano", data=str(idx_dir), epochs=1, batch_size=16, eval_subset=16, progress="off",
                threads=1, base_lr=1e-3, warmup_epochs=0.5, drop_path=0.0, seed=3)
    eager = train(output=str(tmp_path / "eager"), **opts)
    calls = []
    real = torch.compile

    def compile_with_aot_eager(module, **kw):
        calls.append(module)
        return real(module, backend="aot_eager", **kw)

    monkeypatch.setattr(torch, "compile", compile_with_aot_eager)
    compiled = train(output=str(tmp_path / "compiled"), compile=True, **opts)
    assert len(calls) == 1
    assert "compile" not in eager
    timing = compiled["compile"]
    assert timing["steps_timed"] == {"eager": 2, "compiled": 4}  # 8 steps: 3 eager, the compiling one, 4 more
    assert timing["compile_seconds"] >= 0 and timing["speedup"] > 0
    a = load_file(tmp_path / "eager" / "model.safetensors")
    b = load_file(tmp_path / "compiled" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        # rounding differences of the captured graph (decomposed softmax and casts) grow over 8 steps
        torch.testing.assert_close(b[k], a[k], atol=5e-4, rtol=1e-3, msg=k)
    assert compiled["test_top1"] == pytest.approx(eager["test_top1"], abs=6.25)  # one of 16 images at most
