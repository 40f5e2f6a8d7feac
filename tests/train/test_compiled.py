"""``hilovit train --compile``: which module each step runs, and the timing report's arithmetic.

The compiler is replaced by a wrapper that records its calls and advances a fake clock by a known
time in its first call (the "compilation"), so the schedule (eager steps first, one compilation,
compiled steps after) and the reported numbers are checked exactly. The last test runs a real
compiled training (TorchDynamo and AOTAutograd through the ``aot_eager`` backend) with the timer on a
scripted clock, so the summary's timing is exact too; inductor's code generation is checked in
``tests/test_compile.py``.
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


class _ScriptedClock:
    """A clock read twice per training step (its start, then its end): the ``n``-th step lasts ``durations[n]``."""

    def __init__(self, durations) -> None:
        self.durations, self.calls, self.now = list(durations), 0, 0.0

    def __call__(self) -> float:
        if self.calls % 2:
            self.now += self.durations[self.calls // 2]
        self.calls += 1
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


def _run(steps: int, enabled: bool = True, eager_cost: float = 0.015625, compiled_cost: float = 0.0078125,
         compile_delay: float = 0.25, warmup_cost: float = 0.0):
    """``steps`` steps of ``nn.Identity`` on the fake clock; the first eager step costs ``warmup_cost`` more.
    Costs that are multiples of a power of two keep every sum and difference of the clock exact."""
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
        clock.now += warmup_cost if len(used) == 1 else 0.0
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
    """On the fake clock every figure is exact: the compiling step less a steady one, the medians of the
    eager steps after the warm-up and of the compiled steps after the compiling one, their ratio."""
    *_, reports, timer = _run(8, eager_cost=0.03125, compiled_cost=0.0078125, compile_delay=0.5, warmup_cost=1.0)
    r = reports[0]
    assert r == {"compile_seconds": 0.5, "eager_step_ms": 31.25, "compiled_step_ms": 7.8125, "speedup": 4.0,
                 "steps_timed": {"eager": 2, "compiled": 3}}
    assert timer.result() == {**r, "steps_timed": {"eager": 2, "compiled": 4}}  # one more steady step since
    assert CompiledTraining.describe(r) == ("torch.compile: compiling took 0.5 s; a training step takes 8 ms "
                                            "compiled vs 31 ms eager (4.00x, medians of 3 and 2 steps)")


def test_report_takes_medians_of_uneven_steps():
    """Steps of different lengths: the median, not the mean or the last, of each kind (warm-up and compiling
    steps left out)."""
    clock = _Clock()
    costs = iter([4.0, 0.5, 0.125, 0.25, 2.0 + 0.0625, 0.0625, 1.0, 0.125, 0.0625])  # 3 eager, compiling, 5 more

    def compile_fn(m):
        return m  # the same module: the fake clock alone says what each step cost

    timer = CompiledTraining(nn.Identity(), True, eager_steps=4, steady_steps=5, compile_fn=compile_fn, clock=clock)
    for cost in costs:
        timer.module_for_step()
        clock.now += cost
        timer.step_done()
    # eager after the warm-up: 0.5, 0.125, 0.25 -> median 0.25; compiled after the compiling step:
    # 0.0625, 1.0, 0.125, 0.0625 -> median (0.0625 + 0.125) / 2 = 0.09375; compile 2.0625 - 0.09375
    assert timer.result() == {"compile_seconds": 1.96875, "eager_step_ms": 250.0, "compiled_step_ms": 93.75,
                              "speedup": 0.25 / 0.09375, "steps_timed": {"eager": 3, "compiled": 4}}


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
    # the engine's timer reads a scripted clock: a 1 s warm-up, eager steps of 1/32 s, a compiling step 0.5 s
    # longer than the steady compiled steps of 1/128 s (powers of two: every figure below is exact)
    clock = _ScriptedClock([1.0, 0.03125, 0.03125, 0.5 + 0.0078125] + [0.0078125] * 4)
    real_init = CompiledTraining.__init__

    def init_with_clock(self, module, enabled, *args, **kwargs):
        real_init(self, module, enabled, *args, **{**kwargs, "clock": clock})

    monkeypatch.setattr(CompiledTraining, "__init__", init_with_clock)
    compiled = train(output=str(tmp_path / "compiled"), compile=True, **opts)
    assert len(calls) == 1
    assert "compile" not in eager
    timing = compiled["compile"]
    # 8 steps: 3 eager, the compiling one, 4 more; each step read the clock twice, nothing else did
    assert clock.calls == 16
    assert timing == {"compile_seconds": 0.5, "eager_step_ms": 31.25, "compiled_step_ms": 7.8125, "speedup": 4.0,
                      "steps_timed": {"eager": 2, "compiled": 4}}
    a = load_file(tmp_path / "eager" / "model.safetensors")
    b = load_file(tmp_path / "compiled" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        # rounding differences of the captured graph (decomposed softmax and casts) grow over 8 steps
        torch.testing.assert_close(b[k], a[k], atol=5e-4, rtol=1e-3, msg=k)
    assert compiled["test_top1"] == pytest.approx(eager["test_top1"], abs=6.25)  # one of 16 images at most
