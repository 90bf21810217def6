//! Layout files: reads a cluster's layout from disk. Parsing and validation are
//! [`cairn_core::layout`]'s; this is the file system half.

use std::path::Path;

use cairn_core::layout::{Layout, LayoutError};

/// Reads, parses and validates the layout file at `path`.
pub fn load_layout(path: &Path) -> Result<Layout, LayoutError> {
    let text = std::fs::read_to_string(path).map_err(|e| LayoutError::Read {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    Layout::from_toml_str(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
version = 1
replication_factor = 1
write_quorum = 1

[[nodes]]
id = "n1"
addr = "127.0.0.1:7401"
zone = "zone-a"
weight = 100
"#;

    #[test]
    fn load_reads_a_file_and_names_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("layout.toml");
        std::fs::write(&path, EXAMPLE).unwrap();
        let example = Layout::from_toml_str(EXAMPLE).unwrap();
        assert_eq!(load_layout(&path).unwrap(), example);
        let missing = dir.path().join("missing.toml");
        let err = load_layout(&missing).unwrap_err();
        assert!(matches!(&err, LayoutError::Read { path, .. } if *path == missing));
        assert!(err.to_string().contains("missing.toml"));
    }
}
