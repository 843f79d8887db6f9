//! Float32 precision of NVIDIA GPU kernels: full IEEE float32 by default, TensorFloat-32
//! (TF32, a 10-bit mantissa on tensor cores) only when an experiment opts in (`train.tf32`).
//!
//! libtorch's own default is mixed: cuDNN convolutions run in TF32 unless told otherwise,
//! cuBLAS matmuls in IEEE float32. tch 0.24 exposes neither switch, so this module calls
//! libtorch 2.11's exported `at::Context` members directly: the setters `setAllowTF32CuDNN` /
//! `setAllowTF32CuBLAS` (which keep libtorch's legacy flag and its per-operation table in
//! agreement; setting one operation through the newer per-operation API alone makes cuDNN's
//! consistency check throw) and the per-operation getter `float32Precision`. The settings are
//! process-wide (`train::Trainer::train` applies the span's `train.tf32`); on the CPU they
//! change nothing. Declared `C-unwind`: should libtorch ever throw here, the process aborts
//! rather than unwinding through Rust frames undefined.

use std::ffi::c_void;

/// `at::Float32Backend::CUDA`.
const BACKEND_CUDA: i32 = 1;
/// `at::Float32Op::CONV`.
const OP_CONV: i32 = 1;
/// `at::Float32Op::MATMUL`.
const OP_MATMUL: i32 = 3;
/// `at::Float32Precision::TF32`.
const PRECISION_TF32: i32 = 2;

extern "C-unwind" {
    /// `at::Context& at::globalContext()`.
    #[link_name = "_ZN2at13globalContextEv"]
    fn global_context() -> *mut c_void;
    /// `void at::Context::setAllowTF32CuDNN(bool)`.
    #[link_name = "_ZN2at7Context17setAllowTF32CuDNNEb"]
    fn set_allow_tf32_cudnn(context: *mut c_void, allowed: bool);
    /// `void at::Context::setAllowTF32CuBLAS(bool)`.
    #[link_name = "_ZN2at7Context18setAllowTF32CuBLASEb"]
    fn set_allow_tf32_cublas(context: *mut c_void, allowed: bool);
    /// `Float32Precision at::Context::float32Precision(Float32Backend, Float32Op) const`.
    #[link_name = "_ZNK2at7Context16float32PrecisionENS_14Float32BackendENS_9Float32OpE"]
    fn float32_precision(context: *const c_void, backend: i32, op: i32) -> i32;
}

/// Whether GPU convolutions and matmuls may use TF32 (`true`) or must compute in IEEE float32
/// (`false`). Call before training; it applies to the whole process.
pub fn set_tf32(allowed: bool) {
    // SAFETY: libtorch's global context lives for the whole process; both setters are
    // non-virtual members taking `this` and a bool, which the Itanium C++ ABI passes exactly
    // like a C function of (pointer, bool). Neither throws.
    unsafe {
        let context = global_context();
        set_allow_tf32_cudnn(context, allowed);
        set_allow_tf32_cublas(context, allowed);
    }
}

/// Whether TF32 is allowed for GPU convolutions and matmuls (both), as libtorch reports it.
pub fn tf32() -> bool {
    precision_of(OP_CONV) == PRECISION_TF32 && precision_of(OP_MATMUL) == PRECISION_TF32
}

/// libtorch's float32 precision setting (`at::Float32Precision` as an int) for CUDA
/// operations of kind `op`.
fn precision_of(op: i32) -> i32 {
    // SAFETY: as in `set_tf32`; the getter is a const member taking two int-sized enums and
    // returning one; it does not throw.
    unsafe { float32_precision(global_context(), BACKEND_CUDA, op) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `at::Float32Op::RNN` (cuDNN's other operations, governed by the same switch).
    const OP_RNN: i32 = 2;

    #[test]
    fn tf32_is_off_once_set_off_and_on_only_when_asked() {
        // libtorch's own default: TF32 convolutions. The switch governs convolutions, cuDNN's
        // other operations and matmuls together.
        assert_eq!(precision_of(OP_CONV), PRECISION_TF32, "libtorch's default");
        set_tf32(false);
        for op in [OP_CONV, OP_RNN, OP_MATMUL] {
            assert_ne!(precision_of(op), PRECISION_TF32, "op {op} off");
        }
        assert!(!tf32());
        set_tf32(true);
        for op in [OP_CONV, OP_RNN, OP_MATMUL] {
            assert_eq!(precision_of(op), PRECISION_TF32, "op {op} on");
        }
        assert!(tf32());
        set_tf32(false);
        assert!(!tf32());
    }
}
