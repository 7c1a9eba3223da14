// fastflow._C: the single pybind11 module. Every op takes integers (data pointers from
// tensor.data_ptr(), sizes, strides, dtype codes), a device flag (False: CPU, True: CUDA)
// and the CUDA stream as an integer, and returns a Status code (0 = ok); Python raises.
// No torch here: tensors, checks and autograd live in fastflow/csrc_backend.py.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <utility>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "fastflow/common.h"
#include "fastflow/ops.h"

namespace py = pybind11;
using namespace fastflow;

namespace {

template <typename P> P ptr(uintptr_t p) { return reinterpret_cast<P>(p); }

template <typename Args, typename CpuF, typename CudaF>
int launch(bool cuda, uintptr_t stream, const Args& args, CpuF cpu_f, CudaF cuda_f) {
  return cuda ? cuda_f(args, stream) : cpu_f(args);
}

MaskDesc mask_desc(uintptr_t mask, int64_t inner, int64_t period) {
  MaskDesc m;
  m.ptr = ptr<const uint8_t*>(mask);
  m.inner = inner;
  m.period = period;
  return m;
}

}  // namespace

#ifdef FF_CUDA_EMULATOR_MODULE
namespace ff_emu {
std::string self_test(int kind);  // csrc/cuda/emulator/self_test.cpp
}
#endif

#ifndef FF_MODULE_NAME
#define FF_MODULE_NAME _C  // (the CUDA emulator build of the tests names its module _C_cuda_emu)
#endif

