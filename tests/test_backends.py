"""The one dispatch point: names, defaults, per-call and scoped choice, and reasons."""
import os
import subprocess
import sys

import pytest
import torch

import fastflow as ff
from fastflow import backends


def test_reference_always_available():
    assert "reference" in ff.available_backends()
    assert backends.resolve_name("step_combine", "cpu", "reference") == "reference"


def test_auto_order_on_cpu_and_explain():
    name = backends.resolve_name("step_combine", "cpu", "auto")
    assert name in ("cpu", "reference")
    assert set(backends.explain()) == set(backends.NAMES)


def test_use_backend_scopes_and_restores():
    before = ff.get_backend()
    with ff.use_backend("reference"):
        assert ff.get_backend() == "reference"
        x = torch.randn(2, 3)
        torch.testing.assert_close(ff.euler_step(x, x, 0.5), 1.5 * x)
    assert ff.get_backend() == before


def test_explicit_unavailable_backend_raises_with_reason():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="cuda"):
        ff.euler_step(x, x, 0.1, backend="cuda")


def test_environment_default():
    env = dict(os.environ, FASTFLOW_BACKEND="reference")
    out = subprocess.run([sys.executable, "-c", "import fastflow as ff; print(ff.get_backend())"], env=env,
                         capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.stdout.strip() == "reference", out.stderr


@pytest.mark.parametrize("env", ["FASTFLOW_BACKEND=bogus", "FASTFLOW_CPU_ISA=AVX2"])
def test_a_misspelt_environment_variable_fails_at_import(env):
    """Read at import, as the README says: a typo raises there, naming the variable, instead of
    running something else (the widest ISA) or failing at the first op."""
    name, value = env.split("=")
    proc = subprocess.run([sys.executable, "-c", "import fastflow"], capture_output=True, text=True,
                          env={**os.environ, name: value})
    assert proc.returncode != 0 and f"ValueError: {name}" in proc.stderr


def test_a_cpu_isa_the_processor_lacks_warns_at_import():
    """FASTFLOW_CPU_ISA=avx512 on a processor without AVX-512 ran the widest variant silently."""
    from fastflow import _C
    lacking = [isa for isa in ("avx512", "avx2") if isa not in _C.cpu_isas()]
    if not lacking:
        pytest.skip("this processor runs every variant")
    proc = subprocess.run([sys.executable, "-c", "import fastflow"], capture_output=True, text=True,
                          env={**os.environ, "FASTFLOW_CPU_ISA": lacking[0]})
    assert proc.returncode == 0 and f"FASTFLOW_CPU_ISA={lacking[0]} asks for CPU kernels" in proc.stderr


def test_views_with_the_negative_bit_are_read_as_their_values():
    """From a layout review: a one-element conj().imag view is contiguous and its memory holds
    the value's negation; the kernels read the memory, so cpu, triton and cuda lost the sign.
    Such inputs and per-sample coefficients are resolved; such an out= is refused."""
    neg = lambda v: torch.tensor([[complex(0, v)]]).conj().imag  # noqa: E731 (the value -v)
    y, a = neg(2.0), neg(0.3).reshape(1)
    assert y.is_neg() and y.is_contiguous() and float(y) == -2.0
    for name in [b for b in ff.available_backends() if b != "cuda"]:
        assert ff.euler_step(y, torch.zeros(1, 1), 0.1, backend=name).item() == -2.0, name
        assert ff.affine_path_sample(y, torch.zeros(1, 1), 1.0, 0.0, backend=name).item() == -2.0, name
        got = ff.step_combine(torch.ones(1, 1), y, a, 1.0, backend=name).item()
        assert abs(got - (-0.3 - 2.0)) < 1e-6, name
        with pytest.raises(ValueError, match="out: a view with the negative bit"):
            ff.step_combine(torch.ones(1, 1), torch.ones(1, 1), 1.0, 1.0, out=neg(1.0), backend=name)


def test_a_compiled_graph_follows_the_default_backend_when_it_runs(monkeypatch):
    """From a threads review: torch.compile baked the default backend of the tracing call into
    the graph, so later use_backend / set_backend were ignored without a recompile, and a graph
    traced in one thread ran every thread's calls on that thread's backend."""
    import threading

    import fastflow.csrc_backend as C
    import fastflow.reference as R
    calls = []
    for module, name in ((R, "reference"), (C, "cpu")):
        original = module.step_combine
        monkeypatch.setattr(module, "step_combine",
                            lambda *a, _f=original, _n=name, **k: (calls.append(_n), _f(*a, **k))[1])
    f = torch.compile(lambda x, v, h: ff.euler_step(x, v, h), backend="eager", fullgraph=True)
    x, v, h = torch.randn(4, 8), torch.randn(4, 8), torch.full((4,), 0.1)
    with ff.use_backend("reference"):
        torch.testing.assert_close(f(x, v, h), x + 0.1 * v)
    assert calls == ["reference"]
    f(x, v, h)
    assert calls[1:] == [backends.resolve_name("step_combine", "cpu")]
    seen = []
    thread = threading.Thread(target=lambda: (ff.set_backend("reference"), f(x, v, h), seen.append(calls[-1])))
    thread.start()
    thread.join()
    assert seen == ["reference"] and ff.get_backend() != "reference"  # (the thread's choice stays in it)


def test_use_backend_is_scoped_per_asyncio_task():
    """From a threads review: the choice lived in a threading.local, so concurrent tasks saw each
    other's blocks and out-of-order exits left a backend set after both had ended."""
    import asyncio
    seen = {}

    async def a():
        with ff.use_backend("reference"):
            await asyncio.sleep(0.01)
            seen["a"] = ff.get_backend()

    async def b():
        await asyncio.sleep(0.005)
        seen["b before"] = ff.get_backend()
        with ff.use_backend("cpu"):
            await asyncio.sleep(0.02)

    async def main():
        await asyncio.gather(a(), b())

    before = ff.get_backend()
    asyncio.run(main())
    assert seen == {"a": "reference", "b before": before} and ff.get_backend() == before


def test_compiled_graphs_with_the_default_backend_in_every_form(monkeypatch):
    """From a review of the change above: path.loss(reduction="none") handed the traced default on
    as an explicit name (refused), a float64 op read the ContextVar while traced (Dynamo cannot),
    and a use_backend block inside the compiled function must still pick its backend."""
    import fastflow.csrc_backend as C
    import fastflow.reference as R
    path = ff.CondOTProbPath()
    step = torch.compile(lambda x1, t, v: path.loss(v, path.sample(x_1=x1, t=t), reduction="none"),
                         backend="eager", fullgraph=True)
    assert step(torch.randn(4, 6), torch.rand(4), torch.randn(4, 6)).shape == (4, 6)
    with ff.use_backend("auto"):
        pass
    wide = torch.compile(lambda x, v: ff.euler_step(x, v, 0.1), backend="eager", fullgraph=True)
    x64 = torch.randn(2, 3, dtype=torch.float64)
    torch.testing.assert_close(wide(x64, x64), 1.1 * x64)
    calls = []
    for module, name in ((R, "reference"), (C, "cpu")):
        original = module.step_combine
        monkeypatch.setattr(module, "step_combine",
                            lambda *a, _f=original, _n=name, **k: (calls.append(_n), _f(*a, **k))[1])

    def f(x, v):
        with ff.use_backend("reference"):
            y = ff.euler_step(x, v, 0.1)
        return ff.euler_step(y, v, 0.1)
    x = torch.randn(2, 3)
    torch.testing.assert_close(torch.compile(f, backend="eager", fullgraph=True)(x, x), 1.2 * x)
    assert calls == ["reference", backends.resolve_name("step_combine", "cpu")]
    assert ff.get_backend() == "auto" and not backends._traced_blocks
