//! Full-precision vectors in memory-mapped files instead of the heap (the node's
//! `--vectors-on-disk`, and the benchmark programs' flag of the same name).
//!
//! Searches walk the compact copy and the graph, which stay on the heap; the full-precision
//! vectors are read only to rerank a search's few candidates, to quantise new rows and to
//! hash or snapshot the state. In files, the pages of those vectors are the system's page
//! cache: resident while there is memory to spare, written back and dropped under memory
//! pressure (a container's limit included) and read again when a rerank needs them. Nothing
//! else changes: the kernel places each chunk of vectors in a region this store maps
//! ([`valori_kernel::rows::ChunkStore`]) and reads and writes it as it would heap memory, so
//! results, encodings and hashes are the same bytes.
//!
//! The files are scratch, not storage: the node's log and snapshots hold the vectors durably,
//! and every file is unlinked while it is mapped (`O_TMPFILE`, or a name removed at once), so
//! a crash leaves nothing behind and the space is freed when the chunk is dropped.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use valori_kernel::rows::{ChunkStore, Region};

/// Told of every change in the bytes mapped: `+len` when a region is mapped, `-len` when it is
/// released (the node keeps its `valori_vectors_mapped_bytes` gauge with it).
pub type OnMapped = Arc<dyn Fn(i64) + Send + Sync>;

/// Maps a new file of one directory for each chunk of full-precision vectors.
pub struct VectorFiles {
    dir: PathBuf,
    /// Names files where `O_TMPFILE` is not supported.
    next: AtomicU64,
    on_mapped: OnMapped,
}

impl VectorFiles {
    /// The store of `dir`: creates it and removes any file a crash left there. A directory
    /// that cannot hold a mapping is refused here, not at the first insert.
    pub fn open(dir: &Path, on_mapped: OnMapped) -> io::Result<Arc<dyn ChunkStore>> {
        std::fs::create_dir_all(dir)?;
        for entry in std::fs::read_dir(dir)? {
            std::fs::remove_file(entry?.path())?;
        }
        let files = VectorFiles {
            dir: dir.to_path_buf(),
            next: AtomicU64::new(0),
            on_mapped,
        };
        drop(files.map(64)?);
        Ok(Arc::new(files))
    }

    /// A new file of `bytes` zeros, already unlinked.
    fn file(&self, bytes: usize) -> io::Result<File> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).mode(0o600);
        let file = match options
            .clone()
            .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
            .open(&self.dir)
        {
            Ok(file) => file,
            // Filesystems without unnamed files: a name, removed as soon as it is open.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                let path = self.dir.join(format!("chunk-{n}"));
                let file = options.create_new(true).open(&path)?;
                std::fs::remove_file(&path)?;
                file
            }
            Err(e) => return Err(e),
        };
        file.set_len(bytes as u64)?;
        Ok(file)
    }

    fn map(&self, bytes: usize) -> io::Result<Region> {
        let file = self.file(bytes)?;
        // SAFETY: the file is unlinked and ours alone: nothing else can change it under the
        // mapping.
        let mut map = unsafe { memmap2::MmapOptions::new().len(bytes).map_mut(&file)? };
        // Reranks read single rows at random places: no read-ahead around them.
        let _ = map.advise(memmap2::Advice::Random);
        let ptr = NonNull::new(map.as_mut_ptr()).expect("a mapping is never at address 0");
        (self.on_mapped)(bytes as i64);
        let release = Unmap {
            _map: map,
            bytes,
            on_mapped: self.on_mapped.clone(),
        };
        // SAFETY: a fresh mapping of a new file of `bytes` zeros, page-aligned, writable, and
        // used by nothing else until `release` (which owns it) is dropped.
        Ok(unsafe { Region::new(ptr, bytes, Box::new(release)) })
    }
}

impl ChunkStore for VectorFiles {
    fn allocate(&self, bytes: usize) -> Option<Region> {
        match self.map(bytes) {
            Ok(region) => Some(region),
            Err(e) => {
                // The chunk lives on the heap instead: the program goes on, with more memory.
                tracing::warn!(error = %e, dir = %self.dir.display(), bytes, "cannot map a file for vectors; keeping this chunk in memory");
                None
            }
        }
    }
}

/// Unmaps a region (the file goes with its last mapping).
struct Unmap {
    _map: memmap2::MmapMut,
    bytes: usize,
    on_mapped: OnMapped,
}

impl Drop for Unmap {
    fn drop(&mut self) {
        (self.on_mapped)(-(self.bytes as i64));
    }
}
