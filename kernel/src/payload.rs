//! Payloads: JSON objects with one canonical form, compared exactly.
//!
//! A [`Payload`] is a JSON object whose keys are sorted and unique (a `BTreeMap`, ordered by
//! the keys' bytes). Numbers are either [`Value::Int`] (an `i64`) or [`Value::Float`] (the IEEE
//! 754 bits of a finite `f64`). A float with an integral value in `i64` range is always stored
//! as that integer, so `10` and `10.0` are one value; NaN, the infinities and `-0.0` are
//! refused (`-0.0` would be a second zero). [`Value::float`] is the only way a float gets in.
//! Comparisons ([`cmp_numbers`]) are exact on the integers and the bits: no float arithmetic.
//!
//! Encoding (inside events and the state): one type byte, then `null` nothing, `bool` one
//! byte, `int` 8 bytes LE, `float` its 8 bytes LE, `string` u32 length and bytes, `array` u32
//! count and values, `object` u32 count and (key, value) pairs in key order. A payload is at
//! most [`MAX_PAYLOAD_BYTES`] encoded and [`MAX_PAYLOAD_DEPTH`] containers deep.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::cmp::Ordering;

use crate::codec::{DecodeError, Reader, Sink};
use crate::limits::{MAX_PAYLOAD_BYTES, MAX_PAYLOAD_DEPTH};

/// A JSON value in canonical form.
#[derive(Clone, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer, and any float with an integral value in `i64` range.
    Int(i64),
    /// The IEEE 754 bits of a finite, non-integral (or out of `i64` range) `f64`; never `-0.0`.
    Float(u64),
    /// A UTF-8 string.
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object with sorted, unique keys.
    Object(Payload),
}

/// A payload: a JSON object in canonical form.
pub type Payload = BTreeMap<String, Value>;

/// Why a value cannot be a payload value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PayloadError {
    /// NaN or an infinity.
    NotFinite,
    /// `-0.0`.
    NegativeZero,
    /// Nested deeper than [`MAX_PAYLOAD_DEPTH`].
    TooDeep,
    /// Encoded larger than [`MAX_PAYLOAD_BYTES`].
    TooLarge(u64),
}

impl core::fmt::Display for PayloadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PayloadError::NotFinite => f.write_str("NaN and infinities are not allowed"),
            PayloadError::NegativeZero => f.write_str("-0.0 is not allowed (write 0)"),
            PayloadError::TooDeep => write!(f, "nested deeper than {MAX_PAYLOAD_DEPTH} levels"),
            PayloadError::TooLarge(n) => {
                write!(f, "{n} bytes encoded, the limit is {MAX_PAYLOAD_BYTES}")
            }
        }
    }
}

const SIGN: u64 = 1 << 63;
const EXP_MASK: u64 = 0x7ff;
const FRACTION: u64 = (1 << 52) - 1;

/// The exact integer value of finite float bits, when it is integral and fits an `i64`.
fn integral(bits: u64) -> Option<i64> {
    let negative = bits & SIGN != 0;
    let exp = ((bits >> 52) & EXP_MASK) as i32;
    if bits & !SIGN == 0 {
        return Some(0);
    }
    let e = exp - 1023;
    if e < 0 {
        return None;
    }
    let mantissa = (bits & FRACTION) | (1 << 52);
    let magnitude: u64 = if e <= 52 {
        let drop = (52 - e) as u32;
        if mantissa & ((1u64 << drop) - 1) != 0 {
            return None;
        }
        mantissa >> drop
    } else if e <= 63 {
        mantissa << (e - 52)
    } else {
        return None;
    };
    if negative {
        if magnitude <= SIGN {
            Some((magnitude as i64).wrapping_neg())
        } else {
            None
        }
    } else {
        i64::try_from(magnitude).ok()
    }
}

impl Value {
    /// The canonical value of a float given by its bits: an integer when it has an integral
    /// value in `i64` range, else the float; NaN, infinities and `-0.0` are refused.
    pub fn float(bits: u64) -> Result<Value, PayloadError> {
        if (bits >> 52) & EXP_MASK == EXP_MASK {
            return Err(PayloadError::NotFinite);
        }
        if bits == SIGN {
            return Err(PayloadError::NegativeZero);
        }
        Ok(match integral(bits) {
            Some(i) => Value::Int(i),
            None => Value::Float(bits),
        })
    }

