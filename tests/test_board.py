"""The exported runner on an emulated arm64 board computes what x86 computes
(tests/emulated_board.py). Slow (minutes) and it needs Debian's qemu-user-static and
mmdebstrap, so it is left out of the default suite: python -m pytest -m slow tests/test_board.py"""
import shutil

import pytest

import emulated_board

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not all(shutil.which(t) for t in ("qemu-aarch64-static", "mmdebstrap", "unshare")),
                    reason="needs qemu-user-static and mmdebstrap (apt-get install qemu-user-static mmdebstrap)")
def test_the_arm64_runner_computes_what_x86_computes(tmp_path):
    """A random-weight tiny model of the live recipe, without guidance and with it: fp32
    logits to 1e-4 and greedy codes equal; int8 and int4 kernels differ between the two
    instruction sets (their logits within 0.5 and 1.0, and with guidance, whose logits are
    three times one row's less twice the other's, within 1.5 and 3.0), so their greedy
    codes may part at a near tie, reported."""
    result = emulated_board.main(["--cache", str(tmp_path / "cache"), "--json", str(tmp_path / "board.json")])
    for guided, scale in (("", 1), (" cfg3", 3)):
        fp32 = result["fp32" + guided]
        assert fp32["max_logit_gap"] < 1e-4 and fp32["codes_equal"], fp32
        assert result["int8" + guided]["max_logit_gap"] < 0.5 * scale, result
        assert result["int4" + guided]["max_logit_gap"] < 1.0 * scale, result
