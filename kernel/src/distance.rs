//! Integer distances with a defined, exact result on the whole input range.
//!
//! Components are raw Q16.16 `i32`s. Every distance is the exact mathematical value as an
//! `i128`: a squared difference is below 2^64 and a product below 2^62 in magnitude, and there
//! are at most 4096 of them, so no sum can exceed 2^76. Exactness is what makes the fast paths
//! safe: when the inputs' magnitudes prove that the sum fits in an `i64` (almost always: unit
//! embeddings are below 2^17 per component), a narrower accumulator computes the very same
//! number. Integer addition is associative, so any summation order (scalar, unrolled, SIMD) gives
//! identical results.

use alloc::vec::Vec;

use crate::event::Metric;
use crate::fixed::Fixed;

/// A distance: smaller is closer. See [`Metric`] for the units.
pub type Distance = i128;

/// The largest absolute component value of a vector.
pub fn max_abs(v: &[i32]) -> u32 {
    v.iter().map(|x| x.unsigned_abs()).max().unwrap_or(0)
}

/// What the narrow (i64) kernels may assume about two vectors: a proof that no partial sum
/// overflows. Derived from the largest absolute component of each side.
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    narrow: bool,
}

impl Bound {
    /// Decides, for vectors of `dim` components bounded by `max_a` and `max_b`, whether the
    /// narrow kernels of `metric` are exact.
    pub fn new(metric: Metric, dim: u32, max_a: u32, max_b: u32) -> Bound {
        let (a, b, d) = (u128::from(max_a), u128::from(max_b), u128::from(dim));
        let narrow = match metric {
            // |a_i - b_i| <= a + b must fit in i32 (the SIMD kernels subtract in 32 bits), and
            // dim * (a + b)^2 in i64.
            Metric::L2 | Metric::Cosine => {
                a + b <= i32::MAX as u128 && d * (a + b) * (a + b) <= i64::MAX as u128
            }
            Metric::InnerProduct => d * a * b <= i64::MAX as u128,
        };
        Bound { narrow }
    }

    /// Whether the i64 kernels apply.
    pub fn is_narrow(self) -> bool {
        self.narrow
    }
}

/// Exact squared L2 distance, any inputs.
pub fn l2_sq_wide(a: &[i32], b: &[i32]) -> i128 {
    let mut acc: u128 = 0;
    for (&x, &y) in a.iter().zip(b) {
        let d = (i64::from(x) - i64::from(y)).unsigned_abs();
        // d < 2^32, so d * d < 2^64.
        acc += u128::from(d * d);
    }
    acc as i128
}

/// Exact dot product, any inputs.
pub fn dot_wide(a: &[i32], b: &[i32]) -> i128 {
    let mut acc: i128 = 0;
    for (&x, &y) in a.iter().zip(b) {
        acc += i128::from(i64::from(x) * i64::from(y));
    }
    acc
}

/// Exact squared L2 distance when `Bound::is_narrow` holds for these inputs: the SIMD kernel
/// where the CPU has one, else [`l2_sq_narrow_scalar`]. Both give the same value.
pub fn l2_sq_narrow(a: &[i32], b: &[i32]) -> i64 {
    (narrow_kernels().l2)(a, b)
}

/// Exact dot product when `Bound::is_narrow` holds for these inputs (SIMD where available).
pub fn dot_narrow(a: &[i32], b: &[i32]) -> i64 {
    (narrow_kernels().dot)(a, b)
}

/// The portable narrow squared L2 kernel.
pub fn l2_sq_narrow_scalar(a: &[i32], b: &[i32]) -> i64 {
    let mut acc: i64 = 0;
    for (&x, &y) in a.iter().zip(b) {
        let d = i64::from(x) - i64::from(y);
        acc += d * d;
    }
    acc
}

