//! The compact copy of a collection's vectors that the graph index walks, in 8 or 16 bits.
//!
//! Each stored Q16.16 component `x` is kept again as `x >> shift` in a narrow (`i8`) or wide
//! (`i16`) integer, with `shift` chosen from the collection's largest magnitudes so that
//! compact components lie in `[-2^7, 2^7)` or `[-2^13, 2^13)`. The range may leave out (saturate)
//! at most one vector in 1024, so that a rare huge vector does not cost all the others their
//! precision ([`choose`]). Two cases:
//!
//! - **Exact**: when nothing saturates and every component ever stored has at least `shift`
//!   trailing zero bits (integer data such as SIFT descriptors: `v << 16` has 16), the shift
//!   loses nothing and compact distances are exact distances divided by `2^(2 * shift)`. The index then orders
//!   candidates exactly as the full-width distance would, and results carry exact distances.
//! - **Approximate**: otherwise the compact distance is an approximation used only to walk the
//!   graph and choose its links; the candidates a search finds are re-ranked by the exact
//!   full-width distance.
//!
//! **Which width** ([`params`]): narrow, unless the wide copy would be exact and the narrow one
//! would not (integer data keeps exact walks and searches that need no re-rank), or vectors have
//! fewer than [`NARROW_MIN_DIM`] components (a wide vector of fewer fits one cache line anyway,
//! and few dimensions leave quantisation error less room to average out). Building and
//! searching the graph is bound by loading the vectors a walk visits, at random places in memory
//! (about a thousand per insert): eight bits halve those loads and let twice as many vectors stay
//! in cache, and with the exact re-rank, graphs walked and linked at eight bits find the same
//! neighbours (BENCHMARKS.md, "compact width").
//!
//! Everything is integer arithmetic on values that are a function of the state, so it is
//! deterministic. The compact copy is derived state: never encoded, rebuilt on restore. When an
//! insert changes the parameters (a larger magnitude, the first component with fewer trailing
//! zeros, and so the width), the whole copy is re-quantised before the new records are indexed,
//! so at any sequence number the copy is the same function of the stored vectors.
//!
//! Kernel bounds: wide, a squared difference is below 2^28 and a product at most 2^26, so
//! `madd_epi16` pair sums fit in `i32` and any sum over 4096 dimensions fits in `i64`. Narrow,
//! a squared difference is at most `255^2 < 2^16`, so blocks of 4096 dimensions fit in `i32`
//! lanes.

use alloc::vec::Vec;

use crate::rows::Line;

/// A compact component: `i8` (narrow) or `i16` (wide).
pub trait Component: crate::rows::Plain + Default + Into<i64> {
    /// Components lie in `[-2^LIMIT_BITS, 2^LIMIT_BITS)`.
    const LIMIT_BITS: u32;
    /// The smallest component, `-2^LIMIT_BITS`.
    const LOWEST: Self;
    /// The largest component, `2^LIMIT_BITS - 1`.
    const HIGHEST: Self;
    /// `x`, which lies in the compact range.
    fn from_i32(x: i32) -> Self;
    /// The kernels for `isa`, or for the widest set below it that this CPU offers. All of them
    /// compute the same exact integers, so the choice never changes a result.
    fn kernels_for(isa: Isa) -> CompactKernels<Self>;
    /// The norms a vector's distances by `flipped_dot` need (narrow only; zero when wide).
    fn norms(v: &[Self]) -> Norms;
}

impl Component for i8 {
    const LIMIT_BITS: u32 = 7;
    const LOWEST: i8 = i8::MIN;
    const HIGHEST: i8 = i8::MAX;

    #[inline]
    fn from_i32(x: i32) -> i8 {
        x as i8
    }

