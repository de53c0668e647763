//! Q16.16 fixed point: the only place where floating-point values enter the kernel.
//!
//! A [`Fixed`] is an `i32` holding `value * 2^16`. Conversion from `f32`/`f64` works on the
//! IEEE-754 bit pattern with integer arithmetic only, so it is exact and identical on every
//! platform:
//!
//! - NaN and the infinities are rejected ([`FixedError::NotFinite`]).
//! - The value is scaled by 2^16 exactly and rounded to the nearest integer, ties to even
//!   (so `0.5 / 65536` rounds to 0 and `1.5 / 65536` to 2 raw units).
//! - If the rounded value does not fit in an `i32` it is rejected ([`FixedError::OutOfRange`]);
//!   nothing is ever clamped. The representable range is `[-32768, 32767.9999847412109375]`.
//! - `-0.0` becomes 0.

use core::fmt;

/// Number of fraction bits.
pub const FRAC_BITS: u32 = 16;

/// A Q16.16 fixed-point number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Fixed(pub i32);

/// Why a float could not become a [`Fixed`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FixedError {
    /// NaN, +infinity or -infinity.
    NotFinite,
    /// The value rounds to something outside `[-32768, 32768 - 2^-16]`.
    OutOfRange,
}

impl fmt::Display for FixedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FixedError::NotFinite => f.write_str("value is NaN or infinite"),
            FixedError::OutOfRange => {
                f.write_str("value is outside the Q16.16 range [-32768, 32767.99998474]")
            }
        }
    }
}

impl core::error::Error for FixedError {}

impl fmt::Debug for Fixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fixed({:#x})", self.0)
    }
}

impl Fixed {
    /// 1.0
    pub const ONE: Fixed = Fixed(1 << FRAC_BITS);
    /// The smallest value, -32768.0.
    pub const MIN: Fixed = Fixed(i32::MIN);
    /// The largest value, 32768 - 2^-16.
    pub const MAX: Fixed = Fixed(i32::MAX);

    /// The raw `i32` (value times 2^16).
    pub const fn raw(self) -> i32 {
        self.0
    }

    /// Converts an `f32` exactly (see the module documentation for the rules).
    #[inline]
    pub fn from_f32(x: f32) -> Result<Fixed, FixedError> {
        let bits = x.to_bits();
        let negative = bits >> 31 == 1;
        let exponent = (bits >> 23) & 0xff;
        let fraction = u64::from(bits & 0x7f_ffff);
        match exponent {
            0xff => Err(FixedError::NotFinite),
            // Subnormal: fraction * 2^-149.
            0 => from_parts(negative, fraction, -149),
            // Normal: (2^23 + fraction) * 2^(exponent - 127 - 23).
            e => from_parts(negative, fraction | 1 << 23, e as i32 - 150),
        }
    }

    /// Converts an `f64` exactly (see the module documentation for the rules).
    pub fn from_f64(x: f64) -> Result<Fixed, FixedError> {
        let bits = x.to_bits();
        let negative = bits >> 63 == 1;
        let exponent = ((bits >> 52) & 0x7ff) as u32;
        let fraction = bits & 0xf_ffff_ffff_ffff;
        match exponent {
            0x7ff => Err(FixedError::NotFinite),
            0 => from_parts(negative, fraction, -1074),
            e => from_parts(negative, fraction | 1 << 52, e as i32 - 1075),
        }
    }

    /// The value as an `f64`. Exact: every Q16.16 value is representable in an `f64`.
    /// This is an output convenience; nothing in the kernel computes with it.
    #[allow(clippy::float_arithmetic)]
    pub fn to_f64(self) -> f64 {
        // Both operands are exact and the quotient is a dyadic rational with at most 47
        // significant bits, so the division is exact.
        f64::from(self.0) / 65536.0
    }
}