/// The portable narrow dot product kernel.
pub fn dot_narrow_scalar(a: &[i32], b: &[i32]) -> i64 {
    let mut acc: i64 = 0;
    for (&x, &y) in a.iter().zip(b) {
        acc += i64::from(x) * i64::from(y);
    }
    acc
}

/// A narrow distance kernel.
pub type NarrowFn = fn(&[i32], &[i32]) -> i64;

/// The narrow kernels chosen for this CPU.
#[derive(Clone, Copy)]
pub struct NarrowKernels {
    /// Squared L2.
    pub l2: NarrowFn,
    /// Dot product.
    pub dot: NarrowFn,
    /// Name of the instruction set: `avx2` or `scalar`.
    pub name: &'static str,
}

#[cfg(target_arch = "x86_64")]
cpufeatures::new!(avx2_cpuid, "avx2");

/// Picks the narrow kernels once per call site: AVX2 when the CPU reports it (runtime
/// detection), else scalar. Setting `force_scalar` (see [`narrow_kernels_with`]) is for tests and
/// benchmarks that compare the two.
pub fn narrow_kernels() -> NarrowKernels {
    narrow_kernels_with(false)
}

/// [`narrow_kernels`], optionally forcing the scalar kernels.
pub fn narrow_kernels_with(force_scalar: bool) -> NarrowKernels {
    #[cfg(target_arch = "x86_64")]
    if !force_scalar && avx2_cpuid::get() {
        return NarrowKernels {
            l2: avx2::l2_sq,
            dot: avx2::dot,
            name: "avx2",
        };
    }
    let _ = force_scalar;
    NarrowKernels {
        l2: l2_sq_narrow_scalar,
        dot: dot_narrow_scalar,
        name: "scalar",
    }
}

/// AVX2 kernels. Each 256-bit register holds eight `i32`s; `_mm256_mul_epi32` multiplies the
/// even lanes into four exact `i64` products, and a 32-bit shift brings the odd lanes into
/// place for a second multiply. Partial sums are `i64` lanes: each is at most the full sum,
/// which `Bound` proved fits, so the result equals the scalar kernel's exactly (integer
/// addition is associative).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use core::arch::x86_64::*;

    pub fn l2_sq(a: &[i32], b: &[i32]) -> i64 {
        // SAFETY: only selected after runtime detection of AVX2.
        unsafe { run::<true>(a, b) }
    }

    pub fn dot(a: &[i32], b: &[i32]) -> i64 {
        // SAFETY: only selected after runtime detection of AVX2.
        unsafe { run::<false>(a, b) }
    }

    #[target_feature(enable = "avx2")]
    fn hsum(v: __m256i) -> i64 {
        let lo = _mm256_castsi256_si128(v);
        let hi = _mm256_extracti128_si256::<1>(v);
        let s = _mm_add_epi64(lo, hi);
        let s = _mm_add_epi64(s, _mm_unpackhi_epi64(s, s));
        _mm_cvtsi128_si64(s)
    }

    /// Squared L2 (`L2`) or dot product: the two differ only in the operands multiplied.
    #[target_feature(enable = "avx2")]
    unsafe fn run<const L2: bool>(a: &[i32], b: &[i32]) -> i64 {
        let n = a.len().min(b.len());
        let chunks = n / 8;
        let mut acc0 = _mm256_setzero_si256();
        let mut acc1 = _mm256_setzero_si256();
        for i in 0..chunks {
            // SAFETY: i * 8 + 8 <= n, within both slices; loadu has no alignment needs.
            let (va, vb) = unsafe {
                (
                    _mm256_loadu_si256(a.as_ptr().add(i * 8).cast()),
                    _mm256_loadu_si256(b.as_ptr().add(i * 8).cast()),
                )
            };
            // For L2, |a_i - b_i| < 2^31 under the narrow bound: the subtraction cannot wrap.
            let (x, y) = if L2 {
                let d = _mm256_sub_epi32(va, vb);
                (d, d)
            } else {
                (va, vb)
            };
            acc0 = _mm256_add_epi64(acc0, _mm256_mul_epi32(x, y));
            acc1 = _mm256_add_epi64(
                acc1,
                _mm256_mul_epi32(_mm256_srli_epi64::<32>(x), _mm256_srli_epi64::<32>(y)),
            );
        }
        let mut sum = hsum(_mm256_add_epi64(acc0, acc1));
        for i in chunks * 8..n {
            let (x, y) = (i64::from(a[i]), i64::from(b[i]));
            sum += if L2 { (x - y) * (x - y) } else { x * y };
        }
        sum
    }
}