PYBIND11_MODULE(FF_MODULE_NAME, m) {
  m.doc() = "fastflow compiled kernels (CPU and, when built with it, CUDA); torch-free";
  auto rel = py::call_guard<py::gil_scoped_release>();

  m.def("has_cuda", &cuda::compiled, "whether the CUDA kernels were compiled in");
  m.attr("ERR_CUDA") = static_cast<int>(kErrCuda);  // the status of a failed launch (cuda_last_error says why)
  m.def("cuda_last_error", [] { return std::string(cuda::last_error()); },
        "the CUDA runtime's error behind this thread's last 'CUDA kernel launch failed' ('' if none)");
#ifdef FF_CUDA_EMULATOR_MODULE
  m.def("emulator_self_test", &ff_emu::self_test, py::arg("kind"),
        "runs one of the emulator's test kernels (see csrc/cuda/emulator/self_test.cpp)");
#endif
  m.def("cuda_problem", [] { return std::string(cuda::runtime_problem()); },
        "'' when the CUDA kernels can run on this machine, else why not");
  m.def(
      "set_num_threads",
      [](int n) {
#ifdef _OPENMP
        if (n > 0) omp_set_num_threads(n);
#else
        (void)n;
#endif
      },
      py::arg("n"), "threads of the CPU kernels (fastflow follows torch.get_num_threads())");
  m.def("cpu_isa", &cpu::isa, "the CPU kernel variant in use ('avx512', 'avx2' or 'baseline')");
  m.def(
      "cpu_isas",
      [] {
        py::list out;
        std::string all = cpu::isas();
        for (size_t s = 0, e; s <= all.size(); s = e + 1) {
          e = all.find(',', s);
          if (e == std::string::npos) e = all.size();
          out.append(all.substr(s, e - s));
        }
        return out;
      },
      "the CPU kernel variants this build and processor can run, narrowest first");
  m.def(
      "set_cpu_isa",
      [](const std::string& name) {
        if (!cpu::set_isa(name.c_str()))
          throw py::value_error("name: expected one of cpu_isas(), got '" + name + "'");
      },
      py::arg("name"), "run the CPU kernels of a narrower variant (tests; FASTFLOW_CPU_ISA sets it at start)");
  m.def("status_message", &status_message, py::arg("code"));
  m.def(
      "all_within",
      [](uintptr_t data, int64_t n, int dtype, double lo, double hi) {
        return cpu::all_within(ptr<const void*>(data), n, dtype, lo, hi);
      },
      py::arg("data"), py::arg("n"), py::arg("dtype"), py::arg("lo"), py::arg("hi"),
      "whether n contiguous host values at data (dtype 0 fp32, 1 bf16, 2 fp16, 3 float64) lie in [lo, hi]");
  m.def("affine_path_loss_workspace", &cuda::affine_path_loss_workspace, py::arg("batch"), py::arg("per_sample"),
        "fp32 workspace elements the CUDA affine_path_loss needs (0: none)");
  m.def("row_split", &cuda::row_split, py::arg("rows"), py::arg("vocab"), py::arg("device"),
        "chunks per row of the CUDA row kernels (workspace: 4 * rows * split fp32 when split > 1)");

  m.def(
      "philox_stream",
      [](bool cuda, uintptr_t stream, uintptr_t rng, int64_t seed, int64_t offset, int64_t n, int kind,
         uintptr_t out) {
        if (cuda) return cuda::philox_stream(ptr<const int64_t*>(rng), n, kind, ptr<void*>(out), stream);
        return cpu::philox_stream(seed, offset, n, kind, ptr<void*>(out));
      },
      py::arg("cuda"), py::arg("stream"), py::arg("rng"), py::arg("seed"), py::arg("offset"), py::arg("n"),
      py::arg("kind"), py::arg("out"), rel,
      "element-wise stream (kind 0 uint32, 1 uniform, 2 normal, 3 open uniform); CUDA reads (seed, offset) "
      "from the int64 pair at rng, CPU takes them as values");

  m.def(
      "rng_throughput",
      [](int64_t n, int kind) {
        uint32_t checksum = 0;
        const int code = cpu::rng_throughput(n, kind, &checksum);
        return std::pair<int, uint32_t>(code, checksum);  // made a tuple once the GIL is back
      },
      py::arg("n"), py::arg("kind"), py::call_guard<py::gil_scoped_release>(),
      "(status, checksum): the CPU kernels' generators alone, n uint32 words (kind 0) or Gaussians "
      "(kind 2) kept in L1 (the benchmarks' random-number bound)");

  m.def(
      "affine_path_sample",
      [](bool cuda, uintptr_t stream, uintptr_t x1, uintptr_t x0, uintptr_t a, uintptr_t b, uintptr_t s,
         uintptr_t rng, uintptr_t out, int64_t batch, int64_t per_sample, int dtype) {
        AffineSampleArgs g;
        g.x1 = ptr<const void*>(x1);
        g.x0 = ptr<const void*>(x0);
        g.a = ptr<const float*>(a);
        g.b = ptr<const float*>(b);
        g.s = ptr<const float*>(s);
        g.rng = ptr<const int64_t*>(rng);
        g.out = ptr<void*>(out);
        g.batch = batch;
        g.per_sample = per_sample;
        g.dtype = dtype;
        return launch(cuda, stream, g, cpu::affine_path_sample, cuda::affine_path_sample);
      },
      py::arg("cuda"), py::arg("stream"), py::arg("x1"), py::arg("x0"), py::arg("a"), py::arg("b"), py::arg("s"),
      py::arg("rng"), py::arg("out"), py::arg("batch"), py::arg("per_sample"), py::arg("dtype"), rel);

  auto loss_args = [](uintptr_t v, uintptr_t x1, uintptr_t x0, uintptr_t c, uintptr_t d, uintptr_t e,
                      uintptr_t rng, uintptr_t mask, int64_t mask_inner, int64_t mask_period, int64_t batch,
                      int64_t per_sample, int dtype, int x_dtype) {
    AffineLossArgs g;
    g.v = ptr<const void*>(v);
    g.x1 = ptr<const void*>(x1);
    g.x0 = ptr<const void*>(x0);
    g.c = ptr<const float*>(c);
    g.d = ptr<const float*>(d);
    g.e = ptr<const float*>(e);
    g.rng = ptr<const int64_t*>(rng);
    g.mask = mask_desc(mask, mask_inner, mask_period);
    g.batch = batch;
    g.per_sample = per_sample;
    g.dtype = dtype;
    g.x_dtype = x_dtype;
    return g;
  };

  m.def(
      "affine_path_loss",
      [loss_args](bool cuda, uintptr_t stream, uintptr_t v, uintptr_t x1, uintptr_t x0, uintptr_t c, uintptr_t d,
                  uintptr_t e, uintptr_t rng, uintptr_t mask, int64_t mask_inner, int64_t mask_period,
                  uintptr_t grad_scale, uintptr_t dv, uintptr_t loss, uintptr_t workspace, int64_t batch,
                  int64_t per_sample, int dtype, int x_dtype) {
        AffineLossArgs g =
            loss_args(v, x1, x0, c, d, e, rng, mask, mask_inner, mask_period, batch, per_sample, dtype, x_dtype);
        g.grad_scale = ptr<const float*>(grad_scale);
        g.dv = ptr<void*>(dv);
        g.loss = ptr<float*>(loss);
        g.workspace = ptr<float*>(workspace);
        return launch(cuda, stream, g, cpu::affine_path_loss, cuda::affine_path_loss);
      },
      py::arg("cuda"), py::arg("stream"), py::arg("v"), py::arg("x1"), py::arg("x0"), py::arg("c"), py::arg("d"),
      py::arg("e"), py::arg("rng"), py::arg("mask"), py::arg("mask_inner"), py::arg("mask_period"),
      py::arg("grad_scale"), py::arg("dv"), py::arg("loss"), py::arg("workspace"), py::arg("batch"),
      py::arg("per_sample"), py::arg("dtype"), py::arg("x_dtype"), rel);

  m.def(
      "step_combine",
      [](bool cuda, uintptr_t stream, uintptr_t x, uintptr_t p, uintptr_t q, uintptr_t A, uintptr_t B, uintptr_t C,
         uintptr_t N, uintptr_t rng, uintptr_t noise, uintptr_t out, int64_t batch, int64_t per_sample, int dtype,
         int p_dtype) {
        StepCombineArgs g;
        g.x = ptr<const void*>(x);
        g.p = ptr<const void*>(p);
        g.q = ptr<const void*>(q);
        g.A = ptr<const float*>(A);
        g.B = ptr<const float*>(B);
        g.C = ptr<const float*>(C);
        g.N = ptr<const float*>(N);
        g.rng = ptr<const int64_t*>(rng);
        g.noise = ptr<const void*>(noise);
        g.out = ptr<void*>(out);
        g.batch = batch;
        g.per_sample = per_sample;
        g.dtype = dtype;
        g.p_dtype = p_dtype;
        return launch(cuda, stream, g, cpu::step_combine, cuda::step_combine);
      },
      py::arg("cuda"), py::arg("stream"), py::arg("x"), py::arg("p"), py::arg("q"), py::arg("A"), py::arg("B"),
      py::arg("C"), py::arg("N"), py::arg("rng"), py::arg("noise"), py::arg("out"), py::arg("batch"),
      py::arg("per_sample"), py::arg("dtype"), py::arg("p_dtype"), rel);

  m.def(
      "step_combine_floats",
      [](uintptr_t x, uintptr_t p, uintptr_t q, float A, float B, float C, uintptr_t out, int64_t batch,
         int64_t per_sample, int dtype, int p_dtype) {
        StepCombineArgs g;
        g.x = ptr<const void*>(x);
        g.p = ptr<const void*>(p);
        g.q = ptr<const void*>(q);
        g.A = &A;
        g.B = &B;
        g.C = q ? &C : nullptr;
        g.out = ptr<void*>(out);
        g.batch = batch;
        g.per_sample = per_sample;
        g.dtype = dtype;
        g.p_dtype = p_dtype;
        g.coef_stride = 0;
        return cpu::step_combine(g);
      },
      "step_combine on CPU memory with one A, B (and C with q) for every sample; called positionally "
      "(the solvers' hot loop: keyword matching costs a cold call ~10 us)",
      py::arg("x"), py::arg("p"), py::arg("q"), py::arg("A"), py::arg("B"), py::arg("C"), py::arg("out"),
      py::arg("batch"), py::arg("per_sample"), py::arg("dtype"), py::arg("p_dtype"), rel);

  m.def(
      "mixture_path_sample",
      [](bool cuda, uintptr_t stream, uintptr_t x1, uintptr_t x0, uintptr_t kappa, uintptr_t rng, uintptr_t noise,
         uintptr_t out, int64_t batch, int64_t per_sample, int64_t vocab, int64_t mask_id, int itype) {
        MixtureSampleArgs g;
        g.x1 = ptr<const void*>(x1);
        g.x0 = ptr<const void*>(x0);
        g.kappa = ptr<const float*>(kappa);
        g.rng = ptr<const int64_t*>(rng);
        g.noise = ptr<const float*>(noise);
        g.out = ptr<void*>(out);
        g.batch = batch;
        g.per_sample = per_sample;
        g.vocab = vocab;
        g.mask_id = mask_id;
        g.itype = itype;
        return launch(cuda, stream, g, cpu::mixture_path_sample, cuda::mixture_path_sample);
      },
      py::arg("cuda"), py::arg("stream"), py::arg("x1"), py::arg("x0"), py::arg("kappa"), py::arg("rng"),
      py::arg("noise"), py::arg("out"), py::arg("batch"), py::arg("per_sample"), py::arg("vocab"),
      py::arg("mask_id"), py::arg("itype"), rel);

  auto row_args = [](uintptr_t logits, int64_t row_stride, uintptr_t x1, uintptr_t xt, uintptr_t jump,
                     int64_t ignore_index, uintptr_t grad_scale, uintptr_t grad, int64_t grad_stride, uintptr_t loss,
                     uintptr_t workspace, int64_t rows, int64_t vocab, int dtype) {
    RowLossArgs g;
    g.logits = ptr<const void*>(logits);
    g.row_stride = row_stride;
    g.x1 = ptr<const int64_t*>(x1);
    g.xt = ptr<const int64_t*>(xt);
    g.jump = ptr<const float*>(jump);
    g.ignore_index = ignore_index;
    g.grad_scale = ptr<const float*>(grad_scale);
    g.grad = ptr<void*>(grad);
    g.grad_stride = grad_stride;
    g.loss = ptr<float*>(loss);
    g.workspace = ptr<float*>(workspace);
    g.rows = rows;
    g.vocab = vocab;
    g.dtype = dtype;
    return g;
  };

  m.def(
      "cross_entropy",
      [row_args](bool cuda, uintptr_t stream, uintptr_t logits, int64_t row_stride, uintptr_t x1,
                 int64_t ignore_index, uintptr_t grad_scale, uintptr_t grad, int64_t grad_stride, uintptr_t loss,
                 uintptr_t workspace, int64_t rows, int64_t vocab, int dtype) {
        RowLossArgs g = row_args(logits, row_stride, x1, 0, 0, ignore_index, grad_scale, grad, grad_stride, loss,
                                 workspace, rows, vocab, dtype);
        return launch(cuda, stream, g, cpu::cross_entropy, cuda::cross_entropy);
      },
      py::arg("cuda"), py::arg("stream"), py::arg("logits"), py::arg("row_stride"), py::arg("x1"),
      py::arg("ignore_index"), py::arg("grad_scale"), py::arg("grad"), py::arg("grad_stride"), py::arg("loss"),
      py::arg("workspace"), py::arg("rows"), py::arg("vocab"), py::arg("dtype"), rel);

  m.def(
      "generalized_kl",
      [row_args](bool cuda, uintptr_t stream, uintptr_t logits, int64_t row_stride, uintptr_t x1, uintptr_t xt,
                 uintptr_t jump, int64_t ignore_index, uintptr_t grad_scale, uintptr_t grad, int64_t grad_stride,
                 uintptr_t loss, uintptr_t workspace, int64_t rows, int64_t vocab, int dtype) {
        RowLossArgs g = row_args(logits, row_stride, x1, xt, jump, ignore_index, grad_scale, grad, grad_stride, loss,
                                 workspace, rows, vocab, dtype);
        return launch(cuda, stream, g, cpu::generalized_kl, cuda::generalized_kl);
      },
      py::arg("cuda"), py::arg("stream"), py::arg("logits"), py::arg("row_stride"), py::arg("x1"), py::arg("xt"),
      py::arg("jump"), py::arg("ignore_index"), py::arg("grad_scale"), py::arg("grad"), py::arg("grad_stride"),
      py::arg("loss"), py::arg("workspace"), py::arg("rows"), py::arg("vocab"), py::arg("dtype"), rel);

  m.def(
      "jump_step",
      [](bool cuda, uintptr_t stream, uintptr_t logits, int64_t row_stride, uintptr_t xt, int itype, uintptr_t h,
         uintptr_t r1, uintptr_t r0, uintptr_t p0, uintptr_t logp0, int source, int64_t mask_id, float temperature,
         bool final_step, bool probs, uintptr_t rng, uintptr_t noise_token, uintptr_t noise_race,
         uintptr_t noise_race_p0, uintptr_t out, uintptr_t workspace, int64_t rows, int64_t vocab, int dtype) {
        JumpStepArgs g;
        g.logits = ptr<const void*>(logits);
        g.row_stride = row_stride;
        g.xt = ptr<const void*>(xt);
        g.itype = itype;
        g.h = ptr<const float*>(h);
        g.r1 = ptr<const float*>(r1);
        g.r0 = ptr<const float*>(r0);
        g.p0 = ptr<const float*>(p0);
        g.logp0 = ptr<const float*>(logp0);
        g.source = source;
        g.mask_id = mask_id;
        g.temperature = temperature;
        g.final_step = final_step;
        g.probs = probs;
        g.rng = ptr<const int64_t*>(rng);
        g.noise_token = ptr<const float*>(noise_token);
        g.noise_race = ptr<const float*>(noise_race);
        g.noise_race_p0 = ptr<const float*>(noise_race_p0);
        g.out = ptr<void*>(out);
        g.workspace = ptr<float*>(workspace);
        g.rows = rows;
        g.vocab = vocab;
        g.dtype = dtype;
        return launch(cuda, stream, g, cpu::jump_step, cuda::jump_step);
      },
      py::arg("cuda"), py::arg("stream"), py::arg("logits"), py::arg("row_stride"), py::arg("xt"), py::arg("itype"),
      py::arg("h"), py::arg("r1"), py::arg("r0"), py::arg("p0"), py::arg("logp0"), py::arg("source"),
      py::arg("mask_id"), py::arg("temperature"), py::arg("final_step"), py::arg("probs"), py::arg("rng"),
      py::arg("noise_token"), py::arg("noise_race"), py::arg("noise_race_p0"), py::arg("out"), py::arg("workspace"),
      py::arg("rows"), py::arg("vocab"), py::arg("dtype"), rel);

  m.def(
      "scale_rows",
      [](bool cuda, uintptr_t stream, uintptr_t grad, int64_t row_stride, uintptr_t g, int64_t rows, int64_t cols,
         int dtype) {
        ScaleRowsArgs a;
        a.grad = ptr<void*>(grad);
        a.row_stride = row_stride;
        a.g = ptr<const float*>(g);
        a.rows = rows;
        a.cols = cols;
        a.dtype = dtype;
        return launch(cuda, stream, a, cpu::scale_rows, cuda::scale_rows);
      },
      py::arg("cuda"), py::arg("stream"), py::arg("grad"), py::arg("row_stride"), py::arg("g"), py::arg("rows"),
      py::arg("cols"), py::arg("dtype"), rel);
}
