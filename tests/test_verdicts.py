"""The report's verdict rules on hand-made rows: the two-segment fit of a known broken line, the
paper's lr of a setting, borderline settings and settings the lr rule decides, the accuracy rule's
tie-break, group verdicts with undecided and borderline settings, and the reruns table's reader."""
from __future__ import annotations

import math

import pytest

import reproduction_report as report
from variance_analysis import fit_two_segments


def test_two_segments_recover_a_known_broken_line():
    layers = list(range(13))
    line = [3.0 - 0.5 * l if l <= 7 else 3.0 - 0.5 * 7 - 0.03 * (l - 7) for l in layers]
    fit = fit_two_segments(layers, [math.exp(v) for v in line])
    assert fit.breakpoint == 7 and fit.num_points == 13
    assert fit.rho_before == pytest.approx(math.exp(-0.5)) and fit.rho_after == pytest.approx(math.exp(-0.03))
    assert fit.sse == pytest.approx(0.0, abs=1e-20)
    straight = fit_two_segments(layers, [math.exp(-0.2 * l) for l in layers])   # a line: equal slopes
    assert straight.rho_before == pytest.approx(straight.rho_after)
    with pytest.raises(ValueError):
        fit_two_segments([0, 1], [1.0, 0.5])
