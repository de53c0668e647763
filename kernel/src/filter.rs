//! Filters over records: one typed shape for search, count, scroll and writes by filter.
//!
//! A [`Filter`] holds three lists of [`Condition`]s: every `must` holds, at least one `should`
//! holds (when there are any), no `must_not` holds. The empty filter matches every record.
//!
//! A condition's `key` is a path into the payload, segments separated by `.`; a path passes
//! through arrays (`a.b` over `{"a": [{"b": 1}, {"b": 2}]}` reaches 1 and 2), and a value
//! reached that is an array stands for its elements, so a condition on an array field holds
//! when it holds for any element. Comparisons are exact ([`crate::payload`]): `10` and `10.0`
//! are one value, strings compare by bytes.

use alloc::string::String;
use alloc::vec::Vec;

use crate::codec::{DecodeError, Reader, Sink};
use crate::error::Error;
use crate::limits::*;
use crate::payload::{cmp_numbers, Number, Payload, Value};

/// A boolean combination of conditions.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Filter {
    /// All must hold.
    pub must: Vec<Condition>,
    /// At least one must hold, when the list is not empty.
    pub should: Vec<Condition>,
    /// None may hold.
    pub must_not: Vec<Condition>,
}

/// One condition on a record.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Condition {
    /// The value at `key` matches.
    Match {
        /// Payload path.
        key: String,
        /// What it must match.
        matcher: Match,
    },
    /// A number at `key` lies in the range.
    Range {
        /// Payload path.
        key: String,
        /// The bounds.
        range: Range,
    },
    /// Nothing but `null` or empty arrays at `key` (or the key is absent).
    IsEmpty {
        /// Payload path.
        key: String,
    },
    /// An explicit `null` at `key`.
    IsNull {
        /// Payload path.
        key: String,
    },
    /// The record's key is one of these.
    HasKey(Vec<String>),
    /// The record's id is one of these.
    HasId(Vec<u64>),
    /// The record's tag is one of these.
    Tag(Vec<u64>),
    /// A nested filter holds.
    Nested(Filter),
}

/// What a match condition compares with. Values are scalars: strings, numbers, bools.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Match {
    /// Some value at the key equals this.
    Value(Value),
    /// Some value at the key equals one of these.
    Any(Vec<Value>),
    /// No value at the key equals any of these (absent keys included): `any` negated.
    Except(Vec<Value>),
}

/// Bounds of a range condition; absent bounds do not constrain.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Range {
    /// Greater than.
    pub gt: Option<Number>,
    /// Greater than or equal to.
    pub gte: Option<Number>,
    /// Less than.
    pub lt: Option<Number>,
    /// Less than or equal to.
    pub lte: Option<Number>,
}

impl Range {
    fn holds(&self, n: Number) -> bool {
        use core::cmp::Ordering::*;
        self.gt.is_none_or(|b| cmp_numbers(n, b) == Greater)
            && self.gte.is_none_or(|b| cmp_numbers(n, b) != Less)
            && self.lt.is_none_or(|b| cmp_numbers(n, b) == Less)
            && self.lte.is_none_or(|b| cmp_numbers(n, b) != Greater)
    }
}

/// What a filter sees of a record.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// Id.
    pub id: u64,
    /// Key, if the record has one.
    pub key: Option<&'a str>,
    /// Tag.
    pub tag: u64,
    /// Payload, if any.
    pub payload: Option<&'a Payload>,
}

/// Calls `f` with every value a path reaches (arrays at the end are passed whole).
fn reach<'a>(v: &'a Value, path: &[&str], f: &mut impl FnMut(&'a Value)) {
    match (path.split_first(), v) {
        (None, _) => f(v),
        (Some(_), Value::Array(items)) => {
            for item in items {
                reach(item, path, f);
            }
        }
        (Some((first, rest)), Value::Object(map)) => {
            if let Some(v) = map.get(*first) {
                reach(v, rest, f);
            }
        }
        _ => {}
    }
}

/// Calls `f` with every value at `key`, arrays at the end passed whole.
fn at<'a>(payload: Option<&'a Payload>, key: &str, f: &mut impl FnMut(&'a Value)) {
    let Some(payload) = payload else { return };
    let mut segments = key.split('.');
    let Some(first) = segments.next() else { return };
    let Some(v) = payload.get(first) else { return };
    let rest: Vec<&str> = segments.collect();
    reach(v, &rest, f);
}

