"""``hilovit train --compile``: the training step through ``torch.compile``, and what it gained.

:class:`CompiledTraining` hands the training loop the module to call for each optimiser step: the
eager one for the first ``eager_steps`` steps of the process (timed: the reference), then
``torch.compile`` of it (inductor; the forward and, through AOTAutograd, the backward). From the
step times it reports, once enough compiled steps have run, the compile time (first compiled step
less a steady one) and the steady step time against the eager one.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Dict, List, Optional

import torch.nn as nn

__all__ = ["CompiledTraining"]


class CompiledTraining:
    """Which module runs each training step, and the timing of eager against compiled steps.

    Args:
        module: the (possibly DDP-wrapped) training model.
        enabled: compile at all; when False :meth:`module_for_step` always gives ``module``.
        eager_steps: steps run eagerly first (the first is a warm-up; the others are the reference).
        steady_steps: compiled steps after the compiling one before :meth:`step_done` reports.
        compile_fn: the compiler (``torch.compile``; a test may pass another).
        clock: seconds now (``time.perf_counter``; a test may pass a fake one).
    """

    def __init__(self, module: nn.Module, enabled: bool, eager_steps: int = 3, steady_steps: int = 3,
                 compile_fn: Optional[Callable[[nn.Module], nn.Module]] = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if eager_steps < 2 or steady_steps < 1:
            raise ValueError(f"eager_steps must be >= 2 and steady_steps >= 1, got {eager_steps}, {steady_steps}")
        self.module, self.enabled = module, bool(enabled)
        self.eager_steps, self.steady_steps = eager_steps, steady_steps
        self.compile_fn = compile_fn
        self.clock = clock
        self.compiled: Optional[nn.Module] = None
        self.eager_times: List[float] = []
        self.compiled_times: List[float] = []
        self.reported = False
        self._t0 = 0.0

    def replace_module(self, module: nn.Module) -> None:
        """Train ``module`` from now on (e.g. the model wrapped again by DDP); compiled again when due."""
        self.module, self.compiled = module, None

    def module_for_step(self) -> nn.Module:
        """The module for the step about to run (and start its clock)."""
        self._t0 = self.clock()
        if not self.enabled or len(self.eager_times) < self.eager_steps:
            return self.module
        if self.compiled is None:
            if self.compile_fn is None:
                import torch

                self.compile_fn = torch.compile
            self.compiled = self.compile_fn(self.module)
        return self.compiled

    def step_done(self) -> Optional[Dict[str, Any]]:
        """Stop the step's clock; returns :meth:`result` the first time it is complete, else None."""
        if not self.enabled:
            return None
        seconds = self.clock() - self._t0
        (self.compiled_times if self.compiled is not None else self.eager_times).append(seconds)
        if not self.reported and len(self.compiled_times) > self.steady_steps:
            self.reported = True
            return self.result()
        return None

    def result(self) -> Optional[Dict[str, Any]]:
        """``{'compile_seconds', 'eager_step_ms', 'compiled_step_ms', 'speedup', 'steps_timed'}`` from
        the steps so far, or None before a compiled step has run after the compiling one."""
        if not self.enabled or len(self.eager_times) < 2 or len(self.compiled_times) < 2:
            return None
        eager = statistics.median(self.eager_times[1:])
        steady = statistics.median(self.compiled_times[1:])
        return {
            "compile_seconds": max(0.0, self.compiled_times[0] - steady),
            "eager_step_ms": eager * 1e3,
            "compiled_step_ms": steady * 1e3,
            "speedup": eager / steady,
            "steps_timed": {"eager": len(self.eager_times) - 1, "compiled": len(self.compiled_times) - 1},
        }

    @staticmethod
    def describe(result: Optional[Dict[str, Any]]) -> str:
        if result is None:
            return "torch.compile: too few steps ran to time the compiled step against the eager one"
        return (f"torch.compile: compiling took {result['compile_seconds']:.1f} s; a training step takes "
                f"{result['compiled_step_ms']:.0f} ms compiled vs {result['eager_step_ms']:.0f} ms eager "
                f"({result['speedup']:.2f}x, medians of {result['steps_timed']['compiled']} and "
                f"{result['steps_timed']['eager']} steps)")
