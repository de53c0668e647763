//! The `valori._valori` extension module: the [`Valori`] class over either the embedded engine
//! or a node's HTTP API. Arguments are converted here, the work runs with the GIL released,
//! and results become the dataclasses of `valori.types`; errors become the exceptions of
//! `valori.errors`.

mod api;
mod convert;
mod embedded;
mod remote;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use valori_api as wire;
use valori_api::memory::{Include, JsonObject, Named};
use valori_kernel::limits::DEFAULT_COLLECTION;
use valori_node::service::{parse_direction, parse_metric, score, RecordIn};

use api::{Api, ApiError, Kind, Res};
use convert::{blob, json_of, py_of, Input};

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
static TYPES: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

fn module<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyModule>>,
    name: &str,
) -> PyResult<Bound<'py, PyModule>> {
    Ok(cell
        .get_or_try_init(py, || PyModule::import(py, name).map(Bound::unbind))?
        .bind(py)
        .clone())
}

/// Builds a `valori.types` value.
fn make<'py>(
    py: Python<'py>,
    class: &str,
    args: impl pyo3::call::PyCallArgs<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    module(py, &TYPES, "valori.types")?
        .getattr(class)?
        .call1(args)
}

/// The exception for an error, with the node's code as `.code`.
fn to_py(py: Python<'_>, e: ApiError) -> PyErr {
    let class = match e.kind {
        Kind::InvalidInput => "InvalidInputError",
        Kind::NotFound => "NotFoundError",
        Kind::Unauthorized => "UnauthorizedError",
        Kind::Forbidden => "ForbiddenError",
        Kind::Connection => "ValoriConnectionError",
        Kind::Other => "ValoriError",
    };
    let made = module(py, &ERRORS, "valori.errors").and_then(|m| {
        let exc = m.getattr(class)?.call1((e.message.clone(),))?;
        exc.setattr("code", e.code.clone())?;
        Ok(PyErr::from_value(exc))
    });
    made.unwrap_or_else(|err| err)
}

fn bytes_or_none<'py>(py: Python<'py>, b: Option<&[u8]>) -> Option<Bound<'py, PyBytes>> {
    b.map(|b| PyBytes::new(py, b))
}

/// A Valori database: embedded in this process (`Valori(path=...)`) or a node reached over
/// HTTP or HTTPS (`Valori(remote=url, api_key=..., ca_cert=...)`). Both modes have the same
/// methods, results and errors.
#[pyclass(module = "valori._valori", frozen)]
struct Valori {
    api: RwLock<Option<Arc<dyn Api>>>,
    mode: &'static str,
    target: String,
}

impl Valori {
    fn api(&self) -> Res<Arc<dyn Api>> {
        self.api
            .read()
            .expect("handle lock")
            .clone()
            .ok_or_else(|| ApiError::new(Kind::Other, "closed", "this Valori handle is closed"))
    }

    /// Runs `f` on the open handle with the GIL released.
    fn run<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&dyn Api) -> Res<T> + Send,
    ) -> PyResult<T> {
        let api = self.api().map_err(|e| to_py(py, e))?;
        py.detach(|| f(api.as_ref())).map_err(|e| to_py(py, e))
    }
}

fn index_in(
    index: &str,
    m: Option<u16>,
    ef_construction: Option<u16>,
    ef_search: Option<u16>,
) -> Res<wire::IndexConfig> {
    match index {
        "hnsw" => Ok(wire::IndexConfig::Hnsw {
            m,
            ef_construction,
            ef_search,
        }),
        "flat" if m.is_none() && ef_construction.is_none() && ef_search.is_none() => {
            Ok(wire::IndexConfig::Flat)
        }
        "flat" => Err(ApiError::invalid(
            "m, ef_construction and ef_search apply only to an hnsw index",
        )),
        other => Err(ApiError::invalid(format!(
            "unknown index {other:?}: use hnsw or flat"
        ))),
    }
}

#[pymethods]
impl Valori {
    #[new]
    #[pyo3(signature = (path=None, *, remote=None, api_key=None, timeout=30.0, ca_cert=None, vectors_on_disk=false))]
    fn new(
        py: Python<'_>,
        path: Option<PathBuf>,
        remote: Option<String>,
        api_key: Option<String>,
        timeout: f64,
        ca_cert: Option<PathBuf>,
        vectors_on_disk: bool,
    ) -> PyResult<Valori> {
        let made: Res<Valori> = py.detach(|| match (path, remote) {
            (Some(_), Some(_)) => Err(ApiError::invalid(
                "give either path (embedded) or remote (a node's URL), not both",
            )),
            (None, Some(_)) if vectors_on_disk => Err(ApiError::invalid(
                "vectors_on_disk applies to embedded mode only (a node takes --vectors-on-disk)",
            )),
            (None, Some(url)) => {
                let timeout = Duration::try_from_secs_f64(timeout)
                    .ok()
                    .filter(|t| !t.is_zero())
                    .ok_or_else(|| {
                        ApiError::invalid(format!(
                            "timeout must be a positive number of seconds, got {timeout}"
                        ))
                    })?;
                let r = remote::Remote::new(&url, api_key, timeout, ca_cert.as_deref())?;
                Ok(Valori {
                    api: RwLock::new(Some(Arc::new(r))),
                    mode: "remote",
                    target: url,
                })
            }
            (path, None) => {
                if api_key.is_some() {
                    return Err(ApiError::invalid("api_key applies to remote mode only"));
                }
                if ca_cert.is_some() {
                    return Err(ApiError::invalid("ca_cert applies to remote mode only"));
                }
                let dir = path.unwrap_or_else(|| PathBuf::from("./valori_db"));
                let e = embedded::Embedded::open(dir, vectors_on_disk)?;
                let target = e.dir().display().to_string();
                Ok(Valori {
                    api: RwLock::new(Some(Arc::new(e))),
                    mode: "embedded",
                    target,
                })
            }
        });
        made.map_err(|e| to_py(py, e))
    }