/// Calls `f` with every scalar at `key`: arrays reached stand for their elements.
pub(crate) fn scalars_at<'a>(
    payload: Option<&'a Payload>,
    key: &str,
    f: &mut impl FnMut(&'a Value),
) {
    at(payload, key, &mut |v| match v {
        Value::Array(items) => items.iter().for_each(&mut *f),
        other => f(other),
    });
}

impl Condition {
    /// Whether the condition holds for a record.
    pub fn holds(&self, s: &Subject<'_>) -> bool {
        match self {
            Condition::Match { key, matcher } => {
                let mut hit = false;
                let (values, negate): (&[Value], bool) = match matcher {
                    Match::Value(v) => (core::slice::from_ref(v), false),
                    Match::Any(vs) => (vs, false),
                    Match::Except(vs) => (vs, true),
                };
                scalars_at(s.payload, key, &mut |v| hit |= values.contains(v));
                hit != negate
            }
            Condition::Range { key, range } => {
                let mut hit = false;
                scalars_at(s.payload, key, &mut |v| {
                    hit |= v.number().is_some_and(|n| range.holds(n));
                });
                hit
            }
            Condition::IsEmpty { key } => {
                let mut empty = true;
                at(s.payload, key, &mut |v| {
                    empty &= match v {
                        Value::Null => true,
                        Value::Array(items) => items.is_empty(),
                        _ => false,
                    }
                });
                empty
            }
            Condition::IsNull { key } => {
                let mut null = false;
                at(s.payload, key, &mut |v| null |= *v == Value::Null);
                null
            }
            Condition::HasKey(keys) => s.key.is_some_and(|k| keys.iter().any(|x| x == k)),
            Condition::HasId(ids) => ids.contains(&s.id),
            Condition::Tag(tags) => tags.contains(&s.tag),
            Condition::Nested(f) => f.matches(s),
        }
    }
}

impl Filter {
    /// Whether the filter holds for a record.
    pub fn matches(&self, s: &Subject<'_>) -> bool {
        self.must.iter().all(|c| c.holds(s))
            && (self.should.is_empty() || self.should.iter().any(|c| c.holds(s)))
            && !self.must_not.iter().any(|c| c.holds(s))
    }

    /// Whether the filter has no conditions (it matches every record).
    pub fn is_empty(&self) -> bool {
        self.must.is_empty() && self.should.is_empty() && self.must_not.is_empty()
    }

    /// Checks the bounds: depth, conditions, list lengths, keys and values.
    pub fn check(&self) -> Result<(), Error> {
        let mut conditions = 0u32;
        self.check_at(1, "filter", &mut conditions)
    }

    fn check_at(&self, depth: u32, at: &str, conditions: &mut u32) -> Result<(), Error> {
        if depth > MAX_FILTER_DEPTH {
            return Err(invalid(
                at,
                alloc::format!("nested deeper than {MAX_FILTER_DEPTH} levels"),
            ));
        }
        for (list, name) in [
            (&self.must, "must"),
            (&self.should, "should"),
            (&self.must_not, "must_not"),
        ] {
            for (i, c) in list.iter().enumerate() {
                *conditions += 1;
                let at = alloc::format!("{at}.{name}[{i}]");
                if *conditions > MAX_FILTER_CONDITIONS {
                    return Err(invalid(
                        &at,
                        alloc::format!("more than {MAX_FILTER_CONDITIONS} conditions in all"),
                    ));
                }
                c.check(depth, &at, conditions)?;
            }
        }
        Ok(())
    }

    /// Appends the canonical encoding.
    pub fn encode(&self, out: &mut impl Sink) {
        for list in [&self.must, &self.should, &self.must_not] {
            out.put_u32(list.len() as u32);
            for c in list {
                c.encode(out);
            }
        }
    }

    /// Decodes [`Filter::encode`]'s output (bounds are checked by [`Filter::check`]).
    pub fn decode(r: &mut Reader<'_>) -> Result<Filter, DecodeError> {
        Filter::decode_at(r, 1)
    }

    fn decode_at(r: &mut Reader<'_>, depth: u32) -> Result<Filter, DecodeError> {
        if depth > MAX_FILTER_DEPTH {
            return Err(DecodeError::Invalid("filter nested too deep"));
        }
        let mut lists: [Vec<Condition>; 3] = Default::default();
        for list in &mut lists {
            let n = r.count("filter conditions", MAX_FILTER_CONDITIONS, 1)?;
            for _ in 0..n {
                list.push(Condition::decode(r, depth)?);
            }
        }
        let [must, should, must_not] = lists;
        Ok(Filter {
            must,
            should,
            must_not,
        })
    }
}

fn invalid(at: &str, reason: String) -> Error {
    Error::InvalidFilter {
        at: at.into(),
        reason,
    }
}