    fn kernels_for(isa: Isa) -> CompactKernels<i8> {
        #[cfg(target_arch = "x86_64")]
        {
            let isa = isa.min(best_isa());
            if isa >= Isa::Avx512 {
                return CompactKernels {
                    l2: avx512_i8::l2,
                    dot: avx512_i8::dot,
                    flipped_dot: (isa == Isa::Avx512Vnni).then_some(vnni_i8::flipped_dot as _),
                };
            }
            if isa == Isa::Avx2 {
                return CompactKernels {
                    l2: avx2_i8::l2,
                    dot: avx2_i8::dot,
                    flipped_dot: None,
                };
            }
        }
        let _ = isa;
        CompactKernels {
            l2: l2_scalar,
            dot: dot_scalar,
            flipped_dot: None,
        }
    }

    fn norms(v: &[i8]) -> Norms {
        norms_of(v)
    }
}

impl Component for i16 {
    const LIMIT_BITS: u32 = 13;
    const LOWEST: i16 = -(1 << 13);
    const HIGHEST: i16 = (1 << 13) - 1;

    #[inline]
    fn from_i32(x: i32) -> i16 {
        x as i16
    }

    fn kernels_for(isa: Isa) -> CompactKernels<i16> {
        #[cfg(target_arch = "x86_64")]
        {
            let isa = isa.min(best_isa());
            if isa >= Isa::Avx512 {
                return CompactKernels {
                    l2: avx512_i16::l2,
                    dot: avx512_i16::dot,
                    flipped_dot: None,
                };
            }
            if isa == Isa::Avx2 {
                return CompactKernels {
                    l2: avx2_i16::l2,
                    dot: avx2_i16::dot,
                    flipped_dot: None,
                };
            }
        }
        let _ = isa;
        CompactKernels {
            l2: l2_scalar,
            dot: dot_scalar,
            flipped_dot: None,
        }
    }

    fn norms(_: &[i16]) -> Norms {
        // The wide kernels measure directly; nothing reads a wide copy's norms.
        Norms::default()
    }
}

/// What a narrow vector's distances by [`CompactKernels::flipped_dot`] need besides its
/// components: `square` = sum of `v_i^2`, `sum` = sum of `v_i`. Over at most 4096 components of
/// at most 128 in magnitude both fit `i32`.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct Norms {
    /// Sum of the squared components.
    pub square: i32,
    /// Sum of the components.
    pub sum: i32,
}

/// A narrow vector's [`Norms`].
pub fn norms_of(v: &[i8]) -> Norms {
    let (mut square, mut sum) = (0i32, 0i32);
    for &x in v {
        let x = i32::from(x);
        square += x * x;
        sum += x;
    }
    Norms { square, sum }
}

/// The width of a collection's compact copy.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Width {
    /// `i8` components.
    Narrow,
    /// `i16` components.
    Wide,
}

/// Vectors with fewer components keep a wide copy.
pub const NARROW_MIN_DIM: usize = 64;

/// A compact copy's parameters: a function of the collection's dimension, its largest
/// magnitude and the OR of its components' bits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Params {
    /// Component width.
    pub width: Width,
    /// Right shift from Q16.16.
    pub shift: u32,
    /// Whether the shift loses nothing for every stored component.
    pub exact: bool,
}

impl Params {
    /// The parameters of an empty collection's copy.
    pub const EMPTY: Params = Params {
        width: Width::Wide,
        shift: 0,
        exact: true,
    };
}

/// How many vectors, per 1024, may lie beyond the compact range and be saturated in the copy.
pub const SATURATED_PER_1024: u64 = 1;

/// The compact copy's parameters (see the module documentation for the width rule), from the
/// vectors' dimension, `magnitudes[b]`: how many stored vectors have a largest component of bit
/// length `b`, and the OR of all components' bit patterns.
pub fn params(dim: usize, magnitudes: &[u64; 33], or_bits: u32) -> Params {
    let (shift, exact) = choose::<i16>(magnitudes, or_bits);
    let (narrow_shift, narrow_exact) = choose::<i8>(magnitudes, or_bits);
    if dim < NARROW_MIN_DIM || (exact && !narrow_exact) {
        Params {
            width: Width::Wide,
            shift,
            exact,
        }
    } else {
        Params {
            width: Width::Narrow,
            shift: narrow_shift,
            exact: narrow_exact,
        }
    }
}

