"""KL-weight schedules against their formulas written out by hand (eager, no training)."""
import numpy as np
import pytest

from kvae.parts.schedules import CyclicalAnnealing, LinearWarmup, beta_value


def test_linear_warmup_values_and_config():
    s = LinearWarmup(target=3.0, warmup_steps=4, start=1.0)
    expected = [1.0 + 2.0 * min(1.0, t / 4) for t in (0, 1, 2, 4, 9)]
    np.testing.assert_allclose([float(s(t)) for t in (0, 1, 2, 4, 9)], expected, rtol=1e-6)
    again = LinearWarmup.from_config(s.get_config())
    assert (again.target, again.warmup_steps, again.start) == (3.0, 4, 1.0)
    with pytest.raises(ValueError, match="warmup_steps must be positive"):
        LinearWarmup(warmup_steps=0)
    assert float(LinearWarmup(target=2.0, warmup_steps=1)(1)) == 2.0


def test_cyclical_annealing_values_and_config():
    s = CyclicalAnnealing(target=2.0, cycle_steps=5, ratio=0.4)
    expected = [2.0 * min(((t % 5) / 5) / 0.4, 1.0) for t in range(12)]
    np.testing.assert_allclose([float(s(t)) for t in range(12)], expected, rtol=1e-6, atol=1e-7)
    again = CyclicalAnnealing.from_config(s.get_config())
    assert (again.target, again.cycle_steps, again.ratio) == (2.0, 5, 0.4)
    for bad in (dict(cycle_steps=0), dict(ratio=0.0), dict(ratio=1.5)):
        with pytest.raises(ValueError, match="cycle_steps must be positive and ratio"):
            CyclicalAnnealing(**bad)
    assert float(CyclicalAnnealing(target=1.0, cycle_steps=4, ratio=1.0)(3)) == 0.75


def test_beta_value_of_numbers_and_schedules():
    assert float(beta_value(2.5, 7)) == 2.5
    assert beta_value(2.5, 7).dtype.name == "float32"
    assert float(beta_value(LinearWarmup(target=2.0, warmup_steps=4), 2)) == 1.0
    assert beta_value(LinearWarmup(target=2.0, warmup_steps=4), 2).dtype.name == "float32"


def test_defaults_and_edges():
    w, c = LinearWarmup(), CyclicalAnnealing()
    assert (w.target, w.warmup_steps, w.start) == (1.0, 10000, 0.0)
    assert (c.target, c.cycle_steps, c.ratio) == (1.0, 10000, 0.5)
    assert float(CyclicalAnnealing(cycle_steps=1, ratio=1.0)(0)) == 0.0  # one-step cycles are valid
    with pytest.raises(ValueError, match=r"^cycle_steps must be positive and ratio in \(0, 1\]$"):
        CyclicalAnnealing(cycle_steps=-1)
    with pytest.raises(ValueError, match=r"^warmup_steps must be positive, got -2$"):
        LinearWarmup(warmup_steps=-2)