fn check_key(key: &str, at: &str) -> Result<(), Error> {
    if key.is_empty() || key.len() > MAX_FILTER_KEY_BYTES as usize {
        return Err(invalid(
            at,
            alloc::format!("key must be 1 to {MAX_FILTER_KEY_BYTES} bytes"),
        ));
    }
    if key.split('.').any(str::is_empty) {
        return Err(invalid(
            at,
            alloc::format!("key {key:?} has an empty segment"),
        ));
    }
    Ok(())
}

fn check_list<T>(list: &[T], at: &str) -> Result<(), Error> {
    if list.is_empty() || list.len() > MAX_FILTER_VALUES as usize {
        return Err(invalid(
            at,
            alloc::format!(
                "a list of {} values: it must hold 1 to {MAX_FILTER_VALUES}",
                list.len()
            ),
        ));
    }
    Ok(())
}

fn check_scalar(v: &Value, at: &str) -> Result<(), Error> {
    match v {
        Value::String(s) if s.len() > MAX_FILTER_STRING_BYTES as usize => Err(invalid(
            at,
            alloc::format!(
                "a string of {} bytes: at most {MAX_FILTER_STRING_BYTES}",
                s.len()
            ),
        )),
        Value::String(_) | Value::Int(_) | Value::Float(_) | Value::Bool(_) => Ok(()),
        other => Err(invalid(
            at,
            alloc::format!(
                "match compares with strings, numbers and bools, not {}",
                other.type_name()
            ),
        )),
    }
}

mod tag {
    pub const MATCH_VALUE: u8 = 0;
    pub const MATCH_ANY: u8 = 1;
    pub const MATCH_EXCEPT: u8 = 2;
    pub const RANGE: u8 = 3;
    pub const IS_EMPTY: u8 = 4;
    pub const IS_NULL: u8 = 5;
    pub const HAS_KEY: u8 = 6;
    pub const HAS_ID: u8 = 7;
    pub const TAG: u8 = 8;
    pub const NESTED: u8 = 9;
}

fn encode_scalar(v: &Value, out: &mut impl Sink) {
    let mut p = Payload::new();
    p.insert(String::new(), v.clone());
    crate::payload::encode(&p, out);
}

fn decode_scalar(r: &mut Reader<'_>) -> Result<Value, DecodeError> {
    let mut p = crate::payload::decode(r)?;
    match (p.len(), p.remove("")) {
        (1, Some(v)) => Ok(v),
        _ => Err(DecodeError::Invalid("filter value")),
    }
}

fn encode_number(n: Option<Number>, out: &mut impl Sink) {
    match n {
        None => out.put_u8(0),
        Some(Number::Int(i)) => {
            out.put_u8(1);
            out.put(&i.to_le_bytes());
        }
        Some(Number::Float(b)) => {
            out.put_u8(2);
            out.put_u64(b);
        }
    }
}

fn decode_number(r: &mut Reader<'_>) -> Result<Option<Number>, DecodeError> {
    Ok(match r.u8()? {
        0 => None,
        1 => Some(Number::Int(r.u64()? as i64)),
        2 => {
            let bits = r.u64()?;
            match Value::float(bits) {
                Ok(Value::Float(b)) => Some(Number::Float(b)),
                _ => return Err(DecodeError::Invalid("range bound not canonical")),
            }
        }
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "range bound",
                tag,
            })
        }
    })
}

impl Condition {
    fn check(&self, depth: u32, at: &str, conditions: &mut u32) -> Result<(), Error> {
        match self {
            Condition::Match { key, matcher } => {
                check_key(key, at)?;
                match matcher {
                    Match::Value(v) => check_scalar(v, at),
                    Match::Any(vs) | Match::Except(vs) => {
                        check_list(vs, at)?;
                        vs.iter().try_for_each(|v| check_scalar(v, at))
                    }
                }
            }
            Condition::Range { key, range } => {
                check_key(key, at)?;
                if range.gt.is_none()
                    && range.gte.is_none()
                    && range.lt.is_none()
                    && range.lte.is_none()
                {
                    return Err(invalid(at, "a range needs at least one bound".into()));
                }
                Ok(())
            }
            Condition::IsEmpty { key } | Condition::IsNull { key } => check_key(key, at),
            Condition::HasKey(keys) => {
                check_list(keys, at)?;
                keys.iter()
                    .try_for_each(|k| check_record_key(k).map(|_| ()))
            }
            Condition::HasId(ids) => check_list(ids, at),
            Condition::Tag(tags) => check_list(tags, at),
            Condition::Nested(f) => f.check_at(depth + 1, at, conditions),
        }
    }