    /// `"embedded"` or `"remote"`.
    #[getter]
    fn mode(&self) -> &'static str {
        self.mode
    }

    /// Whether `close()` has been called.
    #[getter]
    fn closed(&self) -> bool {
        self.api.read().expect("handle lock").is_none()
    }

    fn __repr__(&self) -> String {
        let state = if self.closed() { ", closed" } else { "" };
        match self.mode {
            "remote" => format!("Valori(remote={:?}{state})", self.target),
            _ => format!("Valori(path={:?}{state})", self.target),
        }
    }

    /// Creates a collection.
    #[pyo3(signature = (name, dimension, metric="l2", index="hnsw", *, m=None, ef_construction=None, ef_search=None))]
    #[allow(clippy::too_many_arguments)]
    fn create_collection(
        &self,
        py: Python<'_>,
        name: String,
        dimension: u32,
        metric: &str,
        index: &str,
        m: Option<u16>,
        ef_construction: Option<u16>,
        ef_search: Option<u16>,
    ) -> PyResult<()> {
        let spec = (|| {
            Ok::<_, ApiError>(wire::CreateCollection {
                name,
                dimension,
                metric: Some(parse_metric(metric)?),
                index: Some(index_in(index, m, ef_construction, ef_search)?),
            })
        })()
        .map_err(|e| to_py(py, e))?;
        self.run(py, |a| a.create_collection(spec))
    }

    /// Drops a collection and its records.
    fn drop_collection(&self, py: Python<'_>, name: String) -> PyResult<()> {
        self.run(py, |a| a.drop_collection(name))
    }

    /// Every collection, by name.
    fn collections<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = self.run(py, |a| a.collections())?;
        let items = list
            .into_iter()
            .map(|c| collection_py(py, c))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    /// One collection's description.
    fn collection<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        let c = self.run(py, |a| a.collection(name))?;
        collection_py(py, c)
    }

    /// Inserts one vector; returns its id.
    #[pyo3(signature = (vector, tag=0, metadata=None, *, collection=DEFAULT_COLLECTION))]
    fn insert(
        &self,
        py: Python<'_>,
        vector: &Bound<'_, PyAny>,
        tag: u64,
        metadata: Option<&Bound<'_, PyAny>>,
        collection: &str,
    ) -> PyResult<u64> {
        let input = Input::vector(vector)?;
        let metadata = blob(metadata, "metadata").map_err(|e| to_py(py, e))?;
        let rows = input.rows();
        let ids = self.run(py, move |a| {
            let record = RecordIn {
                vector: rows.row(0),
                tag,
                metadata,
            };
            a.insert(collection.to_string(), vec![record], false)
        })?;
        Ok(ids[0])
    }

    /// Inserts vectors atomically (all or none); returns their ids in order.
    #[pyo3(signature = (vectors, tags=None, metadata=None, *, collection=DEFAULT_COLLECTION))]
    fn insert_batch(
        &self,
        py: Python<'_>,
        vectors: &Bound<'_, PyAny>,
        tags: Option<&Bound<'_, PyAny>>,
        metadata: Option<&Bound<'_, PyAny>>,
        collection: &str,
    ) -> PyResult<Vec<u64>> {
        let input = Input::batch(vectors)?;
        let rows = input.rows();
        let n = rows.len();
        let tags: Vec<u64> = match tags {
            None => vec![0; n],
            Some(t) if t.is_none() => vec![0; n],
            Some(t) => match t.extract::<u64>() {
                Ok(one) => vec![one; n],
                Err(_) => tags_list(t)?,
            },
        };
        let metadata: Vec<Option<Vec<u8>>> = match metadata {
            None => vec![None; n],
            Some(m) if m.is_none() => vec![None; n],
            Some(m) => m
                .try_iter()?
                .enumerate()
                .map(|(i, item)| {
                    blob(Some(&item?), &format!("metadata[{i}]")).map_err(|e| to_py(py, e))
                })
                .collect::<PyResult<_>>()?,
        };
        let mismatch = |what: &str, len: usize| {
            to_py(
                py,
                ApiError::invalid(format!("{n} vectors but {len} {what}")),
            )
        };
        if tags.len() != n {
            return Err(mismatch("tags", tags.len()));
        }
        if metadata.len() != n {
            return Err(mismatch("metadata entries", metadata.len()));
        }
        self.run(py, move |a| {
            let records = tags
                .into_iter()
                .zip(metadata)
                .enumerate()
                .map(|(i, (tag, metadata))| RecordIn {
                    vector: rows.row(i),
                    tag,
                    metadata,
                })
                .collect();
            a.insert(collection.to_string(), records, true)
        })
    }

    /// A stored record.
    #[pyo3(signature = (id, *, collection=DEFAULT_COLLECTION))]
    fn get<'py>(&self, py: Python<'py>, id: u64, collection: &str) -> PyResult<Bound<'py, PyAny>> {
        let r = self.run(py, |a| a.get(collection, id))?;
        make(
            py,
            "Record",
            (
                r.id,
                r.vector,
                r.tag,
                bytes_or_none(py, r.metadata.as_deref()),
            ),
        )
    }

    /// Deletes a record.
    #[pyo3(signature = (id, *, collection=DEFAULT_COLLECTION))]
    fn delete(&self, py: Python<'_>, id: u64, collection: &str) -> PyResult<()> {
        self.run(py, |a| a.delete(collection.to_string(), id))
    }

    /// The `k` nearest records, nearest first (ties by id). `filter` keeps only matching
    /// records (strict: never a non-match, never fewer than min(k, matches)); `score_threshold`
    /// drops hits whose `similarity` is lower; `exact` scans the matches instead of walking the
    /// index; `include` names what each hit carries (`"payload"`, `"document"`, `"vector"`,
    /// `"metadata"`); `at_seq` answers as the state stood at that past sequence number
    /// (replayed from the nearest snapshot; a node bounds the events replayed).
    #[pyo3(signature = (vector, k=10, tag=None, *, collection=DEFAULT_COLLECTION, ef=None, with_metadata=false, filter=None, score_threshold=None, exact=false, include=None, at_seq=None))]
    #[allow(clippy::too_many_arguments)]
    fn search<'py>(
        &self,
        py: Python<'py>,
        vector: &Bound<'py, PyAny>,
        k: u32,
        tag: Option<u64>,
        collection: &str,
        ef: Option<u32>,
        with_metadata: bool,
        filter: Option<&Bound<'py, PyAny>>,
        score_threshold: Option<f64>,
        exact: bool,
        include: Option<Vec<String>>,
        at_seq: Option<u64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let input = Input::vector(vector)?;
        let rows = input.rows();
        let filter = filter_arg(filter).map_err(|e| to_py(py, e))?;
        let include = include_arg(include).map_err(|e| to_py(py, e))?;
        let hits = self.run(py, move |a| {
            a.search(
                collection.to_string(),
                wire::SearchRequest {
                    vector: rows.row(0),
                    k,
                    tag,
                    ef,
                    with_metadata,
                    filter,
                    score_threshold,
                    exact,
                    include,
                    at_seq,
                    hashes: false,
                },
            )
        })?;
        let items = hits
            .into_iter()
            .map(|h| hit_py(py, h))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    /// Up to 256 searches answered from one state: `searches` is a list of dicts with the
    /// arguments of `search` (`vector`, `k`, `tag`, `ef`, `with_metadata`, `filter`,
    /// `score_threshold`, `exact`, `include`). Returns `{"results": [[hit, ...], ...], "seq"}`.
    #[pyo3(signature = (searches, *, collection=DEFAULT_COLLECTION))]
    fn search_batch<'py>(
        &self,
        py: Python<'py>,
        searches: &Bound<'py, PyAny>,
        collection: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let mut list = Vec::new();
        for (i, item) in searches.try_iter()?.enumerate() {
            let item = item?;
            let d = item.cast::<PyDict>().map_err(|_| {
                pyo3::exceptions::PyTypeError::new_err(format!(
                    "searches[{i}] must be a dict of search arguments"
                ))
            })?;
            list.push(search_arg(d, i).map_err(|e| to_py(py, e))?);
        }
        let found = self.run(py, move |a| {
            a.search_batch(collection.to_string(), wire::SearchBatch { searches: list })
        })?;
        let (found, seq) = found;
        let results = PyList::empty(py);
        for hits in found {
            let hits = hits
                .into_iter()
                .map(|h| hit_py(py, h))
                .collect::<PyResult<Vec<_>>>()?;
            results.append(PyList::new(py, hits)?)?;
        }
        let out = PyDict::new(py);
        out.set_item("results", results)?;
        out.set_item("seq", seq)?;
        Ok(out)
    }

    /// Writes records by key, all or nothing, in order: `keys[i]` gets `vectors[i]` and, when
    /// given, `payloads[i]` (a dict), `documents[i]` (text), `tags[i]` and `metadata[i]`
    /// (bytes). `mode`: `"upsert"` (replace or insert), `"insert_only"` (refused if a key
    /// exists) or `"update_only"` (refused if one does not). A key whose stored vector is
    /// unchanged keeps its id. Returns `{"ids": [...], "seq"}`.
    #[pyo3(signature = (keys, vectors, *, payloads=None, documents=None, tags=None, metadata=None, mode="upsert", collection=DEFAULT_COLLECTION))]
    #[allow(clippy::too_many_arguments)]
    fn upsert<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
        vectors: &Bound<'py, PyAny>,
        payloads: Option<&Bound<'py, PyAny>>,
        documents: Option<&Bound<'py, PyAny>>,
        tags: Option<&Bound<'py, PyAny>>,
        metadata: Option<&Bound<'py, PyAny>>,
        mode: &str,
        collection: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let keys = key_list(keys, "keys")?;
        let input = Input::batch(vectors)?;
        let rows = input.rows();
        let n = keys.len();
        let column = |obj: Option<&Bound<'py, PyAny>>,
                      what: &str|
         -> PyResult<Vec<Option<Bound<'py, PyAny>>>> {
            match obj {
                None => Ok(vec![None; n]),
                Some(o) if o.is_none() => Ok(vec![None; n]),
                Some(o) => {
                    if o.is_instance_of::<PyString>() || o.is_instance_of::<PyDict>() {
                        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                            "{what} must be a list with one entry per key"
                        )));
                    }
                    let items: Vec<_> = o
                        .try_iter()?
                        .map(|i| i.map(|i| (!i.is_none()).then_some(i)))
                        .collect::<PyResult<_>>()?;
                    if items.len() != n {
                        return Err(to_py(
                            py,
                            ApiError::invalid(format!("{n} keys but {} {what}", items.len())),
                        ));
                    }
                    Ok(items)
                }
            }
        };
        if rows.len() != n {
            return Err(to_py(
                py,
                ApiError::invalid(format!("{n} keys but {} vectors", rows.len())),
            ));
        }
        let payloads = column(payloads, "payloads")?;
        let documents = column(documents, "documents")?;
        let metadata = column(metadata, "metadata entries")?;
        let tags: Vec<u64> = match tags {
            None => vec![0; n],
            Some(t) if t.is_none() => vec![0; n],
            Some(t) => match t.extract::<u64>() {
                Ok(one) if !t.is_instance_of::<pyo3::types::PyBool>() => vec![one; n],
                _ => tags_list(t)?,
            },
        };
        if tags.len() != n {
            return Err(to_py(
                py,
                ApiError::invalid(format!("{n} keys but {} tags", tags.len())),
            ));
        }
        let mode =
            wire::memory::UpsertMode::parse(mode).map_err(|e| to_py(py, ApiError::invalid(e)))?;
        let mut records = Vec::with_capacity(n);
        for (i, key) in keys.into_iter().enumerate() {
            let at = format!("records[{i}]");
            let payload = payloads[i]
                .as_ref()
                .map(|p| payload_arg(p, &format!("{at}.payload")))
                .transpose()
                .map_err(|e| to_py(py, e))?;
            let document = documents[i]
                .as_ref()
                .map(|d| {
                    d.extract::<String>().map_err(|_| {
                        to_py(
                            py,
                            ApiError::invalid(format!("documents[{i}] must be a str")),
                        )
                    })
                })
                .transpose()?;
            let meta =
                blob(metadata[i].as_ref(), &format!("metadata[{i}]")).map_err(|e| to_py(py, e))?;
            records.push(wire::UpsertRecord {
                key,
                vector: Vec::new(),
                tag: tags[i],
                payload,
                document,
                metadata: meta.as_deref().map(valori_node::service::b64),
            });
        }
        let done = self.run(py, move |a| {
            for (i, r) in records.iter_mut().enumerate() {
                r.vector = rows.row(i);
            }
            a.upsert(collection.to_string(), wire::Upsert { records, mode })
        })?;
        to_python(py, &done)
    }

    /// Records by `keys` or by `ids` (one of them), in the order asked:
    /// `{"records": [...], "missing": [...], "seq"}`. Each record is a dict with `id`, `key`,
    /// `tag` and what `include` names (default: `payload` and `document`).
    #[pyo3(signature = (keys=None, *, ids=None, include=None, collection=DEFAULT_COLLECTION))]
    fn get_records<'py>(
        &self,
        py: Python<'py>,
        keys: Option<&Bound<'py, PyAny>>,
        ids: Option<Vec<u64>>,
        include: Option<Vec<String>>,
        collection: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let keys = keys.map(|k| key_list(k, "keys")).transpose()?;
        let include = include_arg(include).map_err(|e| to_py(py, e))?;
        let got = self.run(py, move |a| {
            a.get_records(
                collection.to_string(),
                wire::GetRecords { keys, ids, include },
            )
        })?;
        let out = PyDict::new(py);
        out.set_item("records", records_py(py, got.records)?)?;
        let missing = PyList::empty(py);
        for m in got.missing {
            match m {
                wire::Missing::Key(k) => missing.append(k)?,
                wire::Missing::Id(i) => missing.append(i)?,
            }
        }
        out.set_item("missing", missing)?;
        out.set_item("seq", got.seq)?;
        Ok(out)
    }

    /// A page of records by ascending id, those `filter` matches: `{"records": [...],
    /// "next_cursor", "seq"}`. Pass `next_cursor` back as `cursor` for the next page; it is None
    /// after the last. A record left unchanged between pages is visited exactly once.
    #[pyo3(signature = (filter=None, *, limit=100, cursor=None, include=None, collection=DEFAULT_COLLECTION))]
    fn scroll<'py>(
        &self,
        py: Python<'py>,
        filter: Option<&Bound<'py, PyAny>>,
        limit: u32,
        cursor: Option<String>,
        include: Option<Vec<String>>,
        collection: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let filter = filter_arg(filter).map_err(|e| to_py(py, e))?;
        let include = include_arg(include).map_err(|e| to_py(py, e))?;
        let page = self.run(py, move |a| {
            a.scroll(
                collection.to_string(),
                wire::Scroll {
                    filter,
                    limit,
                    cursor,
                    include,
                },
            )
        })?;
        let out = PyDict::new(py);
        out.set_item("records", records_py(py, page.records)?)?;
        out.set_item("next_cursor", page.next_cursor)?;
        out.set_item("seq", page.seq)?;
        Ok(out)
    }

    /// How many records `filter` matches (all when None), exactly: `{"count", "seq"}`.
    #[pyo3(signature = (filter=None, *, collection=DEFAULT_COLLECTION))]
    fn count<'py>(
        &self,
        py: Python<'py>,
        filter: Option<&Bound<'py, PyAny>>,
        collection: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let filter = filter_arg(filter).map_err(|e| to_py(py, e))?;
        let c = self.run(py, move |a| {
            a.count(collection.to_string(), wire::Count { filter })
        })?;
        to_python(py, &c)
    }

    /// Deletes the records of `keys`, `ids` or a `filter` (exactly one; keys and ids with no
    /// record are ignored). With `max_affected`, nothing is deleted if more would be.
    /// Returns `{"deleted", "seq"}`.
    #[pyo3(signature = (keys=None, *, ids=None, filter=None, max_affected=None, collection=DEFAULT_COLLECTION))]
    fn delete_records<'py>(
        &self,
        py: Python<'py>,
        keys: Option<&Bound<'py, PyAny>>,
        ids: Option<Vec<u64>>,
        filter: Option<&Bound<'py, PyAny>>,
        max_affected: Option<u64>,
        collection: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let keys = keys.map(|k| key_list(k, "keys")).transpose()?;
        let filter = filter_arg(filter).map_err(|e| to_py(py, e))?;
        let d = self.run(py, move |a| {
            a.delete_records(
                collection.to_string(),
                wire::DeleteRecords {
                    keys,
                    ids,
                    filter,
                    max_affected,
                },
            )
        })?;
        to_python(py, &d)
    }

    /// Sets `payload` (a dict) on the records of `keys`, `ids` or a `filter`: `mode="merge"`
    /// sets its top-level keys and keeps the others, `"replace"` replaces the whole payload.
    /// Returns `{"updated", "seq"}`.
    #[pyo3(signature = (payload, *, keys=None, ids=None, filter=None, mode="merge", max_affected=None, collection=DEFAULT_COLLECTION))]
    #[allow(clippy::too_many_arguments)]
    fn set_payload<'py>(
        &self,
        py: Python<'py>,
        payload: &Bound<'py, PyAny>,
        keys: Option<&Bound<'py, PyAny>>,
        ids: Option<Vec<u64>>,
        filter: Option<&Bound<'py, PyAny>>,
        mode: &str,
        max_affected: Option<u64>,
        collection: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let keys = keys.map(|k| key_list(k, "keys")).transpose()?;
        let filter = filter_arg(filter).map_err(|e| to_py(py, e))?;
        let payload = payload_arg(payload, "payload").map_err(|e| to_py(py, e))?;
        let mode =
            wire::memory::PayloadMode::parse(mode).map_err(|e| to_py(py, ApiError::invalid(e)))?;
        let u = self.run(py, move |a| {
            a.set_payload(
                collection.to_string(),
                wire::SetPayload {
                    keys,
                    ids,
                    filter,
                    payload,
                    mode,
                    max_affected,
                },
            )
        })?;
        to_python(py, &u)
    }

    /// Removes the top-level payload keys `fields` from the records of `keys`, `ids` or a
    /// `filter`. Returns `{"updated", "seq"}`.
    #[pyo3(signature = (fields, *, keys=None, ids=None, filter=None, max_affected=None, collection=DEFAULT_COLLECTION))]
    #[allow(clippy::too_many_arguments)]
    fn delete_payload_keys<'py>(
        &self,
        py: Python<'py>,
        fields: Vec<String>,
        keys: Option<&Bound<'py, PyAny>>,
        ids: Option<Vec<u64>>,
        filter: Option<&Bound<'py, PyAny>>,
        max_affected: Option<u64>,
        collection: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let keys = keys.map(|k| key_list(k, "keys")).transpose()?;
        let filter = filter_arg(filter).map_err(|e| to_py(py, e))?;
        let u = self.run(py, move |a| {
            a.delete_payload_keys(
                collection.to_string(),
                wire::DeletePayloadKeys {
                    keys,
                    ids,
                    filter,
                    fields,
                    max_affected,
                },
            )
        })?;
        to_python(py, &u)
    }

    /// Declares a payload index on `field` (`kind`: `"keyword"`, `"integer"` or `"bool"`): it
    /// changes how fast filters on the field run, never what they return.
    #[pyo3(signature = (field, kind, *, collection=DEFAULT_COLLECTION))]
    fn create_payload_index(
        &self,
        py: Python<'_>,
        field: String,
        kind: &str,
        collection: &str,
    ) -> PyResult<()> {
        let kind =
            wire::memory::IndexKind::parse(kind).map_err(|e| to_py(py, ApiError::invalid(e)))?;
        self.run(py, move |a| {
            a.create_payload_index(collection.to_string(), wire::PayloadIndex { field, kind })
        })
    }

    /// Removes the payload index on `field`.
    #[pyo3(signature = (field, *, collection=DEFAULT_COLLECTION))]
    fn drop_payload_index(&self, py: Python<'_>, field: String, collection: &str) -> PyResult<()> {
        self.run(py, move |a| {
            a.drop_payload_index(collection.to_string(), field)
        })
    }

    /// A collection's payload indexes: `{"indexes": [{"field", "kind"}, ...], "seq"}`.
    #[pyo3(signature = (*, collection=DEFAULT_COLLECTION))]
    fn payload_indexes<'py>(
        &self,
        py: Python<'py>,
        collection: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let list = self.run(py, move |a| a.payload_indexes(collection.to_string()))?;
        to_python(py, &list)
    }

    /// Creates a graph node, optionally linked to a record: `(collection, id)` names that
    /// version of the record, `(collection, key)` whichever record holds the key (the link
    /// survives an upsert that gives it a new id). Returns its id.
    #[pyo3(signature = (kind, *, record=None, properties=None))]
    fn create_node<'py>(
        &self,
        py: Python<'py>,
        kind: String,
        record: Option<(String, Bound<'py, PyAny>)>,
        properties: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<u64> {
        let properties = blob(properties, "properties").map_err(|e| to_py(py, e))?;
        let record = match record {
            None => None,
            Some((collection, target)) => Some(if let Ok(key) = target.cast::<PyString>() {
                wire::RecordRef {
                    collection,
                    id: None,
                    key: Some(key.to_str()?.to_string()),
                }
            } else {
                let id = target.extract::<u64>().map_err(|_| {
                    pyo3::exceptions::PyTypeError::new_err(
                        "record must be (collection, id) or (collection, key)",
                    )
                })?;
                wire::RecordRef {
                    collection,
                    id: Some(id),
                    key: None,
                }
            }),
        };
        self.run(py, |a| a.create_node(kind, record, properties))
    }

    /// A graph node.
    fn get_node<'py>(&self, py: Python<'py>, id: u64) -> PyResult<Bound<'py, PyAny>> {
        let n = self.run(py, |a| a.get_node(id))?;
        let (record, record_id) = match n.record {
            None => (None, None),
            Some(r) => {
                let target = match (&r.key, r.id) {
                    (Some(k), _) => k.clone().into_pyobject(py)?.into_any(),
                    (None, Some(id)) => id.into_pyobject(py)?.into_any(),
                    (None, None) => py.None().into_bound(py),
                };
                (Some((r.collection, target)), r.id)
            }
        };
        make(
            py,
            "GraphNode",
            (
                n.id,
                n.kind,
                record,
                bytes_or_none(py, n.properties.as_deref()),
                record_id,
            ),
        )
    }

    /// Deletes a node and its edges.
    fn delete_node(&self, py: Python<'_>, id: u64) -> PyResult<()> {
        self.run(py, |a| a.delete_node(id))
    }

    /// Creates an edge `source -> target`; returns its id.
    fn create_edge(&self, py: Python<'_>, source: u64, target: u64, kind: String) -> PyResult<u64> {
        self.run(py, |a| {
            a.create_edge(wire::CreateEdge {
                from: source,
                to: target,
                kind,
            })
        })
    }

    /// A graph edge.
    fn get_edge<'py>(&self, py: Python<'py>, id: u64) -> PyResult<Bound<'py, PyAny>> {
        let e = self.run(py, |a| a.get_edge(id))?;
        make(py, "Edge", (e.id, e.from, e.to, e.kind))
    }

    /// Deletes an edge.
    fn delete_edge(&self, py: Python<'_>, id: u64) -> PyResult<()> {
        self.run(py, |a| a.delete_edge(id))
    }

    /// Neighbours of a node along edges in `direction` (`out`, `in` or `both`), optionally
    /// only edges of the given kinds.
    #[pyo3(signature = (id, direction="out", kinds=None))]
    fn neighbors<'py>(
        &self,
        py: Python<'py>,
        id: u64,
        direction: &str,
        kinds: Option<Vec<String>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let kinds = kinds.unwrap_or_default();
        let list = self.run(py, |a| a.neighbors(id, parse_direction(direction)?, &kinds))?;
        let items = list
            .into_iter()
            .map(|n| make(py, "Neighbor", (n.node, n.edge, n.kind, n.direction.name())))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    /// Breadth-first traversal from `start` up to `max_depth` edges away.
    #[pyo3(signature = (start, max_depth, kinds=None, direction="out"))]
    fn traverse<'py>(
        &self,
        py: Python<'py>,
        start: u64,
        max_depth: u32,
        kinds: Option<Vec<String>>,
        direction: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let kinds = kinds.unwrap_or_default();
        let t = self.run(py, |a| {
            a.traverse(wire::TraverseRequest {
                start,
                max_depth,
                kinds,
                direction: Some(parse_direction(direction)?),
            })
        })?;
        let nodes: Vec<(u64, u32)> = t.nodes.iter().map(|v| (v.node, v.depth)).collect();
        make(py, "Traversal", (nodes, t.truncated))
    }

    /// Takes a snapshot now. With `path`, a copy is written there (downloaded, in remote mode)
    /// and its path returned; otherwise the path of the snapshot in the data directory (on the
    /// server, in remote mode).
    #[pyo3(signature = (path=None))]
    fn snapshot(&self, py: Python<'_>, path: Option<PathBuf>) -> PyResult<String> {
        self.run(py, |a| a.snapshot(path.as_deref()))
    }

    /// Replaces the whole state with a snapshot file's (verified first; nothing changes if it
    /// does not verify). Returns the new state.
    fn restore<'py>(&self, py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyAny>> {
        let s = self.run(py, |a| a.restore(&path))?;
        state_py(py, s)
    }

    /// Sequence number, chain hash and state hash.
    fn state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.run(py, |a| a.state())?;
        state_py(py, s)
    }

    /// The blake3 hash of the whole state (hex): equal states have equal hashes.
    fn state_hash(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.run(py, |a| a.state())?.state_hash.unwrap_or_default())
    }

    /// Closes the handle (the database, in embedded mode). Safe to call twice.
    fn close(&self, py: Python<'_>) {
        let api = self.api.write().expect("handle lock").take();
        if let Some(api) = api {
            py.detach(move || api.close());
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> bool {
        self.close(py);
        false
    }
}

fn tags_list(t: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
    t.extract::<Vec<u64>>().map_err(|_| {
        pyo3::exceptions::PyTypeError::new_err(
            "tags must be an int (for every vector) or a sequence of non-negative ints",
        )
    })
}

/// A wire answer as Python values (dicts, lists, ints, floats, bools).
fn to_python<'py, T: serde::Serialize>(py: Python<'py>, value: &T) -> PyResult<Bound<'py, PyAny>> {
    let j = serde_json::to_value(value)
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
    py_of(py, &j)
}