/// The shift at width `C`, and whether it is exact. The range covers every vector but the
/// [`SATURATED_PER_1024`] per 1024 with the largest components, so that a rare vector far larger
/// than the rest does not leave them few levels; those few saturate at the range's ends. Their
/// walk distances are then only rough, so a search takes them as candidates whatever its walk
/// found, and re-ranks every candidate by the exact distance. Below 1024 vectors nothing
/// saturates. Exact when nothing saturates and every component has at least `shift` trailing
/// zero bits (`or_bits`).
pub fn choose<C: Component>(magnitudes: &[u64; 33], or_bits: u32) -> (u32, bool) {
    let vectors: u64 = magnitudes.iter().sum();
    let allowed = vectors / 1024 * SATURATED_PER_1024;
    let (mut bits, mut beyond) = (32usize, 0u64);
    while bits > C::LIMIT_BITS as usize && beyond + magnitudes[bits] <= allowed {
        beyond += magnitudes[bits];
        bits -= 1;
    }
    let shift = (bits as u32).saturating_sub(C::LIMIT_BITS);
    (shift, beyond == 0 && or_bits.trailing_zeros() >= shift)
}

/// The bit length of a vector's largest magnitude `max_abs`: its bucket in `magnitudes` (see
/// [`params`]).
pub fn bit_length(max_abs: u32) -> usize {
    (32 - max_abs.leading_zeros()) as usize
}

/// Quantises stored vectors, saturating components beyond the range `shift` was chosen for.
pub fn quantize_into<C: Component>(v: &[i32], shift: u32, out: &mut impl Extend<C>) {
    let (lo, hi) = (C::LOWEST.into() as i32, C::HIGHEST.into() as i32);
    out.extend(v.iter().map(|&x| C::from_i32((x >> shift).clamp(lo, hi))));
}

/// Quantises a stored vector into `out` (of the same length), as [`quantize_into`] does.
pub fn quantize_row<C: Component>(v: &[i32], shift: u32, out: &mut [C]) {
    let (lo, hi) = (C::LOWEST.into() as i32, C::HIGHEST.into() as i32);
    for (o, &x) in out.iter_mut().zip(v) {
        *o = C::from_i32((x >> shift).clamp(lo, hi));
    }
}

/// Quantises a query, whose components may lie beyond every stored one: they are clamped to
/// the compact range, which keeps the kernels' overflow bounds. Returns whether no component
/// needed clamping (only then can compact distances stand for exact ones).
pub fn quantize_query<C: Component>(q: &[i32], shift: u32, out: &mut impl Extend<C>) -> bool {
    let (lo, hi) = (C::LOWEST.into() as i32, C::HIGHEST.into() as i32);
    let mut in_range = true;
    out.extend(q.iter().map(|&x| {
        let c = x >> shift;
        in_range &= (lo..=hi).contains(&c);
        C::from_i32(c.clamp(lo, hi))
    }));
    in_range
}

/// Compact squared L2 distance, portable.
pub fn l2_scalar<C: Component>(a: &[C], b: &[C]) -> i64 {
    let mut acc = 0i64;
    for (&x, &y) in a.iter().zip(b) {
        let d = x.into() - y.into();
        acc += d * d;
    }
    acc
}

/// `sum((a_i + 128) * b_i)`: the dot product of `a` with its sign bits flipped (as unsigned
/// bytes) and `b`, portable: [`CompactKernels::flipped_dot`]'s twin. `dot(a, b)` is this minus
/// `128 * sum(b)`.
pub fn flipped_dot_scalar(a: &[i8], b: &[i8]) -> i64 {
    let mut acc = 0i64;
    for (&x, &y) in a.iter().zip(b) {
        acc += (i64::from(x) + 128) * i64::from(y);
    }
    acc
}

/// Compact dot product, portable.
pub fn dot_scalar<C: Component>(a: &[C], b: &[C]) -> i64 {
    let mut acc = 0i64;
    for (&x, &y) in a.iter().zip(b) {
        acc += x.into() * y.into();
    }
    acc
}