/// Converts `(-1)^negative * mantissa * 2^exp2` to Q16.16, rounding half to even.
/// `mantissa < 2^53`.
#[inline]
fn from_parts(negative: bool, mantissa: u64, exp2: i32) -> Result<Fixed, FixedError> {
    if mantissa == 0 {
        return Ok(Fixed(0));
    }
    // The raw value is mantissa * 2^(exp2 + 16).
    let shift = exp2 + FRAC_BITS as i32;
    let magnitude: u64 = if shift >= 0 {
        // mantissa >= 1, so a shift of 32 or more gives at least 2^32: out of range. Below
        // that, any bit at or above position 63 - shift would also land at 2^63 or beyond.
        if shift >= 32 || mantissa >> (63 - shift) != 0 {
            return Err(FixedError::OutOfRange);
        }
        mantissa << shift
    } else {
        let right = shift.unsigned_abs();
        // mantissa < 2^53, so beyond 54 bits of right shift the value is below one half.
        if right > 54 {
            0
        } else {
            let quotient = mantissa >> right;
            let remainder = mantissa & ((1u64 << right) - 1);
            let half = 1u64 << (right - 1);
            // Without branches: whether a value rounds up is as good as random.
            let up = (remainder > half) | ((remainder == half) & (quotient & 1 == 1));
            quotient + u64::from(up)
        }
    };
    // At most 2^31 below zero, 2^31 - 1 above.
    if magnitude > (1 << 31) - u64::from(!negative) {
        return Err(FixedError::OutOfRange);
    }
    let signed = magnitude as i64;
    Ok(Fixed(if negative { -signed } else { signed } as i32))
}

/// Converts a slice of `f32` into Q16.16, reporting the index of the first bad component.
pub fn vector_from_f32(values: &[f32]) -> Result<alloc::vec::Vec<Fixed>, (usize, FixedError)> {
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| Fixed::from_f32(v).map_err(|e| (i, e)))
        .collect()
}

#[cfg(test)]
#[allow(clippy::float_arithmetic)]
mod tests {
    use super::*;

    fn check(x: f32, expected: Result<i32, FixedError>) {
        assert_eq!(Fixed::from_f32(x).map(Fixed::raw), expected, "f32 {x:e}");
        assert_eq!(
            Fixed::from_f64(f64::from(x)).map(Fixed::raw),
            expected,
            "f64 {x:e}"
        );
    }

    #[test]
    fn conversion_cases() {
        check(0.0, Ok(0));
        check(-0.0, Ok(0));
        check(1.0, Ok(65536));
        check(-1.0, Ok(-65536));
        check(0.5, Ok(32768));
        check(1.0 / 65536.0, Ok(1));
        // Exactly half a unit: ties to even.
        check(0.5 / 65536.0, Ok(0));
        check(1.5 / 65536.0, Ok(2));
        check(2.5 / 65536.0, Ok(2));
        check(-1.5 / 65536.0, Ok(-2));
        check(-2.5 / 65536.0, Ok(-2));
        // Just above half a unit rounds up.
        check(f32::from_bits((0.5f32 / 65536.0).to_bits() + 1), Ok(1));
        check(f32::MIN_POSITIVE, Ok(0));
        check(f32::from_bits(1), Ok(0));
        check(-32768.0, Ok(i32::MIN));
        check(32767.0, Ok(32767 * 65536));
        check(32768.0, Err(FixedError::OutOfRange));
        check(-32769.0, Err(FixedError::OutOfRange));
        check(1e30, Err(FixedError::OutOfRange));
        check(f32::MAX, Err(FixedError::OutOfRange));
        check(f32::NAN, Err(FixedError::NotFinite));
        check(f32::INFINITY, Err(FixedError::NotFinite));
        check(f32::NEG_INFINITY, Err(FixedError::NotFinite));
    }

    #[test]
    fn f64_edges() {
        // The largest representable value converts exactly; one ulp of Q16.16 above it does not.
        let max = 32768.0 - 1.0 / 65536.0;
        assert_eq!(Fixed::from_f64(max), Ok(Fixed::MAX));
        // Rounds up to 2^31: out of range, never clamped.
        assert_eq!(
            Fixed::from_f64(max + 0.75 / 65536.0),
            Err(FixedError::OutOfRange)
        );
        // Rounds down to MAX.
        assert_eq!(Fixed::from_f64(max + 0.25 / 65536.0), Ok(Fixed::MAX));
        assert_eq!(
            Fixed::from_f64(-32768.0 - 1.0 / 65536.0),
            Err(FixedError::OutOfRange)
        );
        assert_eq!(Fixed::from_f64(-32768.0 - 0.4 / 65536.0), Ok(Fixed::MIN));
        assert_eq!(Fixed::from_f64(f64::NAN), Err(FixedError::NotFinite));
        assert_eq!(Fixed::from_f64(f64::MIN_POSITIVE), Ok(Fixed(0)));
    }

    #[test]
    fn round_trip_to_f64() {
        for raw in [i32::MIN, -65536, -1, 0, 1, 12345, i32::MAX] {
            assert_eq!(Fixed::from_f64(Fixed(raw).to_f64()), Ok(Fixed(raw)));
        }
    }
}
