"""Every instruction-set build of the CPU kernels against the float64 reference.

The dispatcher runs the widest build this CPU supports, so without this file the narrower builds
(base, AVX2) would never run on a machine with AVX-512. Each test switches the process to one
level (``_core.set_simd``) and back; levels this CPU cannot run are skipped."""

from __future__ import annotations

import lossdiag as ld
import numpy as np
import pytest
import reference as R
from conftest import FLOAT_DTYPES, cast_logits, check_stats, make_case, shape_id
from lossdiag import _core

LEVELS = ["base", "avx2", "avx512"]
CASES = [((2, 21, 40, 40), 1), ((2, 30, 30, 21), -1), ((3000, 7), 1), ((70, 300), 1),
         ((1, 5, 3, 3), 1)]


@pytest.fixture(params=LEVELS)
def simd(request):
    before = _core.simd()
    if not _core.set_simd(request.param):
        pytest.skip(f"this CPU cannot run the {request.param} build")
    assert _core.simd() == request.param
    yield request.param
    assert _core.set_simd(before)


@pytest.mark.parametrize("case", CASES, ids=shape_id)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("per_sample", [False, True])
def test_evaluate_at_level(simd, case, dtype, per_sample):
    shape, axis = case
    x64, y = make_case(shape, axis, seed=110, scale=3.0, ignore_index=255, frac_ignored=0.1,
                       label_dtype=np.uint8)
    x, xr = cast_logits(x64, dtype)
    kw = dict(axis=axis, ignore_index=255, bins=20, top_k=(1, 3), per_sample=per_sample,
              grad=True)
    st = ld.evaluate(x, y, **kw)
    check_stats(st, R.ref_evaluate(xr, y, **kw), dtype)
    ce = ld.cross_entropy(x, y, axis=axis, ignore_index=255)
    assert np.float64(st.loss).tobytes() == np.float64(ce).tobytes()
    g = ld.cross_entropy_grad(x, y, axis=axis, ignore_index=255)[1]
    np.testing.assert_array_equal(np.asarray(st.grad), np.asarray(g))
    acc = ld.accuracy(x, y, axis=axis, ignore_index=255)
    assert acc == pytest.approx(st.correct[1] / st.count, rel=1e-15)