    /// The JSON type's name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    /// The number this value is, if it is one.
    pub fn number(&self) -> Option<Number> {
        match self {
            Value::Int(i) => Some(Number::Int(*i)),
            Value::Float(b) => Some(Number::Float(*b)),
            _ => None,
        }
    }

    fn encode(&self, out: &mut impl Sink) {
        match self {
            Value::Null => out.put_u8(0),
            Value::Bool(b) => {
                out.put_u8(1);
                out.put_u8(u8::from(*b));
            }
            Value::Int(i) => {
                out.put_u8(2);
                out.put(&i.to_le_bytes());
            }
            Value::Float(bits) => {
                out.put_u8(3);
                out.put_u64(*bits);
            }
            Value::String(s) => {
                out.put_u8(4);
                out.put_bytes(s.as_bytes());
            }
            Value::Array(items) => {
                out.put_u8(5);
                out.put_u32(items.len() as u32);
                for v in items {
                    v.encode(out);
                }
            }
            Value::Object(map) => {
                out.put_u8(6);
                encode_object(map, out);
            }
        }
    }

    fn decode(r: &mut Reader<'_>, depth: u32) -> Result<Value, DecodeError> {
        Ok(match r.u8()? {
            0 => Value::Null,
            1 => match r.u8()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                _ => return Err(DecodeError::Invalid("payload bool")),
            },
            2 => Value::Int(r.u64()? as i64),
            3 => {
                let bits = r.u64()?;
                match Value::float(bits) {
                    Ok(Value::Float(b)) => Value::Float(b),
                    _ => return Err(DecodeError::Invalid("payload float not canonical")),
                }
            }
            4 => Value::String(r.string("payload string", MAX_PAYLOAD_BYTES)?),
            5 => {
                check_depth(depth + 1)?;
                let n = r.count("payload array", MAX_PAYLOAD_BYTES, 1)?;
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(Value::decode(r, depth + 1)?);
                }
                Value::Array(items)
            }
            6 => {
                check_depth(depth + 1)?;
                Value::Object(decode_object(r, depth + 1)?)
            }
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "payload value",
                    tag,
                })
            }
        })
    }

    /// Containers nested in this value, itself included.
    fn depth(&self) -> u32 {
        match self {
            Value::Array(items) => 1 + items.iter().map(Value::depth).max().unwrap_or(0),
            Value::Object(map) => 1 + map.values().map(Value::depth).max().unwrap_or(0),
            _ => 0,
        }
    }
}

fn check_depth(depth: u32) -> Result<(), DecodeError> {
    if depth > MAX_PAYLOAD_DEPTH {
        Err(DecodeError::Invalid("payload nested too deep"))
    } else {
        Ok(())
    }
}

fn encode_object(map: &Payload, out: &mut impl Sink) {
    out.put_u32(map.len() as u32);
    for (k, v) in map {
        out.put_bytes(k.as_bytes());
        v.encode(out);
    }
}

fn decode_object(r: &mut Reader<'_>, depth: u32) -> Result<Payload, DecodeError> {
    // A pair takes at least 4 (key length) + 1 (value type) bytes.
    let n = r.count("payload object", MAX_PAYLOAD_BYTES, 5)?;
    let mut map = Payload::new();
    for _ in 0..n {
        let key = r.string("payload key", MAX_PAYLOAD_BYTES)?;
        if map.keys().next_back().is_some_and(|last| *last >= key) {
            return Err(DecodeError::Invalid("payload keys out of order"));
        }
        let value = Value::decode(r, depth)?;
        map.insert(key, value);
    }
    Ok(map)
}

/// Counts bytes instead of storing them.
struct Counter(u64);

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len() as u64;
    }
}

/// The encoded size of a payload.
pub fn encoded_len(payload: &Payload) -> u64 {
    let mut c = Counter(0);
    encode_object(payload, &mut c);
    c.0
}

/// Checks a payload's size and depth (its values are canonical by construction).
pub fn check(payload: &Payload) -> Result<(), PayloadError> {
    if 1 + payload.values().map(Value::depth).max().unwrap_or(0) > MAX_PAYLOAD_DEPTH {
        return Err(PayloadError::TooDeep);
    }
    let len = encoded_len(payload);
    if len > u64::from(MAX_PAYLOAD_BYTES) {
        return Err(PayloadError::TooLarge(len));
    }
    Ok(())
}