/// The scalar kernels over components `from..`: the SIMD kernels' remainder.
#[cfg(target_arch = "x86_64")]
#[inline]
fn tail<const L2: bool, C: Component>(a: &[C], b: &[C], from: usize) -> i64 {
    let (a, b) = (a.get(from..).unwrap_or(&[]), b.get(from..).unwrap_or(&[]));
    if L2 {
        l2_scalar(a, b)
    } else {
        dot_scalar(a, b)
    }
}

/// The compact kernels chosen for this CPU.
pub struct CompactKernels<C> {
    /// Squared L2.
    pub l2: Kernel<C>,
    /// Dot product.
    pub dot: Kernel<C>,
    /// Where the CPU multiplies unsigned by signed bytes in one instruction (AVX-512 VNNI,
    /// narrow copies): [`flipped_dot_scalar`], from which a distance follows with the two
    /// vectors' [`Norms`] (`l2(a, b) = |a|^2 + |b|^2 - 2 * (flipped_dot(a, b) - 128 * sum(b))`)
    /// in one multiply-add per 64 components instead of the widening kernels' eight operations.
    pub flipped_dot: Option<Kernel<C>>,
}

/// A compact kernel: two vectors to an exact integer.
pub type Kernel<C> = fn(&[C], &[C]) -> i64;

impl<C> Clone for CompactKernels<C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C> Copy for CompactKernels<C> {}

#[cfg(target_arch = "x86_64")]
cpufeatures::new!(avx2_cpuid, "avx2");
#[cfg(target_arch = "x86_64")]
cpufeatures::new!(avx512_cpuid, "avx512f", "avx512bw");

/// Whether the CPU has AVX-512 VNNI (CPUID leaf 7, ECX bit 11); the OS's support for the
/// registers is [`avx512_cpuid`]'s check.
#[cfg(target_arch = "x86_64")]
fn has_vnni() -> bool {
    use core::sync::atomic::{AtomicU8, Ordering};
    static KNOWN: AtomicU8 = AtomicU8::new(0);
    match KNOWN.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            // Leaf 7 is valid to ask for on any x86-64 CPU (an unsupported leaf reads as zeros).
            let ecx = core::arch::x86_64::__cpuid_count(7, 0).ecx;
            let yes = avx512_cpuid::get() && ecx & (1 << 11) != 0;
            KNOWN.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
    }
}

/// Instruction sets a compact kernel can use, widest last.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Isa {
    /// Portable Rust.
    Scalar,
    /// x86-64 AVX2.
    Avx2,
    /// x86-64 AVX-512 (F and BW).
    Avx512,
    /// x86-64 AVX-512 (F and BW) with VNNI.
    Avx512Vnni,
}

/// The widest instruction set this CPU offers (and its OS enables).
pub fn best_isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if has_vnni() {
            return Isa::Avx512Vnni;
        }
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
pub fn kernels_with<C: Component>(force_scalar: bool) -> CompactKernels<C> {
    C::kernels_for(if force_scalar {
        Isa::Scalar
    } else {
        best_isa()
    })
}

/// Hints the CPU to start loading `v` (x86-64 only; a no-op elsewhere): every 64-byte line of
/// it, up to 512 bytes. Used for compact vectors and neighbour lists.
#[inline(always)]
pub fn prefetch<T>(v: &[T]) {
    prefetch_lines(v, 8);
}

/// [`prefetch`] of up to `max` lines.
#[inline(always)]
pub fn prefetch_lines<T>(v: &[T], max: usize) {
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = v.as_ptr().cast::<i8>();
        let lines = core::mem::size_of_val(v).div_ceil(64).min(max);
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
mod avx2_i16 {
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
        _mm_cvtsi128_si64(s) + super::tail::<L2, _>(a, b, i)
    }
}

/// `_mm512_madd_epi16` as in the AVX2 kernel, 32 lanes wide. A pair sum is at most
/// `2 * (2^14 - 1)^2 < 2^29`, so four chunks (128 dimensions) accumulate in `i32` lanes
/// (`< 2^31 - 2^18`) before widening into `i64` lanes. Sums are exact, so the result equals the
/// scalar kernel's.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512_i16 {
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
        _mm512_reduce_add_epi64(acc) + super::tail::<L2, _>(a, b, i)
    }
}

