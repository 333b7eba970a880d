//! `top --json FILE`: one NDJSON object per interval and vCPU, each line written
//! and flushed as it is made (a `tail -f` or a crash sees whole lines).

use std::io::Write;
use std::path::{Path, PathBuf};
use thiserror::Error;
use tickburst_analysis::top::TopRow;

/// Why the NDJSON file could not be written.
#[derive(Debug, Error)]
pub enum NdjsonError {
    /// Creating or writing the file failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The open NDJSON file.
#[derive(Debug)]
pub struct NdjsonWriter {
    file: std::fs::File,
    path: PathBuf,
}

impl NdjsonWriter {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path) -> Result<NdjsonWriter, NdjsonError> {
        let file = std::fs::File::create(path).map_err(|source| NdjsonError::Write {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(NdjsonWriter {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Writes one row as one line, in one `write` (unbuffered: nothing is
    /// left to flush when `top` ends).
    pub fn write(&mut self, row: &TopRow) -> Result<(), NdjsonError> {
        let mut line = row.to_ndjson();
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|source| NdjsonError::Write {
                path: self.path.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickburst_analysis::top::Backend;

    #[test]
    fn lines_are_whole_and_parse_back() {
        let path =
            std::env::temp_dir().join(format!("tickburst-ndjson-{}.json", std::process::id()));
        let mut w = NdjsonWriter::create(&path).unwrap();
        let row = TopRow {
            t_s: 1.0,
            interval_s: 1.0,
            pid: 5,
            name: "x\"y".into(),
            sw_per_s: Some(1000.0),
            backend: Backend::Sw,
            left_hv: Some(0),
            longest_run: Some(1),
            longest_run_late_ms: Some(0.0),
            longest_run_us: Some(1.5),
            ..TopRow::default()
        };
        w.write(&row).unwrap();
        w.write(&row).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let rows: Vec<TopRow> = text
            .lines()
            .map(|l| TopRow::from_ndjson(l).unwrap())
            .collect();
        assert_eq!(rows, [row.clone(), row]);
        std::fs::remove_file(&path).unwrap();
        assert!(NdjsonWriter::create(Path::new("/nonexistent/dir/x.json")).is_err());
    }
}
