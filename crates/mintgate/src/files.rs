//! Permissions of the files the service keeps: the database holds every execution's input (an
//! end user's personal data) and its folder must not be readable by other users of the machine.
//!
//! Files are created `0600` and folders `0700` (`0640` and `0750` with `service.group_access`, for
//! a backup or monitoring user in the service's group); an existing file that is more open than
//! that is tightened, and the change is logged. Existing folders are left as they are (a database
//! in `/tmp` must not close `/tmp`), with a warning when other users may read them. SQLite creates its `-wal` and `-shm`
//! files with the database file's mode, so securing the database file secures them too.

use std::path::Path;

use anyhow::Context as _;

/// The mode of a file the service creates.
pub fn file_mode(group_access: bool) -> u32 {
    if group_access { 0o640 } else { 0o600 }
}

/// The mode of a folder the service creates.
pub fn folder_mode(group_access: bool) -> u32 {
    if group_access { 0o750 } else { 0o700 }
}

/// Creates `path` (and missing parents) as a private folder; warns about an existing one that
/// other users may read.
pub fn private_folder(path: &Path, group_access: bool) -> anyhow::Result<()> {
    let mode = folder_mode(group_access);
    if path.exists() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let current = std::fs::metadata(path)
                .with_context(|| format!("reading the permissions of {}", path.display()))?
                .permissions()
                .mode();
            if current & 0o007 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{:o}", current & 0o777),
                    "other users of this machine may list this folder; the files in it are private"
                );
            }
        }
        return Ok(());
    }
    {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt as _;
            builder.mode(mode);
        }
        builder
            .create(path)
            .with_context(|| format!("creating the folder {}", path.display()))?;
    }
    Ok(())
}

/// Creates `path` empty as a private file if it does not exist (its folder must), or tightens an
/// existing one. Never follows a symbolic link at `path`.
pub fn private_file(path: &Path, group_access: bool) -> anyhow::Result<()> {
    let mode = file_mode(group_access);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode).custom_flags(libc::O_NOFOLLOW);
    }
    options
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    tighten(path, mode)
}

/// Removes permission bits beyond `mode` (never adds any).
fn tighten(path: &Path, mode: u32) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let metadata = std::fs::symlink_metadata(path)
            .with_context(|| format!("reading the permissions of {}", path.display()))?;
        if metadata.file_type().is_symlink() {
            anyhow::bail!("{} is a symbolic link; refusing to use it", path.display());
        }
        let current = metadata.permissions().mode() & 0o777;
        let wanted = current & mode;
        if wanted != current {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(wanted))
                .with_context(|| format!("restricting the permissions of {}", path.display()))?;
            tracing::warn!(
                path = %path.display(),
                from = format!("{current:o}"),
                to = format!("{wanted:o}"),
                "permissions were wider than the service allows; restricted"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// The file behind a `sqlite:` URL (`sqlite://path`, `sqlite:path`, with or without `?…`), or
/// none for an in-memory database.
pub fn sqlite_path(url: &str) -> Option<&Path> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    Some(Path::new(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_and_folders_are_created_private_and_loose_ones_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("a/b");
        private_folder(&folder, false).unwrap();
        assert_eq!(mode(&folder), 0o700);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        // An existing folder is not changed.
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_folder(&folder, false).unwrap();
        assert_eq!(mode(&folder), 0o755);
        let file = folder.join("mintgate.db");
        private_file(&file, false).unwrap();
        assert_eq!(mode(&file), 0o600);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        private_file(&file, false).unwrap();
        assert_eq!(mode(&file), 0o600);
        // Group access keeps the group's read bit, never adds the world's.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o664)).unwrap();
        private_file(&file, true).unwrap();
        assert_eq!(mode(&file), 0o640);
    }

    #[test]
    fn a_symbolic_link_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "x").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = dir.path().join("mintgate.db");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(private_file(&link, false).is_err());
        assert_eq!(mode(&target), 0o644, "the link's target was left alone");
    }

    #[test]
    fn the_file_of_a_sqlite_url_is_found() {
        assert_eq!(
            sqlite_path("sqlite:///var/lib/m.db?mode=rwc"),
            Some(Path::new("/var/lib/m.db"))
        );
        assert_eq!(sqlite_path("sqlite://m.db"), Some(Path::new("m.db")));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://x"), None);
    }
}