/// Keys: a list (or other iterable) of `str`; a lone `str` is refused, not split into letters.
fn key_list(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<String>> {
    let refuse = || pyo3::exceptions::PyTypeError::new_err(format!("{what} must be a list of str"));
    if obj.is_instance_of::<PyString>() {
        return Err(refuse());
    }
    obj.try_iter()
        .map_err(|_| refuse())?
        .map(|k| k.and_then(|k| k.extract::<String>().map_err(|_| refuse())))
        .collect()
}

fn invalid_payload(reason: String) -> ApiError {
    let (at, reason) = match reason.split_once(": ") {
        Some((at, r)) => (at.to_string(), r.to_string()),
        None => ("payload".to_string(), reason),
    };
    ApiError::from(valori_node::NodeError::Kernel(
        valori_kernel::Error::InvalidPayload { at, reason },
    ))
}

fn invalid_filter(reason: String) -> ApiError {
    ApiError::from(valori_node::NodeError::Kernel(
        valori_kernel::Error::InvalidFilter {
            at: "filter".into(),
            reason,
        },
    ))
}

/// A payload: a dict.
fn payload_arg(obj: &Bound<'_, PyAny>, at: &str) -> Res<JsonObject> {
    if !obj.is_instance_of::<PyDict>() {
        return Err(invalid_payload(format!(
            "{at}: a payload is a dict, not {}",
            obj.get_type()
                .name()
                .map_or_else(|_| "this".into(), |n| n.to_string())
        )));
    }
    match json_of(obj, at, 0).map_err(invalid_payload)? {
        serde_json::Value::Object(map) => Ok(map),
        _ => unreachable!("a dict converts to an object"),
    }
}

/// A filter: a dict in the API's shape (`{"must": [...], "should": [...], "must_not": [...]}`).
fn filter_arg(obj: Option<&Bound<'_, PyAny>>) -> Res<Option<wire::memory::Filter>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(None);
    };
    if !obj.is_instance_of::<PyDict>() {
        return Err(invalid_filter(
            "a filter is a dict such as {\"must\": [{\"key\": \"user\", \"match\": {\"value\": \"u42\"}}]}".into(),
        ));
    }
    let j = json_of(obj, "filter", 0).map_err(invalid_filter)?;
    serde_json::from_value(j)
        .map(Some)
        .map_err(|e| invalid_filter(e.to_string()))
}