/// Appends a payload's canonical encoding.
pub fn encode(payload: &Payload, out: &mut impl Sink) {
    encode_object(payload, out);
}

/// Decodes [`encode`]'s output, checking canonical form, depth and size.
pub fn decode(r: &mut Reader<'_>) -> Result<Payload, DecodeError> {
    let before = r.remaining();
    let map = decode_object(r, 1)?;
    if (before - r.remaining()) as u64 > u64::from(MAX_PAYLOAD_BYTES) {
        return Err(DecodeError::TooLong {
            what: "payload",
            len: (before - r.remaining()) as u64,
            max: u64::from(MAX_PAYLOAD_BYTES),
        });
    }
    Ok(map)
}

/// A payload value, boxed for storage beside a record (most records have none).
pub type Stored = Box<Payload>;

/// A number of a payload or a filter: exact.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Number {
    /// An integer.
    Int(i64),
    /// The bits of a finite float.
    Float(u64),
}

/// The floor of finite float bits, saturated to the `i64` range, and whether it had a
/// fraction.
fn floor_parts(bits: u64) -> (i128, bool) {
    let negative = bits & SIGN != 0;
    let exp = ((bits >> 52) & EXP_MASK) as i32;
    if bits & !SIGN == 0 {
        return (0, false);
    }
    let e = exp - 1023;
    let mantissa = u128::from((bits & FRACTION) | if exp == 0 { 0 } else { 1 << 52 });
    let (trunc, frac): (u128, bool) = if e < 0 {
        (0, true)
    } else if e <= 52 {
        let drop = (52 - e) as u32;
        (mantissa >> drop, mantissa & ((1u128 << drop) - 1) != 0)
    } else if e < 100 {
        (mantissa << (e - 52), false)
    } else {
        // Beyond 2^100: larger than any i64 either way.
        (1u128 << 100, false)
    };
    let trunc = trunc as i128;
    if negative {
        (if frac { -trunc - 1 } else { -trunc }, frac)
    } else {
        (trunc, frac)
    }
}

/// Total order of finite float bits (not NaN).
fn float_key(bits: u64) -> u64 {
    if bits & SIGN != 0 {
        !bits
    } else {
        bits | SIGN
    }
}

/// Exact comparison of two numbers.
pub fn cmp_numbers(a: Number, b: Number) -> Ordering {
    match (a, b) {
        (Number::Int(x), Number::Int(y)) => x.cmp(&y),
        // -0.0 and 0.0 compare equal (neither is stored, but be exact anyway).
        (Number::Float(x), Number::Float(y)) => float_key(zero(x)).cmp(&float_key(zero(y))),
        (Number::Int(x), Number::Float(f)) => cmp_int_float(x, f),
        (Number::Float(f), Number::Int(x)) => cmp_int_float(x, f).reverse(),
    }
}

fn zero(bits: u64) -> u64 {
    if bits & !SIGN == 0 {
        0
    } else {
        bits
    }
}

fn cmp_int_float(x: i64, f: u64) -> Ordering {
    let (floor, frac) = floor_parts(f);
    let x = i128::from(x);
    match x.cmp(&floor) {
        Ordering::Equal if frac => Ordering::Less,
        other => other,
    }
}

#[cfg(test)]
#[allow(clippy::float_arithmetic)]
mod tests {
    use super::*;
    use alloc::vec;

    fn bits(x: f64) -> u64 {
        x.to_bits()
    }

    #[test]
    fn integral_floats_become_integers_and_others_stay_floats() {
        assert_eq!(Value::float(bits(10.0)), Ok(Value::Int(10)));
        assert_eq!(Value::float(bits(-3.0)), Ok(Value::Int(-3)));
        assert_eq!(Value::float(bits(0.0)), Ok(Value::Int(0)));
        assert_eq!(
            Value::float(bits(-9_223_372_036_854_775_808.0)),
            Ok(Value::Int(i64::MIN))
        );
        // 2^63 is beyond i64.
        assert_eq!(
            Value::float(bits(9_223_372_036_854_775_808.0)),
            Ok(Value::Float(bits(9_223_372_036_854_775_808.0)))
        );
        assert_eq!(Value::float(bits(0.5)), Ok(Value::Float(bits(0.5))));
        assert_eq!(Value::float(bits(-2.5)), Ok(Value::Float(bits(-2.5))));
        assert_eq!(Value::float(bits(1e-310)), Ok(Value::Float(bits(1e-310))));
        assert_eq!(Value::float(bits(f64::NAN)), Err(PayloadError::NotFinite));
        assert_eq!(
            Value::float(bits(f64::INFINITY)),
            Err(PayloadError::NotFinite)
        );
        assert_eq!(Value::float(bits(-0.0)), Err(PayloadError::NegativeZero));
        assert_eq!(
            Value::float(bits(4503599627370497.0)),
            Ok(Value::Int(4503599627370497))
        );
    }

