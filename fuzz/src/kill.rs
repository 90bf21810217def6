//! `KillSwitch`: a `Storage` over `MemStorage` that "kills the process" after a chosen number of
//! changes to the file system. From that change on, every change fails and touches nothing, so
//! the `MemStorage` underneath is frozen in the state a SIGKILL at that instant leaves (the
//! page cache survives a killed process). For a power loss instead, a `MemStorage::crash`
//! snapshot is taken at the same instant.
//!
//! Changes are the calls that alter files or names: create, rename, remove, sync_dir, set_len,
//! write_at and sync_data. Reads pass through.

use std::any::Any;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cairn_engine::storage::{Mapping, MemStorage, Storage, StorageFile};

/// How the process dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Death {
    /// SIGKILL: everything written so far stays.
    Kill,
    /// Power loss: what `MemStorage::crash(seed)` keeps.
    PowerLoss { seed: u64 },
}

#[derive(Debug)]
struct State {
    mem: MemStorage,
    death: Death,
    /// Changes still allowed before the death.
    changes_left: AtomicU64,
    /// Set at the death: the file system a power loss leaves.
    after_power_loss: Mutex<Option<MemStorage>>,
}

/// A `Storage` that dies after `changes` changes.
#[derive(Debug, Clone)]
pub struct KillSwitch {
    state: Arc<State>,
}

#[derive(Debug)]
struct KillableFile {
    inner: Arc<dyn StorageFile>,
    state: Arc<State>,
}

fn killed() -> io::Error {
    io::Error::other("the process was killed")
}

impl State {
    /// Counts one change; fails if the process is (now) dead.
    fn change(&self) -> io::Result<()> {
        let left = self
            .changes_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match left {
            Err(_) => Err(killed()),
            Ok(1) => {
                if let Death::PowerLoss { seed } = self.death {
                    *self.after_power_loss.lock().expect("not poisoned") =
                        Some(self.mem.crash(seed));
                }
                Err(killed())
            }
            Ok(_) => Ok(()),
        }
    }
}

impl KillSwitch {
    /// Dies at the `changes`-th change (counting from 1): it and every later one fail without
    /// effect. With `u64::MAX`, never dies in practice.
    pub fn new(mem: MemStorage, changes: u64, death: Death) -> KillSwitch {
        KillSwitch {
            state: Arc::new(State {
                mem,
                death,
                changes_left: AtomicU64::new(changes),
                after_power_loss: Mutex::new(None),
            }),
        }
    }

    pub fn is_dead(&self) -> bool {
        self.state.changes_left.load(Ordering::SeqCst) == 0
    }

    /// The file system the death left, once dead.
    pub fn remains(&self) -> Option<MemStorage> {
        if !self.is_dead() {
            return None;
        }
        match self.state.death {
            Death::Kill => Some(self.state.mem.clone()),
            Death::PowerLoss { .. } => self
                .state
                .after_power_loss
                .lock()
                .expect("not poisoned")
                .clone(),
        }
    }

    fn wrap(&self, inner: Arc<dyn StorageFile>) -> Arc<dyn StorageFile> {
        Arc::new(KillableFile {
            inner,
            state: self.state.clone(),
        })
    }
}

impl Storage for KillSwitch {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.state.mem.create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.state.mem.list_dir(dir)
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        self.state.change()?;
        Ok(self.wrap(self.state.mem.create(path)?))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        Ok(self.wrap(self.state.mem.open(path)?))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.state.change()?;
        self.state.mem.rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.state.change()?;
        self.state.mem.remove(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.state.change()?;
        self.state.mem.sync_dir(dir)
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn Any + Send + Sync>>> {
        self.state.mem.try_lock(path)
    }
}

impl StorageFile for KillableFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.state.change()?;
        self.inner.set_len(len)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.state.change()?;
        self.inner.write_at(buf, offset)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.state.change()?;
        self.inner.sync_data()
    }

    fn map(&self) -> io::Result<Arc<dyn Mapping>> {
        self.inner.map()
    }
}
