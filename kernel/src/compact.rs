//! The compact (16-bit) copy of a collection's vectors that the graph index walks.
//!
//! Each stored Q16.16 component `x` is kept again as `x >> shift` in an `i16`, with `shift`
//! chosen from the collection's largest magnitude so that every compact component lies in
//! `[-2^13, 2^13)`. Two cases:
//!
//! - **Exact**: when every component ever stored has at least `shift` trailing zero bits (integer
//!   data such as SIFT descriptors: `v << 16` has 16), the shift loses nothing and compact
//!   distances are exact distances divided by `2^(2 * shift)`. The index then orders candidates
//!   exactly as the full-width distance would, and results carry exact distances.
//! - **Approximate**: otherwise the compact distance is an approximation used only to walk the
//!   graph; the candidates found are re-ranked by the exact full-width distance.
//!
//! Either way everything is integer arithmetic on values that are a function of the state, so it
//! is deterministic. The compact copy is derived state: never encoded, rebuilt on restore. When
//! an insert raises the largest magnitude (or brings the first component with fewer trailing
//! zeros), the whole copy is re-quantised before the new records are indexed, so at any sequence
//! number the copy is the same function of the stored vectors.
//!
//! Distances: with `|c| <= 2^13`, a squared difference is below 2^28 and a product at most 2^26,
//! so `_mm256_madd_epi16` pair sums fit in `i32` and any sum over 4096 dimensions fits in `i64`.

use alloc::vec::Vec;

/// Compact components lie in `[-2^LIMIT_BITS, 2^LIMIT_BITS)`.
const LIMIT_BITS: u32 = 13;

/// The shift for a collection whose largest magnitude is `max_abs`, and whether it is exact
/// given the OR of all components' bit patterns (`or_bits`).
pub fn choose(max_abs: u32, or_bits: u32) -> (u32, bool) {
    let bit_length = 32 - max_abs.leading_zeros();
    let shift = bit_length.saturating_sub(LIMIT_BITS);
    (shift, or_bits.trailing_zeros() >= shift)
}

/// Quantises one stored vector (its components lie within the range `shift` was chosen for).
pub fn quantize_into(v: &[i32], shift: u32, out: &mut Vec<i16>) {
    out.extend(v.iter().map(|&x| (x >> shift) as i16));
}

/// Quantises a query, whose components may lie beyond every stored one: they are clamped to
/// the compact range, which keeps the kernels' overflow bounds. Returns whether no component
/// needed clamping (only then can compact distances stand for exact ones).
pub fn quantize_query(q: &[i32], shift: u32, out: &mut Vec<i16>) -> bool {
    let (lo, hi) = (-(1i32 << LIMIT_BITS), (1i32 << LIMIT_BITS) - 1);
    let mut in_range = true;
    out.extend(q.iter().map(|&x| {
        let c = x >> shift;
        in_range &= (lo..=hi).contains(&c);
        c.clamp(lo, hi) as i16
    }));
    in_range
}

/// Compact squared L2 distance, portable.
pub fn l2_scalar(a: &[i16], b: &[i16]) -> i64 {
    let mut acc = 0i64;
    for (&x, &y) in a.iter().zip(b) {
        let d = i64::from(x) - i64::from(y);
        acc += d * d;
    }
    acc
}

/// Compact dot product, portable.
pub fn dot_scalar(a: &[i16], b: &[i16]) -> i64 {
    let mut acc = 0i64;
    for (&x, &y) in a.iter().zip(b) {
        acc += i64::from(x) * i64::from(y);
    }
    acc
}

/// A compact distance kernel.
pub type CompactFn = fn(&[i16], &[i16]) -> i64;

/// The compact kernels chosen for this CPU.
#[derive(Clone, Copy)]
pub struct CompactKernels {
    /// Squared L2.
    pub l2: CompactFn,
    /// Dot product.
    pub dot: CompactFn,
}

#[cfg(target_arch = "x86_64")]
cpufeatures::new!(avx2_cpuid, "avx2");
#[cfg(target_arch = "x86_64")]
cpufeatures::new!(avx512_cpuid, "avx512f", "avx512bw");

