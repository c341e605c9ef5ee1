//! Owner-only secret files: the agent's plugin secret, the coordinator's agent token and API token.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("secret file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret file {0} is empty; write a secret into it or remove it to have one created")]
    Empty(PathBuf),
}

/// Reads a secret file, or creates it (0600, 32 random bytes as hex) when `create` and it does not exist.
pub fn read_or_create(path: &Path, create: bool) -> Result<String, Error> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Ok(_) => Err(Error::Empty(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let mut bytes = [0u8; 32];
            let mut f = std::fs::File::open("/dev/urandom").map_err(io)?;
            std::io::Read::read_exact(&mut f, &mut bytes).map_err(io)?;
            let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            std::io::Write::write_all(&mut out, secret.as_bytes()).map_err(io)?;
            Ok(secret)
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_owner_only_then_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/token");
        assert!(
            read_or_create(&p, false).is_err(),
            "not created unless asked"
        );
        let s = read_or_create(&p, true).unwrap();
        assert_eq!(s.len(), 64);
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_or_create(&p, true).unwrap(), s);
        std::fs::write(&p, "  \n").unwrap();
        let e = read_or_create(&p, true).unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
    }
}
