//! Vectors from Python: lists, tuples or numpy arrays (float32 or float64, read in place).
//!
//! An array is borrowed, not copied: [`Input::rows`] hands out plain slices that the insert
//! and search code reads with the GIL released. Each vector becomes the `f64` list that the
//! node's service layer converts to Q16.16; an `f32` widens to `f64` exactly, so the stored value
//! is the same whichever form the caller used.

use numpy::{
    PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes};

use crate::api::ApiError;

/// Vectors held for the duration of a call.
pub enum Input<'py> {
    /// A float32 array, C-contiguous, 1-d (one vector) or 2-d (rows).
    F32(PyReadonlyArrayDyn<'py, f32>),
    /// A float64 array, as above.
    F64(PyReadonlyArrayDyn<'py, f64>),
    /// Vectors from Python sequences.
    Lists(Vec<Vec<f64>>),
}

/// A read-only, thread-safe view of [`Input`].
#[derive(Clone, Copy)]
pub enum Rows<'a> {
    F32(&'a [f32], usize),
    F64(&'a [f64], usize),
    Lists(&'a [Vec<f64>]),
}

impl Rows<'_> {
    /// Number of vectors.
    pub fn len(&self) -> usize {
        match *self {
            Rows::F32(d, dim) => d.len().checked_div(dim).unwrap_or(0),
            Rows::F64(d, dim) => d.len().checked_div(dim).unwrap_or(0),
            Rows::Lists(l) => l.len(),
        }
    }

    /// Vector `i` as `f64`s.
    pub fn row(&self, i: usize) -> Vec<f64> {
        match *self {
            Rows::F32(d, dim) => d[i * dim..(i + 1) * dim]
                .iter()
                .map(|&x| f64::from(x))
                .collect(),
            Rows::F64(d, dim) => d[i * dim..(i + 1) * dim].to_vec(),
            Rows::Lists(l) => l[i].clone(),
        }
    }
}

fn is_ndarray(obj: &Bound<'_, PyAny>) -> bool {
    // Checked by name first so that a caller without numpy never loads it.
    obj.get_type()
        .fully_qualified_name()
        .is_ok_and(|n| n.to_string_lossy() == "numpy.ndarray")
}

fn array<'py>(obj: &Bound<'py, PyAny>, ndim: usize, what: &str) -> PyResult<Input<'py>> {
    let arr = obj.cast::<numpy::PyUntypedArray>()?;
    if arr.ndim() != ndim {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a {ndim}-d array, got {} dimensions",
            arr.ndim()
        )));
    }
    // Other dtypes (integers, float16) and non-contiguous views are converted once; float32
    // and float64 C-contiguous arrays are read in place.
    let mut obj = obj.clone();
    let dtype = arr.dtype();
    let is32 = dtype.is_equiv_to(&numpy::dtype::<f32>(obj.py()));
    let is64 = dtype.is_equiv_to(&numpy::dtype::<f64>(obj.py()));
    if !(is32 || is64) {
        obj = obj.call_method1("astype", ("float64",))?;
    }
    if !obj.cast::<numpy::PyUntypedArray>()?.is_c_contiguous() {
        obj = obj.call_method1("copy", ("C",))?;
    }
    if is32 {
        Ok(Input::F32(obj.cast_into::<PyArrayDyn<f32>>()?.readonly()))
    } else {
        Ok(Input::F64(obj.cast_into::<PyArrayDyn<f64>>()?.readonly()))
    }
}

fn sequence(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<f64>> {
    if obj.is_instance_of::<pyo3::types::PyString>() || obj.is_instance_of::<PyBytes>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a sequence of numbers, not {}",
            obj.get_type().name()?
        )));
    }
    obj.extract::<Vec<f64>>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} must be a sequence of numbers or a numpy array, got {}",
            obj.get_type()
                .name()
                .map_or_else(|_| "an object".into(), |n| n.to_string())
        ))
    })
}

impl<'py> Input<'py> {
    /// One vector.
    pub fn vector(obj: &Bound<'py, PyAny>) -> PyResult<Input<'py>> {
        if is_ndarray(obj) {
            array(obj, 1, "the vector")
        } else {
            Ok(Input::Lists(vec![sequence(obj, "the vector")?]))
        }
    }

    /// Several vectors: a 2-d array, or a sequence of vectors (lists or 1-d arrays).
    pub fn batch(obj: &Bound<'py, PyAny>) -> PyResult<Input<'py>> {
        if is_ndarray(obj) {
            return array(obj, 2, "the vectors");
        }
        let items: Vec<Bound<'py, PyAny>> = obj
            .try_iter()
            .map_err(|_| PyTypeError::new_err("the vectors must be a sequence or a 2-d array"))?
            .collect::<PyResult<_>>()?;
        let mut rows = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let what = format!("vector {i}");
            if is_ndarray(item) {
                match array(item, 1, &what)? {
                    Input::F32(a) => rows.push(slice(&a).iter().map(|&x| f64::from(x)).collect()),
                    Input::F64(a) => rows.push(slice(&a).to_vec()),
                    Input::Lists(mut l) => rows.append(&mut l),
                }
            } else {
                rows.push(sequence(item, &what)?);
            }
        }
        Ok(Input::Lists(rows))
    }

    /// The vectors as slices that may cross a GIL release.
    pub fn rows(&self) -> Rows<'_> {
        match self {
            Input::F32(a) => {
                let dim = row_len(a.shape());
                Rows::F32(slice(a), dim)
            }
            Input::F64(a) => {
                let dim = row_len(a.shape());
                Rows::F64(slice(a), dim)
            }
            Input::Lists(l) => Rows::Lists(l),
        }
    }
}