/// Instruction sets a compact kernel can use, widest last.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Isa {
    /// Portable Rust.
    Scalar,
    /// x86-64 AVX2.
    Avx2,
    /// x86-64 AVX-512 (F and BW).
    Avx512,
}

/// The widest instruction set this CPU offers (and its OS enables).
pub fn best_isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512_cpuid::get() {
            return Isa::Avx512;
        }
        if avx2_cpuid::get() {
            return Isa::Avx2;
        }
    }
    Isa::Scalar
}

/// The widest kernels this CPU runs, or scalar when forced (for tests).
pub fn kernels_with(force_scalar: bool) -> CompactKernels {
    kernels_for(if force_scalar {
        Isa::Scalar
    } else {
        best_isa()
    })
}

/// The kernels for `isa`, or for the widest set below it that this CPU offers. All of them
/// compute the same exact integers, so the choice never changes a result.
pub fn kernels_for(isa: Isa) -> CompactKernels {
    #[cfg(target_arch = "x86_64")]
    {
        let isa = isa.min(best_isa());
        if isa == Isa::Avx512 {
            return CompactKernels {
                l2: avx512::l2,
                dot: avx512::dot,
            };
        }
        if isa == Isa::Avx2 {
            return CompactKernels {
                l2: avx2::l2,
                dot: avx2::dot,
            };
        }
    }
    let _ = isa;
    CompactKernels {
        l2: l2_scalar,
        dot: dot_scalar,
    }
}

/// Hints the CPU to start loading `v` (x86-64 only; a no-op elsewhere): every 64-byte line of
/// it, up to 512 bytes. Used for compact vectors and neighbour lists.
#[inline(always)]
pub fn prefetch<T>(v: &[T]) {
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = v.as_ptr().cast::<i8>();
        let lines = core::mem::size_of_val(v).div_ceil(64).min(8);
        for line in 0..lines {
            // SAFETY: prefetching is a hint with no architectural effect (an address outside
            // the slice would not fault either); SSE is baseline on x86-64.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(line * 64)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// `_mm256_madd_epi16` multiplies sixteen `i16` pairs and adds adjacent products into eight
/// `i32`s. With compact components in `[-2^13, 2^13)` a pair sum is below 2^29, so two chunks
/// accumulate in `i32` lanes safely before widening into `i64` lanes. Sums are exact, so the
/// result equals the scalar kernel's.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use core::arch::x86_64::*;

    pub fn l2(a: &[i16], b: &[i16]) -> i64 {
        // SAFETY: only selected after runtime detection of AVX2.
        unsafe { run::<true>(a, b) }
    }

    pub fn dot(a: &[i16], b: &[i16]) -> i64 {
        // SAFETY: only selected after runtime detection of AVX2.
        unsafe { run::<false>(a, b) }
    }

    #[target_feature(enable = "avx2")]
    fn widen(acc: __m256i, m: __m256i) -> __m256i {
        let lo = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(m));
        let hi = _mm256_cvtepi32_epi64(_mm256_extracti128_si256::<1>(m));
        _mm256_add_epi64(acc, _mm256_add_epi64(lo, hi))
    }

    #[target_feature(enable = "avx2")]
    fn step<const L2: bool>(va: __m256i, vb: __m256i) -> __m256i {
        if L2 {
            let d = _mm256_sub_epi16(va, vb);
            _mm256_madd_epi16(d, d)
        } else {
            _mm256_madd_epi16(va, vb)
        }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn run<const L2: bool>(a: &[i16], b: &[i16]) -> i64 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = _mm256_setzero_si256();
        let mut i = 0;
        while i + 32 <= n {
            // SAFETY: i + 32 <= n: both 16-lane loads are within both slices.
            let (a0, b0, a1, b1) = unsafe {
                (
                    _mm256_loadu_si256(pa.add(i).cast()),
                    _mm256_loadu_si256(pb.add(i).cast()),
                    _mm256_loadu_si256(pa.add(i + 16).cast()),
                    _mm256_loadu_si256(pb.add(i + 16).cast()),
                )
            };
            let m = _mm256_add_epi32(step::<L2>(a0, b0), step::<L2>(a1, b1));
            acc = widen(acc, m);
            i += 32;
        }
        if i + 16 <= n {
            // SAFETY: i + 16 <= n.
            let (a0, b0) = unsafe {
                (
                    _mm256_loadu_si256(pa.add(i).cast()),
                    _mm256_loadu_si256(pb.add(i).cast()),
                )
            };
            acc = widen(acc, step::<L2>(a0, b0));
            i += 16;
        }
        let lo = _mm256_castsi256_si128(acc);
        let hi = _mm256_extracti128_si256::<1>(acc);
        let s = _mm_add_epi64(lo, hi);
        let s = _mm_add_epi64(s, _mm_unpackhi_epi64(s, s));
        let mut sum = _mm_cvtsi128_si64(s);
        while i < n {
            let (x, y) = (i64::from(a[i]), i64::from(b[i]));
            sum += if L2 { (x - y) * (x - y) } else { x * y };
            i += 1;
        }
        sum
    }
}