/// What answers carry: names of parts.
fn include_arg(include: Option<Vec<String>>) -> Res<Option<Vec<Include>>> {
    include
        .map(|names| {
            names
                .iter()
                .map(|n| Include::parse(n).map_err(ApiError::invalid))
                .collect()
        })
        .transpose()
}

/// One search of a batch, from a dict of `search`'s arguments.
fn search_arg(d: &Bound<'_, PyDict>, i: usize) -> Res<wire::SearchRequest> {
    let at = |m: String| ApiError::invalid(format!("searches[{i}]: {m}"));
    let vector = d
        .get_item("vector")
        .map_err(|e| at(e.to_string()))?
        .ok_or_else(|| at("vector is required".into()))?;
    let input = Input::vector(&vector).map_err(|e| at(e.to_string()))?;
    let vector = input.rows().row(0);
    let mut rest = serde_json::Map::new();
    let mut filter = None;
    for (k, v) in d.iter() {
        let name: String = k
            .extract()
            .map_err(|_| at("argument names are str".into()))?;
        match name.as_str() {
            "vector" => {}
            "filter" => filter = filter_arg(Some(&v))?,
            _ if v.is_none() => {}
            _ => {
                let j = json_of(&v, &name, 0).map_err(at)?;
                rest.insert(name, j);
            }
        }
    }
    rest.insert("vector".into(), serde_json::Value::Array(Vec::new()));
    let mut req: wire::SearchRequest =
        serde_json::from_value(serde_json::Value::Object(rest)).map_err(|e| at(e.to_string()))?;
    req.vector = vector;
    req.filter = filter;
    Ok(req)
}