/// The distance between two stored-form vectors (normalised already for cosine).
pub fn distance(metric: Metric, bound: Bound, a: &[i32], b: &[i32]) -> Distance {
    match (metric, bound.narrow) {
        // Cosine compares the stored unit vectors by squared L2: 2^33 (1 - cos) up to rounding,
        // and exactly 0 for the same direction.
        (Metric::L2 | Metric::Cosine, true) => i128::from(l2_sq_narrow(a, b)),
        (Metric::L2 | Metric::Cosine, false) => l2_sq_wide(a, b),
        (Metric::InnerProduct, true) => -i128::from(dot_narrow(a, b)),
        (Metric::InnerProduct, false) => -dot_wide(a, b),
    }
}

/// Scales a vector to unit length (2^16 in raw units) with integer arithmetic only.
///
/// With `S = sum(v_i^2)` and `n = isqrt(S * 2^32)` (so `n` is `|v| * 2^16`, rounded down), each
/// component becomes `v_i * 2^32 / n`, rounded to nearest with ties to even. Returns `None` for
/// the zero vector, which has no direction.
pub fn normalize(v: &[Fixed]) -> Option<Vec<Fixed>> {
    let sum: u128 = v
        .iter()
        .map(|x| {
            let a = u128::from(x.0.unsigned_abs());
            a * a
        })
        .sum();
    if sum == 0 {
        return None;
    }
    // sum <= 4096 * 2^62 = 2^74, so sum << 32 < 2^106: no overflow.
    let n = (sum << 32).isqrt();
    Some(
        v.iter()
            .map(|x| {
                let num = u128::from(x.0.unsigned_abs()) << 32;
                let q = div_round_half_even(num, n);
                // |v_i| <= |v|, so q <= about 2^16: always fits.
                let q = q as i32;
                Fixed(if x.0 < 0 { -q } else { q })
            })
            .collect(),
    )
}

fn div_round_half_even(num: u128, den: u128) -> u128 {
    let q = num / den;
    let r = num % den;
    // Compare 2r with den without overflow: r < den <= 2^53.
    match (2 * r).cmp(&den) {
        core::cmp::Ordering::Greater => q + 1,
        core::cmp::Ordering::Equal if q & 1 == 1 => q + 1,
        _ => q,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extremes_do_not_overflow() {
        let a = [i32::MIN; 4096];
        let b = [i32::MAX; 4096];
        let d = (1i128 << 32) - 1;
        assert_eq!(l2_sq_wide(&a, &b), 4096 * d * d);
        assert_eq!(dot_wide(&a, &a), 4096 * (1i128 << 62));
        assert_eq!(dot_wide(&a, &b), -4096 * (1i128 << 31) * (i32::MAX as i128));
        assert!(!Bound::new(Metric::L2, 4096, u32::MAX / 2, u32::MAX / 2).is_narrow());
    }

    #[test]
    fn normalize_unit_length() {
        let v: Vec<Fixed> = [3, 4].iter().map(|&x| Fixed(x)).collect();
        let n = normalize(&v).unwrap();
        assert_eq!(n, [Fixed(39322), Fixed(52429)]);
        assert_eq!(normalize(&[Fixed(0), Fixed(0)]), None);
        let big = [Fixed(i32::MIN); 4096];
        let n = normalize(&big).unwrap();
        assert!(n.iter().all(|x| x.0 == -1024));
    }
}