/// The SIMD kernels take at most this many dimensions into their `i32` lanes before adding
/// them into an `i64`: a block's whole sum is at most `4096 * 255^2 < 2^28`.
#[cfg(target_arch = "x86_64")]
const BLOCK: usize = 4096;

/// Sixteen `i8` pairs at a time: each widened to `i16` (`_mm256_cvtepi8_epi16`), then
/// `_mm256_madd_epi16` multiplies them and adds adjacent products into eight `i32` lanes. Within
/// a [`BLOCK`] the lanes cannot overflow, so sums are exact and equal the scalar kernel's.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2_i8 {
    use super::BLOCK;
    use core::arch::x86_64::*;

    pub fn l2(a: &[i8], b: &[i8]) -> i64 {
        // SAFETY: only selected after runtime detection of AVX2.
        unsafe { run::<true>(a, b) }
    }

    pub fn dot(a: &[i8], b: &[i8]) -> i64 {
        // SAFETY: only selected after runtime detection of AVX2.
        unsafe { run::<false>(a, b) }
    }

    /// Sixteen components at `i` of both slices, squared differences or products, pair-summed.
    ///
    /// # Safety
    /// `i + 16` must not exceed either slice's length.
    #[target_feature(enable = "avx2")]
    unsafe fn chunk<const L2: bool>(pa: *const i8, pb: *const i8, i: usize) -> __m256i {
        // SAFETY: the caller keeps i + 16 within both slices.
        let (va, vb) = unsafe {
            (
                _mm256_cvtepi8_epi16(_mm_loadu_si128(pa.add(i).cast())),
                _mm256_cvtepi8_epi16(_mm_loadu_si128(pb.add(i).cast())),
            )
        };
        if L2 {
            let d = _mm256_sub_epi16(va, vb);
            _mm256_madd_epi16(d, d)
        } else {
            _mm256_madd_epi16(va, vb)
        }
    }

    #[target_feature(enable = "avx2")]
    fn sum_lanes(v: __m256i) -> i64 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01>(s));
        i64::from(_mm_cvtsi128_si32(s))
    }

    #[target_feature(enable = "avx2")]
    unsafe fn run<const L2: bool>(a: &[i8], b: &[i8]) -> i64 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut sum = 0i64;
        let mut i = 0;
        while i + 16 <= n {
            let end = (i + BLOCK).min(n);
            let (mut acc0, mut acc1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            while i + 32 <= end {
                // SAFETY: i + 32 <= end <= n.
                unsafe {
                    acc0 = _mm256_add_epi32(acc0, chunk::<L2>(pa, pb, i));
                    acc1 = _mm256_add_epi32(acc1, chunk::<L2>(pa, pb, i + 16));
                }
                i += 32;
            }
            if i + 16 <= end {
                // SAFETY: i + 16 <= end <= n.
                acc0 = _mm256_add_epi32(acc0, unsafe { chunk::<L2>(pa, pb, i) });
                i += 16;
            }
            sum += sum_lanes(_mm256_add_epi32(acc0, acc1));
        }
        sum + super::tail::<L2, _>(a, b, i)
    }
}