/// Records of an answer as dicts (`metadata` as bytes).
fn records_py<'py>(
    py: Python<'py>,
    records: Vec<wire::MemoryRecord>,
) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for r in records {
        let d = PyDict::new(py);
        d.set_item("id", r.id)?;
        d.set_item("key", r.key)?;
        d.set_item("tag", r.tag)?;
        if let Some(v) = r.vector {
            d.set_item("vector", v)?;
        }
        if let Some(p) = r.payload {
            d.set_item("payload", py_of(py, &serde_json::Value::Object(p))?)?;
        }
        if let Some(doc) = r.document {
            d.set_item("document", doc)?;
        }
        if let Some(m) = r.metadata {
            let bytes = m
                .map(|m| valori_node::service::unb64("metadata", &m))
                .transpose()
                .map_err(|e| to_py(py, e.into()))?;
            d.set_item("metadata", bytes_or_none(py, bytes.as_deref()))?;
        }
        list.append(d)?;
    }
    Ok(list)
}

/// A `SearchResult`.
fn hit_py(py: Python<'_>, h: valori_node::service::HitOut) -> PyResult<Bound<'_, PyAny>> {
    let kw = PyDict::new(py);
    kw.set_item("id", h.id)?;
    kw.set_item("score", score(h.distance))?;
    kw.set_item("distance", h.distance)?;
    kw.set_item("tag", h.tag)?;
    kw.set_item(
        "metadata",
        h.metadata.flatten().map(|m| PyBytes::new(py, &m)),
    )?;
    kw.set_item("similarity", h.similarity)?;
    kw.set_item("key", h.key)?;
    if let Some(p) = h.payload {
        kw.set_item("payload", py_of(py, &serde_json::Value::Object(p))?)?;
    }
    kw.set_item("document", h.document.flatten())?;
    kw.set_item("vector", h.vector)?;
    module(py, &TYPES, "valori.types")?
        .getattr("SearchResult")?
        .call((), Some(&kw))
}

fn collection_py(py: Python<'_>, c: wire::CollectionInfo) -> PyResult<Bound<'_, PyAny>> {
    let index = match c.index {
        wire::IndexInfo::Flat => "flat",
        wire::IndexInfo::Hnsw { .. } => "hnsw",
    };
    make(
        py,
        "Collection",
        (
            c.name,
            c.dimension,
            c.metric.name(),
            index,
            c.records,
            c.next_id,
        ),
    )
}

fn state_py(py: Python<'_>, s: wire::State) -> PyResult<Bound<'_, PyAny>> {
    make(
        py,
        "State",
        (s.seq, s.chain_hash, s.state_hash.unwrap_or_default()),
    )
}

#[pymodule]
fn _valori(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Valori>()?;
    Ok(())
}