/// `_mm512_madd_epi16` as in the AVX2 kernel, 32 lanes wide. A pair sum is at most
/// `2 * (2^14 - 1)^2 < 2^29`, so four chunks (128 dimensions) accumulate in `i32` lanes
/// (`< 2^31 - 2^18`) before widening into `i64` lanes. Sums are exact, so the result equals the
/// scalar kernel's.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512 {
    use core::arch::x86_64::*;

    pub fn l2(a: &[i16], b: &[i16]) -> i64 {
        // SAFETY: only selected after runtime detection of AVX-512 F and BW.
        unsafe { run::<true>(a, b) }
    }

    pub fn dot(a: &[i16], b: &[i16]) -> i64 {
        // SAFETY: only selected after runtime detection of AVX-512 F and BW.
        unsafe { run::<false>(a, b) }
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    fn widen(acc: __m512i, m: __m512i) -> __m512i {
        let lo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(m));
        let hi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64::<1>(m));
        _mm512_add_epi64(acc, _mm512_add_epi64(lo, hi))
    }

    /// One 32-lane chunk at `i`: squared differences or products, pair-summed.
    ///
    /// # Safety
    /// `i + 32` must not exceed either slice's length.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn chunk<const L2: bool>(pa: *const i16, pb: *const i16, i: usize) -> __m512i {
        // SAFETY: the caller keeps i + 32 within both slices.
        let (va, vb) = unsafe {
            (
                _mm512_loadu_si512(pa.add(i).cast()),
                _mm512_loadu_si512(pb.add(i).cast()),
            )
        };
        if L2 {
            let d = _mm512_sub_epi16(va, vb);
            _mm512_madd_epi16(d, d)
        } else {
            _mm512_madd_epi16(va, vb)
        }
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn run<const L2: bool>(a: &[i16], b: &[i16]) -> i64 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = _mm512_setzero_si512();
        let mut i = 0;
        while i + 128 <= n {
            // SAFETY: i + 128 <= n: all four chunks are within both slices.
            let m = unsafe {
                let s0 = _mm512_add_epi32(chunk::<L2>(pa, pb, i), chunk::<L2>(pa, pb, i + 32));
                let s1 = _mm512_add_epi32(chunk::<L2>(pa, pb, i + 64), chunk::<L2>(pa, pb, i + 96));
                _mm512_add_epi32(s0, s1)
            };
            acc = widen(acc, m);
            i += 128;
        }
        while i + 32 <= n {
            // SAFETY: i + 32 <= n.
            acc = widen(acc, unsafe { chunk::<L2>(pa, pb, i) });
            i += 32;
        }
        let mut sum = _mm512_reduce_add_epi64(acc);
        while i < n {
            let (x, y) = (i64::from(a[i]), i64::from(b[i]));
            sum += if L2 { (x - y) * (x - y) } else { x * y };
            i += 1;
        }
        sum
    }
}
