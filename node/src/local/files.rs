//! The small files a node keeps in its data directory beside its stores: the layout it adopted
//! (and the one before it), where its scrub pass stands, and when it last wrote down that it
//! was alive. Layouts are written durably (temporary file, fsync, rename, directory fsync); the
//! other two are hints that a lost write only makes slightly stale.

use std::io::Write;
use std::path::{Path, PathBuf};

use cairn_core::layout::Layout;

const ADOPTED_LAYOUT_FILE: &str = "layout.toml";
const PREVIOUS_LAYOUT_FILE: &str = "layout.previous.toml";
const SCRUB_CURSOR_FILE: &str = "scrub.cursor";
const ALIVE_FILE: &str = "alive.ms";

/// A file of the data directory could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct FileError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The layout this node adopted from its peers, if any (`None` also when it cannot be read:
/// the configured layout is used then).
pub fn adopted_layout(data_dir: &Path) -> Option<Layout> {
    read_layout(&data_dir.join(ADOPTED_LAYOUT_FILE))
}

/// The layout before the adopted one, if it is kept.
pub fn previous_layout(data_dir: &Path) -> Option<Layout> {
    read_layout(&data_dir.join(PREVIOUS_LAYOUT_FILE))
}

fn read_layout(path: &Path) -> Option<Layout> {
    let text = std::fs::read_to_string(path).ok()?;
    Layout::from_toml_str(&text).ok()
}

/// Keeps an adopted layout, and the one it replaces, for restarts (durably, before the node
/// acts on them).
pub fn save_layouts(
    data_dir: &Path,
    layout: &Layout,
    previous: Option<&Layout>,
) -> Result<(), FileError> {
    if let Some(p) = previous {
        let path = data_dir.join(PREVIOUS_LAYOUT_FILE);
        write_durably(&path, p.to_toml_string().as_bytes())
            .map_err(|source| FileError { path, source })?;
    }
    let path = data_dir.join(ADOPTED_LAYOUT_FILE);
    write_durably(&path, layout.to_toml_string().as_bytes())
        .map_err(|source| FileError { path, source })
}

/// Forgets the previous layout (its moves are over), durably.
pub fn forget_previous_layout(data_dir: &Path) -> Result<(), FileError> {
    let path = data_dir.join(PREVIOUS_LAYOUT_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(FileError { path, source }),
    }
    std::fs::File::open(data_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| FileError {
            path: data_dir.to_path_buf(),
            source,
        })
}

/// The scrub cursor left by the last run.
pub fn scrub_cursor(data_dir: &Path) -> Option<[u8; 32]> {
    let bytes = std::fs::read(data_dir.join(SCRUB_CURSOR_FILE)).ok()?;
    bytes.try_into().ok()
}

/// When this node last wrote down that it was alive (`None`: never).
pub fn last_alive_ms(data_dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(data_dir.join(ALIVE_FILE)).ok()?;
    text.trim().parse().ok()
}

/// Writes down that the node is alive at `now_ms`, and where its scrub stands.
pub fn save_alive(data_dir: &Path, now_ms: u64, cursor: Option<[u8; 32]>) -> Result<(), FileError> {
    let path = data_dir.join(ALIVE_FILE);
    std::fs::write(&path, now_ms.to_string()).map_err(|source| FileError { path, source })?;
    if let Some(c) = cursor {
        let path = data_dir.join(SCRUB_CURSOR_FILE);
        std::fs::write(&path, c).map_err(|source| FileError { path, source })?;
    }
    Ok(())
}

/// Writes a file by temporary file, fsync and rename, so a crash leaves the old or the new.
pub fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Makes `dir` an empty directory (a front's spool: bodies spooled before a crash belong to
/// requests nobody was answered for).
pub fn empty_dir(dir: &Path) -> Result<PathBuf, FileError> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|source| FileError {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(dir.to_path_buf())
}