    fn encode(&self, out: &mut impl Sink) {
        match self {
            Condition::Match { key, matcher } => {
                let (t, values) = match matcher {
                    Match::Value(v) => (tag::MATCH_VALUE, core::slice::from_ref(v)),
                    Match::Any(vs) => (tag::MATCH_ANY, vs.as_slice()),
                    Match::Except(vs) => (tag::MATCH_EXCEPT, vs.as_slice()),
                };
                out.put_u8(t);
                out.put_bytes(key.as_bytes());
                if t != tag::MATCH_VALUE {
                    out.put_u32(values.len() as u32);
                }
                for v in values {
                    encode_scalar(v, out);
                }
            }
            Condition::Range { key, range } => {
                out.put_u8(tag::RANGE);
                out.put_bytes(key.as_bytes());
                for b in [range.gt, range.gte, range.lt, range.lte] {
                    encode_number(b, out);
                }
            }
            Condition::IsEmpty { key } => {
                out.put_u8(tag::IS_EMPTY);
                out.put_bytes(key.as_bytes());
            }
            Condition::IsNull { key } => {
                out.put_u8(tag::IS_NULL);
                out.put_bytes(key.as_bytes());
            }
            Condition::HasKey(keys) => {
                out.put_u8(tag::HAS_KEY);
                out.put_u32(keys.len() as u32);
                for k in keys {
                    out.put_bytes(k.as_bytes());
                }
            }
            Condition::HasId(ids) | Condition::Tag(ids) => {
                out.put_u8(if matches!(self, Condition::HasId(_)) {
                    tag::HAS_ID
                } else {
                    tag::TAG
                });
                out.put_u32(ids.len() as u32);
                for id in ids {
                    out.put_u64(*id);
                }
            }
            Condition::Nested(f) => {
                out.put_u8(tag::NESTED);
                f.encode(out);
            }
        }
    }

    fn decode(r: &mut Reader<'_>, depth: u32) -> Result<Condition, DecodeError> {
        let t = r.u8()?;
        let key = |r: &mut Reader<'_>| r.string("filter key", MAX_FILTER_KEY_BYTES);
        Ok(match t {
            tag::MATCH_VALUE => {
                let key = key(r)?;
                Condition::Match {
                    key,
                    matcher: Match::Value(decode_scalar(r)?),
                }
            }
            tag::MATCH_ANY | tag::MATCH_EXCEPT => {
                let key = key(r)?;
                let n = r.count("filter values", MAX_FILTER_VALUES, 5)?;
                let values = (0..n)
                    .map(|_| decode_scalar(r))
                    .collect::<Result<Vec<_>, _>>()?;
                Condition::Match {
                    key,
                    matcher: if t == tag::MATCH_ANY {
                        Match::Any(values)
                    } else {
                        Match::Except(values)
                    },
                }
            }
            tag::RANGE => {
                let key = key(r)?;
                Condition::Range {
                    key,
                    range: Range {
                        gt: decode_number(r)?,
                        gte: decode_number(r)?,
                        lt: decode_number(r)?,
                        lte: decode_number(r)?,
                    },
                }
            }
            tag::IS_EMPTY => Condition::IsEmpty { key: key(r)? },
            tag::IS_NULL => Condition::IsNull { key: key(r)? },
            tag::HAS_KEY => {
                let n = r.count("filter keys", MAX_FILTER_VALUES, 5)?;
                Condition::HasKey(
                    (0..n)
                        .map(|_| r.string("record key", MAX_KEY_BYTES))
                        .collect::<Result<_, _>>()?,
                )
            }
            tag::HAS_ID | tag::TAG => {
                let n = r.count("filter ids", MAX_FILTER_VALUES, 8)?;
                let ids = (0..n).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?;
                if t == tag::HAS_ID {
                    Condition::HasId(ids)
                } else {
                    Condition::Tag(ids)
                }
            }
            tag::NESTED => Condition::Nested(Filter::decode_at(r, depth + 1)?),
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "filter condition",
                    tag,
                })
            }
        })
    }
}