    #[test]
    fn numbers_compare_exactly_across_integers_and_floats() {
        let samples: [f64; 14] = [
            -1e300, -9.3e18, -2.5, -2.0, -1.0, -0.5, -1e-310, 0.0, 1e-310, 0.5, 2.0, 2.5, 9.3e18,
            1e300,
        ];
        let num = |x: f64| match Value::float(x.to_bits()).unwrap() {
            Value::Int(i) => Number::Int(i),
            Value::Float(b) => Number::Float(b),
            _ => unreachable!(),
        };
        for &a in &samples {
            for &b in &samples {
                assert_eq!(
                    cmp_numbers(num(a), num(b)),
                    a.partial_cmp(&b).unwrap(),
                    "{a} vs {b}"
                );
                // An integer against a float, both ways.
                for i in [-3i64, -2, 0, 2, 3, i64::MAX, i64::MIN] {
                    let exact = (i as i128 as f64).partial_cmp(&b).unwrap();
                    // i64 values near the ends are not exact as f64: compare only safe ones.
                    if i.unsigned_abs() < (1 << 52) {
                        assert_eq!(cmp_numbers(Number::Int(i), num(b)), exact, "{i} vs {b}");
                        assert_eq!(cmp_numbers(num(b), Number::Int(i)), exact.reverse());
                    }
                }
            }
        }
        assert_eq!(
            cmp_numbers(Number::Int(i64::MAX), num(9.3e18)),
            Ordering::Less
        );
        assert_eq!(
            cmp_numbers(Number::Int(i64::MIN), num(-9.3e18)),
            Ordering::Greater
        );
    }

    #[test]
    fn payloads_round_trip_and_refuse_non_canonical_input() {
        let mut inner = Payload::new();
        inner.insert("x".into(), Value::Float(bits(0.25)));
        let mut p = Payload::new();
        p.insert("a".into(), Value::Array(vec![Value::Int(1), Value::Null]));
        p.insert("b".into(), Value::Object(inner));
        p.insert("c".into(), Value::String("ü".into()));
        p.insert("d".into(), Value::Bool(true));
        let mut buf = Vec::new();
        encode(&p, &mut buf);
        assert_eq!(buf.len() as u64, encoded_len(&p));
        let mut r = Reader::new(&buf);
        assert_eq!(decode(&mut r).unwrap(), p);
        r.finish().unwrap();
        // An integral float where an integer belongs is not canonical.
        let mut bad = Vec::new();
        bad.put_u32(1);
        bad.put_bytes(b"n");
        bad.put_u8(3);
        bad.put_u64(bits(2.0));
        assert!(decode(&mut Reader::new(&bad)).is_err());
        // Keys out of order.
        let mut bad = Vec::new();
        bad.put_u32(2);
        bad.put_bytes(b"b");
        bad.put_u8(0);
        bad.put_bytes(b"a");
        bad.put_u8(0);
        assert!(decode(&mut Reader::new(&bad)).is_err());
    }

    #[test]
    fn depth_is_bounded() {
        let mut v = Value::Int(1);
        for _ in 0..MAX_PAYLOAD_DEPTH - 1 {
            v = Value::Array(vec![v]);
        }
        let mut p = Payload::new();
        p.insert("k".into(), v.clone());
        assert_eq!(check(&p), Ok(()));
        let mut buf = Vec::new();
        encode(&p, &mut buf);
        assert!(decode(&mut Reader::new(&buf)).is_ok());
        let mut p = Payload::new();
        p.insert("k".into(), Value::Array(vec![v]));
        assert_eq!(check(&p), Err(PayloadError::TooDeep));
        let mut buf = Vec::new();
        encode(&p, &mut buf);
        assert!(decode(&mut Reader::new(&buf)).is_err());
    }
}