/// Length of one vector: the last axis (a 1-d array is one vector).
fn row_len(shape: &[usize]) -> usize {
    shape.last().copied().unwrap_or(0)
}

fn slice<'a, T: numpy::Element>(a: &'a PyReadonlyArrayDyn<'_, T>) -> &'a [T] {
    a.as_slice().expect("made C-contiguous above")
}

/// Metadata or properties: `bytes`, `bytearray` or `None`; anything else is refused as
/// invalid input (a dict, say, must be encoded by the caller first).
pub fn blob(obj: Option<&Bound<'_, PyAny>>, what: &str) -> Result<Option<Vec<u8>>, ApiError> {
    match obj {
        None => Ok(None),
        Some(o) if o.is_none() => Ok(None),
        Some(o) => {
            if let Ok(b) = o.cast::<PyBytes>() {
                Ok(Some(b.as_bytes().to_vec()))
            } else if let Ok(b) = o.cast::<PyByteArray>() {
                Ok(Some(b.to_vec()))
            } else {
                let got = o
                    .get_type()
                    .name()
                    .map_or_else(|_| "another object".into(), |n| n.to_string());
                Err(ApiError::invalid(format!(
                    "{what} must be bytes (or bytearray, or None), not {got}: encode it first, \
                     for example json.dumps(value).encode()"
                )))
            }
        }
    }
}

/// A Python value as JSON, for payloads and filters: `dict` (with `str` keys), `list` or
/// `tuple`, `str`, `bool`, `int`, `float` and `None`. A `bool` is checked before `int`, so
/// `True` stays a bool and is never the integer 1. `at` names the value in errors, which are
/// `Err(reason)` for the caller to classify.
pub fn json_of(
    obj: &Bound<'_, PyAny>,
    at: &str,
    depth: usize,
) -> Result<serde_json::Value, String> {
    use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
    use serde_json::Value as Json;
    // Deeper than any payload or filter may be: refused here rather than by the node, so that a
    // self-referencing dict ends.
    if depth > 64 {
        return Err(format!("{at}: nested too deeply"));
    }
    if obj.is_none() {
        return Ok(Json::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Json::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Json::from(i));
        }
        if let Ok(u) = obj.extract::<u64>() {
            // Beyond i64: the node refuses it with its own message.
            return Ok(Json::from(u));
        }
        return Err(format!(
            "{at}: integer {obj} is beyond the 64-bit signed range"
        ));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        let f = f.value();
        return serde_json::Number::from_f64(f)
            .map(Json::Number)
            .ok_or_else(|| format!("{at}: {f} is not a finite number"));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return s
            .to_str()
            .map(|s| Json::String(s.to_string()))
            .map_err(|_| format!("{at}: a string that is not valid UTF-8"));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut map = serde_json::Map::new();
        for (k, v) in d.iter() {
            let key = k
                .cast::<PyString>()
                .ok()
                .and_then(|k| k.to_str().ok().map(String::from))
                .ok_or_else(|| format!("{at}: dict keys must be str, got {}", type_name(&k)))?;
            let value = json_of(&v, &format!("{at}.{key}"), depth + 1)?;
            map.insert(key, value);
        }
        return Ok(Json::Object(map));
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        for (i, item) in obj.try_iter().map_err(|e| e.to_string())?.enumerate() {
            let item = item.map_err(|e| e.to_string())?;
            items.push(json_of(&item, &format!("{at}[{i}]"), depth + 1)?);
        }
        return Ok(Json::Array(items));
    }
    // numpy scalars (np.float32(0.5), np.int64(3), np.bool_(True)) by value.
    let qualified = obj
        .get_type()
        .fully_qualified_name()
        .map(|n| n.to_string())
        .unwrap_or_default();
    if qualified.starts_with("numpy.") {
        if qualified == "numpy.bool" || qualified == "numpy.bool_" {
            return Ok(Json::Bool(obj.is_truthy().map_err(|e| e.to_string())?));
        }
        if let Ok(item) = obj.call_method0("item") {
            if !item
                .get_type()
                .fully_qualified_name()
                .map(|n| n.to_string())
                .unwrap_or_default()
                .starts_with("numpy.")
            {
                return json_of(&item, at, depth + 1);
            }
        }
    }
    Err(format!(
        "{at}: a {} cannot be stored (use dict, list, str, int, float, bool or None)",
        type_name(obj)
    ))
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map_or_else(|_| "value".into(), |n| n.to_string())
}

/// JSON as Python values: objects become `dict`, arrays `list`, integers `int`, other numbers
/// `float`, booleans `bool`.
pub fn py_of<'py>(py: Python<'py>, j: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use pyo3::types::{PyDict, PyList};
    use pyo3::IntoPyObjectExt;
    use serde_json::Value as Json;
    Ok(match j {
        Json::Null => py.None().into_bound(py),
        Json::Bool(b) => b.into_bound_py_any(py)?,
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_bound_py_any(py)?
            } else if let Some(u) = n.as_u64() {
                u.into_bound_py_any(py)?
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_bound_py_any(py)?
            }
        }
        Json::String(s) => s.into_bound_py_any(py)?,
        Json::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(py_of(py, item)?)?;
            }
            list.into_any()
        }
        Json::Object(map) => {
            let d = PyDict::new(py);
            for (k, v) in map {
                d.set_item(k, py_of(py, v)?)?;
            }
            d.into_any()
        }
    })
}
