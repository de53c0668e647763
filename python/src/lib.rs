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
use pyo3::types::{PyBytes, PyList, PyTuple};
use valori_api as wire;
use valori_kernel::limits::DEFAULT_COLLECTION;
use valori_node::service::{parse_direction, parse_metric, score, RecordIn};

use api::{Api, ApiError, Kind, Res};
use convert::{blob, Input};

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
    #[pyo3(signature = (path=None, *, remote=None, api_key=None, timeout=30.0, ca_cert=None))]
    fn new(
        py: Python<'_>,
        path: Option<PathBuf>,
        remote: Option<String>,
        api_key: Option<String>,
        timeout: f64,
        ca_cert: Option<PathBuf>,
    ) -> PyResult<Valori> {
        let made: Res<Valori> = py.detach(|| match (path, remote) {
            (Some(_), Some(_)) => Err(ApiError::invalid(
                "give either path (embedded) or remote (a node's URL), not both",
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
                let e = embedded::Embedded::open(dir)?;
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

    /// The `k` nearest records, nearest first (ties by id).
    #[pyo3(signature = (vector, k=10, tag=None, *, collection=DEFAULT_COLLECTION, ef=None, with_metadata=false))]
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
    ) -> PyResult<Bound<'py, PyList>> {
        let input = Input::vector(vector)?;
        let rows = input.rows();
        let hits = self.run(py, move |a| {
            a.search(
                collection.to_string(),
                wire::SearchRequest {
                    vector: rows.row(0),
                    k,
                    tag,
                    ef,
                    with_metadata,
                    filter: None,
                    score_threshold: None,
                    exact: false,
                    include: None,
                },
            )
        })?;
        let items = hits
            .into_iter()
            .map(|h| {
                make(
                    py,
                    "SearchResult",
                    (
                        h.id,
                        score(h.distance),
                        h.distance,
                        h.tag,
                        h.metadata.flatten().map(|m| PyBytes::new(py, &m)),
                    ),
                )
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    /// Creates a graph node, optionally linked to a record `(collection, id)`; returns its id.
    #[pyo3(signature = (kind, *, record=None, properties=None))]
    fn create_node(
        &self,
        py: Python<'_>,
        kind: String,
        record: Option<(String, u64)>,
        properties: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let properties = blob(properties, "properties").map_err(|e| to_py(py, e))?;
        let record = record.map(|(collection, id)| wire::RecordRef { collection, id });
        self.run(py, |a| a.create_node(kind, record, properties))
    }

    /// A graph node.
    fn get_node<'py>(&self, py: Python<'py>, id: u64) -> PyResult<Bound<'py, PyAny>> {
        let n = self.run(py, |a| a.get_node(id))?;
        make(
            py,
            "GraphNode",
            (
                n.id,
                n.kind,
                n.record,
                bytes_or_none(py, n.properties.as_deref()),
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
