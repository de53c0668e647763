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