/// As the AVX2 kernel, 32 components at a time (`_mm512_cvtepi8_epi16`,
/// `_mm512_madd_epi16` into sixteen `i32` lanes).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512_i8 {
    use super::BLOCK;
    use core::arch::x86_64::*;

    pub fn l2(a: &[i8], b: &[i8]) -> i64 {
        // SAFETY: only selected after runtime detection of AVX-512 F and BW.
        unsafe { run::<true>(a, b) }
    }

    pub fn dot(a: &[i8], b: &[i8]) -> i64 {
        // SAFETY: only selected after runtime detection of AVX-512 F and BW.
        unsafe { run::<false>(a, b) }
    }

    /// Thirty-two components at `i` of both slices, squared differences or products,
    /// pair-summed.
    ///
    /// # Safety
    /// `i + 32` must not exceed either slice's length.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn chunk<const L2: bool>(pa: *const i8, pb: *const i8, i: usize) -> __m512i {
        // SAFETY: the caller keeps i + 32 within both slices.
        let (va, vb) = unsafe {
            (
                _mm512_cvtepi8_epi16(_mm256_loadu_si256(pa.add(i).cast())),
                _mm512_cvtepi8_epi16(_mm256_loadu_si256(pb.add(i).cast())),
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
    unsafe fn run<const L2: bool>(a: &[i8], b: &[i8]) -> i64 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut sum = 0i64;
        let mut i = 0;
        while i + 32 <= n {
            let end = (i + BLOCK).min(n);
            let (mut acc0, mut acc1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            while i + 64 <= end {
                // SAFETY: i + 64 <= end <= n.
                unsafe {
                    acc0 = _mm512_add_epi32(acc0, chunk::<L2>(pa, pb, i));
                    acc1 = _mm512_add_epi32(acc1, chunk::<L2>(pa, pb, i + 32));
                }
                i += 64;
            }
            if i + 32 <= end {
                // SAFETY: i + 32 <= end <= n.
                acc0 = _mm512_add_epi32(acc0, unsafe { chunk::<L2>(pa, pb, i) });
                i += 32;
            }
            sum += i64::from(_mm512_reduce_add_epi32(_mm512_add_epi32(acc0, acc1)));
        }
        sum + super::tail::<L2, _>(a, b, i)
    }
}

/// [`flipped_dot_scalar`] with AVX-512 VNNI: `_mm512_dpbusd_epi32` multiplies 64 unsigned bytes
/// (`a` with its sign bits flipped, `a_i + 128`, in 0..=255) by 64 signed bytes of `b` and adds
/// each four adjacent products into sixteen `i32` lanes. A lane gains at most
/// `4 * 255 * 128 < 2^17` per step, so over 4096 components (64 steps) it stays below 2^23: the
/// sum is exact and equals the scalar kernel's.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod vnni_i8 {
    use core::arch::x86_64::*;

    pub fn flipped_dot(a: &[i8], b: &[i8]) -> i64 {
        // SAFETY: only selected after runtime detection of AVX-512 F, BW and VNNI.
        unsafe { run(a, b) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn run(a: &[i8], b: &[i8]) -> i64 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let flip = _mm512_set1_epi8(i8::MIN);
        let (mut acc0, mut acc1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
        let mut i = 0;
        // SAFETY (all loads): each reads 64 bytes at most `n` from both slices' starts.
        while i + 128 <= n {
            unsafe {
                let a0 = _mm512_xor_si512(_mm512_loadu_si512(pa.add(i).cast()), flip);
                let a1 = _mm512_xor_si512(_mm512_loadu_si512(pa.add(i + 64).cast()), flip);
                acc0 = _mm512_dpbusd_epi32(acc0, a0, _mm512_loadu_si512(pb.add(i).cast()));
                acc1 = _mm512_dpbusd_epi32(acc1, a1, _mm512_loadu_si512(pb.add(i + 64).cast()));
            }
            i += 128;
        }
        if i + 64 <= n {
            unsafe {
                let a0 = _mm512_xor_si512(_mm512_loadu_si512(pa.add(i).cast()), flip);
                acc0 = _mm512_dpbusd_epi32(acc0, a0, _mm512_loadu_si512(pb.add(i).cast()));
            }
            i += 64;
        }
        let head = i64::from(_mm512_reduce_add_epi32(_mm512_add_epi32(acc0, acc1)));
        head + super::flipped_dot_scalar(a.get(i..n).unwrap_or(&[]), b.get(i..n).unwrap_or(&[]))
    }
}

/// A growable run of compact components whose first byte is aligned to a cache line (64
/// bytes): a query's compact form, placed like the walk copy's rows ([`crate::rows::Rows`]), so
/// that every row of a dimension whose row length is a multiple of 64 bytes (128,
/// 384, 768, 1536 ... components, at either width) starts on a line of its own. A kernel's
/// 32- or 64-byte loads then never straddle two lines; from a plain `Vec` whose data starts
/// 16 bytes into a page, each row of 128 narrow components spans three lines instead of two.
/// Only the placement differs from a `Vec<C>`: reads see the same slice.
#[derive(Clone)]
pub(crate) struct Lines<C: Component> {
    lines: Vec<Line>,
    len: usize,
    _component: core::marker::PhantomData<C>,
}

impl<C: Component> Lines<C> {
    /// Empty. Panics unless `C` is `i8` or `i16`: plain integers for which every byte pattern,
    /// zero included, is a value, and whose size divides a line.
    pub(crate) fn new() -> Self {
        use core::any::TypeId;
        assert!(
            TypeId::of::<C>() == TypeId::of::<i8>() || TypeId::of::<C>() == TypeId::of::<i16>(),
            "compact components are i8 or i16"
        );
        Lines {
            lines: Vec::new(),
            len: 0,
            _component: core::marker::PhantomData,
        }
    }

    fn per_line() -> usize {
        64 / core::mem::size_of::<C>()
    }

    /// Appends one component.
    #[inline]
    #[allow(unsafe_code)]
    pub(crate) fn push(&mut self, x: C) {
        if self.len == self.lines.len() * Self::per_line() {
            self.lines.push(Line([0; 64]));
        }
        // SAFETY: `len` is below the lines' capacity in components (just ensured), the storage
        // is aligned for `C` (64 bytes) and `C` is a plain integer (`new`).
        unsafe { (self.lines.as_mut_ptr() as *mut C).add(self.len).write(x) };
        self.len += 1;
    }
}

impl<C: Component> Default for Lines<C> {
    fn default() -> Self {
        Lines::new()
    }
}

impl<C: Component> core::ops::Deref for Lines<C> {
    type Target = [C];

    #[inline]
    #[allow(unsafe_code)]
    fn deref(&self) -> &[C] {
        // SAFETY: the first `len` components of the lines were written by `push`; the storage
        // is aligned for `C` and outlives the borrow.
        unsafe { core::slice::from_raw_parts(self.lines.as_ptr() as *const C, self.len) }
    }
}

impl<C: Component> Extend<C> for Lines<C> {
    fn extend<I: IntoIterator<Item = C>>(&mut self, iter: I) {
        let iter = iter.into_iter();
        let more = iter.size_hint().0;
        let want = (self.len + more).div_ceil(Self::per_line());
        self.lines.reserve(want.saturating_sub(self.lines.len()));
        for x in iter {
            self.push(x);
        }
    }
}

impl<C: Component + PartialEq> PartialEq for Lines<C> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<C: Component + Eq> Eq for Lines<C> {}

impl<C: Component + core::fmt::Debug> core::fmt::Debug for Lines<C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Lines").field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Lines` reads back exactly what was appended, like a `Vec`, from storage aligned to a
    /// cache line, also after a clone.
    #[test]
    fn lines_are_aligned_and_read_like_a_vec() {
        let v: Vec<i16> = (0..1000).map(|i| (i * 37 % 601) as i16 - 300).collect();
        let mut lines: Lines<i16> = Lines::new();
        quantize_into(
            &v.iter().map(|&x| i32::from(x)).collect::<Vec<_>>(),
            0,
            &mut lines,
        );
        assert_eq!(&*lines, &v[..]);
        assert_eq!(lines.as_ptr() as usize % 64, 0);
        lines.push(5);
        assert_eq!((lines.len(), lines[1000]), (1001, 5));
        let copy = lines.clone();
        assert_eq!(copy, lines);
        assert_eq!(copy.as_ptr() as usize % 64, 0);
        let mut narrow: Lines<i8> = Lines::default();
        narrow.extend([1i8, -2, 3]);
        assert_eq!(&*narrow, &[1, -2, 3]);
        assert_eq!(narrow.as_ptr() as usize % 64, 0);
    }
}