/// Checks a record key: 1 to [`MAX_KEY_BYTES`] bytes.
pub fn check_record_key(key: &str) -> Result<&str, Error> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES as usize {
        Err(Error::InvalidKey {
            len: key.len() as u64,
        })
    } else {
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn payload(pairs: &[(&str, Value)]) -> Payload {
        pairs
            .iter()
            .map(|(k, v)| (String::from(*k), v.clone()))
            .collect()
    }

    fn subject(p: &Payload) -> Subject<'_> {
        Subject {
            id: 3,
            key: Some("k3"),
            tag: 7,
            payload: Some(p),
        }
    }

    fn m(key: &str, v: Value) -> Condition {
        Condition::Match {
            key: key.into(),
            matcher: Match::Value(v),
        }
    }

    #[test]
    fn conditions_follow_paths_through_objects_and_arrays() {
        let inner = |b: i64| Value::Object(payload(&[("b", Value::Int(b))]));
        let p = payload(&[
            ("user_id", Value::String("u42".into())),
            ("a", Value::Array(vec![inner(1), inner(2)])),
            (
                "tags",
                Value::Array(vec![Value::String("x".into()), Value::String("y".into())]),
            ),
            ("n", Value::Null),
            ("e", Value::Array(vec![])),
        ]);
        let s = subject(&p);
        assert!(m("user_id", Value::String("u42".into())).holds(&s));
        assert!(!m("user_id", Value::String("u4".into())).holds(&s));
        assert!(m("a.b", Value::Int(2)).holds(&s));
        assert!(!m("a.b", Value::Int(3)).holds(&s));
        assert!(m("tags", Value::String("y".into())).holds(&s));
        let except = Condition::Match {
            key: "tags".into(),
            matcher: Match::Except(vec![Value::String("x".into())]),
        };
        assert!(!except.holds(&s), "except is `any` negated");
        let except_missing = Condition::Match {
            key: "nope".into(),
            matcher: Match::Except(vec![Value::String("x".into())]),
        };
        assert!(except_missing.holds(&s));
        let range = Condition::Range {
            key: "a.b".into(),
            range: Range {
                gt: Some(Number::Float(1.5f64.to_bits())),
                ..Range::default()
            },
        };
        assert!(range.holds(&s));
        for (key, empty, null) in [
            ("n", true, true),
            ("e", true, false),
            ("missing", true, false),
            ("tags", false, false),
        ] {
            assert_eq!(
                Condition::IsEmpty { key: key.into() }.holds(&s),
                empty,
                "{key}"
            );
            assert_eq!(
                Condition::IsNull { key: key.into() }.holds(&s),
                null,
                "{key}"
            );
        }
        assert!(Condition::HasKey(vec!["k3".into()]).holds(&s));
        assert!(Condition::HasId(vec![1, 3]).holds(&s));
        assert!(!Condition::Tag(vec![1]).holds(&s));
        let f = Filter {
            must: vec![Condition::Tag(vec![7])],
            should: vec![m("n", Value::Int(1)), m("a.b", Value::Int(1))],
            must_not: vec![Condition::Nested(Filter {
                must: vec![m("user_id", Value::String("u1".into()))],
                ..Filter::default()
            })],
        };
        assert!(f.matches(&s));
        assert!(Filter::default().matches(&s));
        let mut buf = Vec::new();
        f.encode(&mut buf);
        let mut r = Reader::new(&buf);
        assert_eq!(Filter::decode(&mut r).unwrap(), f);
        r.finish().unwrap();
    }

    #[test]
    fn bounds_are_checked_and_name_the_offending_part() {
        let mut f = Filter::default();
        for _ in 0..MAX_FILTER_DEPTH - 1 {
            f = Filter {
                must: vec![Condition::Nested(f)],
                ..Filter::default()
            };
        }
        assert_eq!(f.check(), Ok(()));
        let deep = Filter {
            must: vec![Condition::Nested(f)],
            ..Filter::default()
        };
        assert!(matches!(deep.check(), Err(Error::InvalidFilter { .. })));
        let many = Filter {
            should: vec![Condition::HasId(vec![1]); MAX_FILTER_CONDITIONS as usize + 1],
            ..Filter::default()
        };
        match many.check() {
            Err(Error::InvalidFilter { at, .. }) => assert_eq!(at, "filter.should[64]"),
            other => panic!("{other:?}"),
        }
        let bad_value = Filter {
            must: vec![m("a", Value::Null)],
            ..Filter::default()
        };
        match bad_value.check() {
            Err(Error::InvalidFilter { at, reason }) => {
                assert_eq!(at, "filter.must[0]");
                assert!(reason.contains("null"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let long = Filter {
            must: vec![Condition::HasId(vec![0; MAX_FILTER_VALUES as usize + 1])],
            ..Filter::default()
        };
        assert!(long.check().is_err());
        let empty_segment = Filter {
            must: vec![Condition::IsNull { key: "a..b".into() }],
            ..Filter::default()
        };
        assert!(empty_segment.check().is_err());
    }
}
