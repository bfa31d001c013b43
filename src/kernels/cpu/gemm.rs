//! The GEMM underneath every CPU convolution (the `gemm` crates' f32 kernel) and a raw-pointer
//! matrix view for it.

use gemm_common::Parallelism;

/// Writes through a raw pointer from several rayon tasks, each to disjoint elements.
#[derive(Clone, Copy)]
pub(super) struct SharedMut(pub(super) *mut f32);
// SAFETY: every use writes disjoint index sets from different tasks.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

/// A row-major matrix view for [`matmul`]: element (r, c) at `ptr + r * row + c * col`.
#[derive(Clone, Copy)]
pub(super) struct Mat {
    pub(super) ptr: *const f32,
    pub(super) row: isize,
    pub(super) col: isize,
}

/// `c = a * b` (or `c += a * b`), `a` m x k, `b` k x n, `c` m x n with row stride `c_row`.
///
/// `gemm-f32`'s kernel wants a column-major destination (its microkernel writes columns of
/// `c`); our destinations are row-major, so it is asked for `c^T = b^T a^T`, which is the same
/// memory seen column-major. (The `gemm` facade makes that swap itself; called without it, the
/// kernel scattered its rows and every convolution ran 3.5 times slower.)
///
/// # Safety
/// All pointers must be valid for the strides and sizes given (all strides non-negative), and
/// `c` must not alias `a` or `b`.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn matmul(
    m: usize,
    n: usize,
    k: usize,
    a: Mat,
    b: Mat,
    c: *mut f32,
    c_row: isize,
    accumulate: bool,
    parallel: bool,
) {
    debug_assert!(a.row >= 0 && a.col >= 0 && b.row >= 0 && b.col >= 0 && c_row >= 0);
    let parallelism = if parallel { Parallelism::Rayon(0) } else { Parallelism::None };
    // Arguments: rows, columns, depth, then (pointer, column stride, row stride) for the
    // destination, the left and the right operand: here c^T (n x m), b^T (n x k), a^T (k x m).
    gemm_f32::gemm::f32::get_gemm_fn()(
        n,
        m,
        k,
        c,
        c_row,
        1,
        accumulate,
        b.ptr,
        b.row,
        b.col,
        a.ptr,
        a.row,
        a.col,
        1.0,
        1.0,
        false,
        false,
        false,
        parallelism,
    );
}
