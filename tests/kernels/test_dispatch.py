"""kernel_path / path= dispatch, import lightness, and behaviour without triton."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from _kernels_testutil import make_cu

from costtax.kernels import _dispatch, group_select, judge_head, kernel_path, reward_head

pytestmark = pytest.mark.integration


def _triton_ok() -> bool:
    return _dispatch.triton_importable()


def test_cpu_without_interpreter_is_reference(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert kernel_path(torch.randn(3)) == "reference"
    assert kernel_path(torch.randn(3), None, 1.5) == "reference"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert kernel_path(torch.randn(3)) == "reference"


@pytest.mark.skipif(not _triton_ok(), reason="triton not importable")
def test_interpreter_env_selects_interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert kernel_path(torch.randn(3)) == "triton-interpret"


def test_no_triton_is_reference(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(_dispatch, "triton_importable", lambda: False)
    assert kernel_path(torch.randn(3)) == "reference"
    with pytest.raises(ValueError, match="needs triton"):
        reward_head(torch.randn(4, 8), make_cu([4]), torch.randn(8), path="triton-interpret")


def test_call_time_choice_and_reference_override(monkeypatch):
    """The path is chosen per call: with the interpreter variable unset the ops run the
    reference (no kernel output is allocated); path='reference' forces it anyway."""
    allocated = []
    real = _dispatch.empty_out
    monkeypatch.setattr(_dispatch, "empty_out", lambda *a: allocated.append(a) or real(*a))
    h, cu, w = torch.randn(9, 20), make_cu([4, 5]), torch.randn(20)
    r = torch.randn(5)
    reward_head(h, cu, w, path="reference")
    judge_head(h, cu, torch.randn(7, 20), torch.tensor([1, 2]), path="reference")
    group_select(r, make_cu([2, 3]), path="reference")
    assert allocated == []
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    reward_head(h, cu, w)
    group_select(r, make_cu([2, 3]))
    assert allocated == []
    # Back on: the next call takes the interpreter (when triton was imported in that mode).
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from costtax.kernels.reward_head import _reward_head_kernel

    if _triton_ok() and type(_reward_head_kernel).__name__ == "InterpretedFunction":
        reward_head(h, cu, w)
        assert len(allocated) == 1


def test_unsupported_dtype_falls_back_or_errors(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    h = torch.randn(9, 20, dtype=torch.float64)
    w = torch.randn(20, dtype=torch.float64)
    out = reward_head(h, make_cu([4, 5]), w)  # auto: fp64 goes to the reference
    torch.testing.assert_close(out, (h @ w)[[3, 8]].float())
    if _triton_ok():
        with pytest.raises(ValueError, match="read only"):
            reward_head(h, make_cu([4, 5]), w, path="triton-interpret")


def test_device_mismatch_error():
    with pytest.raises(ValueError, match="weight is on"):
        reward_head(torch.randn(4, 8), make_cu([4]), torch.randn(8, device="meta"))


def _run(code: str, env_update: dict[str, str | None]) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    for k, v in env_update.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=120)


def test_package_import_is_light():
    res = _run(
        """
        import sys
        import costtax.kernels as k
        assert "triton" not in sys.modules and "torch" not in sys.modules, sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "triton"))
        assert callable(k.reward_head) and callable(k.judge_head) and callable(k.group_select)
        import costtax.kernels.reward_head  # the submodule does not shadow the function
        assert callable(k.reward_head) and k.reward_head.__name__ == "reward_head"
        print("ok")
        """,
        {},
    )
    assert res.returncode == 0, res.stderr
    assert "ok" in res.stdout


def test_works_without_triton():
    """With `import triton` failing, everything imports and the ops use the reference."""
    res = _run(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "triton" or name.startswith("triton."):
                    raise ImportError("triton blocked for this test")
        sys.meta_path.insert(0, Block())
        import torch
        from costtax.kernels import kernel_path, reward_head, judge_head, group_select
        from costtax.kernels.reward_head import _reward_head_kernel
        assert _reward_head_kernel is None
        assert kernel_path(torch.randn(2)) == "reference"
        out = reward_head(torch.ones(3, 4), torch.tensor([0, 3]), torch.ones(4))
        assert out.tolist() == [4.0], out
        print(group_select(torch.tensor([1.0, 2.0]), torch.tensor([0, 2])).argmax.tolist())
        """,
        {"TRITON_INTERPRET": "1"},
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("[1]")


@pytest.mark.skipif(not _triton_ok(), reason="triton not importable")
def test_interpret_path_without_env_at_import_is_a_clear_error():
    """Triton imported in compiled mode on CPU: asking for the interpreter explains why
    it cannot work rather than failing inside triton."""
    res = _run(
        """
        import torch
        from costtax.kernels import reward_head
        try:
            reward_head(torch.ones(3, 4), torch.tensor([0, 3]), torch.ones(4), path="triton-interpret")
        except RuntimeError as e:
            print("ERR", e)
        """,
        {"TRITON_INTERPRET": None},
    )
    assert res.returncode == 0, res.stderr
    assert "TRITON_INTERPRET=1" in res.stdout


def test_kernels_come_from_this_checkout():
    """costtax.kernels is the kernels/ folder next to the costtax/ that was imported, even
    when the environment has an editable install of another checkout (a shared venv used
    by several git worktrees): otherwise the tests would exercise someone else's kernels."""
    from pathlib import Path

    import costtax
    import costtax.kernels as k

    sibling = Path(costtax.__file__).resolve().parents[1] / "kernels" / "__init__.py"
    if sibling.is_file():  # a source tree (an installed wheel has costtax/kernels inside)
        assert Path(k.__file__).resolve() == sibling.resolve()
