//! Schema versions: the migrations a database has against the ones this binary carries.
//!
//! Only `mintgate serve` (and the lab's demo, benchmarks and tests) migrate. The operator commands
//! open the service's database as it is, and a database migrated by another version of mintgate
//! must not be read (or written) with the wrong idea of its tables: it gets a [`SchemaMismatch`]
//! that names both versions and what to do.

use std::fmt;

use sqlx::migrate::Migrator;

/// How a store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the database if needed and bring its schema up to date (`mintgate serve`).
    Migrate,
    /// Write to an existing database whose schema is this binary's; never migrate
    /// (`mintgate dead-letters retry`).
    ReadWrite,
    /// Read an existing database whose schema is this binary's, through read-only connections
    /// (`mintgate inspect`, `mintgate dead-letters`).
    ReadOnly,
}

/// One migration, as a database records it or as this binary carries it.
#[derive(Debug, Clone)]
pub struct Migration {
    pub version: i64,
    pub description: String,
    pub checksum: Vec<u8>,
    /// False if it failed part-way (only a database records that).
    pub success: bool,
}

/// The migrations this binary carries.
pub fn expected(migrator: &Migrator) -> Vec<Migration> {
    migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| Migration {
            version: m.version,
            description: m.description.to_string(),
            checksum: m.checksum.to_vec(),
            success: true,
        })
        .collect()
}

/// A schema version for messages: `2 (spend ledger)`, or `0 (no mintgate tables)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub number: i64,
    pub description: String,
}

impl Version {
    fn latest(migrations: &[Migration]) -> Self {
        migrations.iter().max_by_key(|m| m.version).map_or_else(
            || Self {
                number: 0,
                description: "no mintgate tables".to_owned(),
            },
            |m| Self {
                number: m.version,
                description: m.description.clone(),
            },
        )
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.number, self.description)
    }
}

/// The database's schema is not the one this binary reads and writes.
#[derive(Debug, thiserror::Error)]
pub enum SchemaMismatch {
    #[error(
        "the database's schema is at version {database}, older than this mintgate's version \
         {binary}: run `mintgate serve` once with this configuration (it migrates the database), \
         then run this command again"
    )]
    Older { database: Version, binary: Version },
    #[error(
        "the database's schema is at version {database}, newer than this mintgate's version \
         {binary} (a newer mintgate migrated it): upgrade mintgate to the version that serves \
         this database"
    )]
    Newer { database: Version, binary: Version },
    #[error(
        "migration {version} ({description}) in the database differs from this mintgate's: it was \
         made by a different build of mintgate; use that build, or restore the database from a \
         backup"
    )]
    Changed { version: i64, description: String },
    #[error(
        "migration {version} ({description}) failed part-way in this database: repair the \
         database by hand (or restore it from a backup), then run `mintgate serve` to finish \
         migrating"
    )]
    Dirty { version: i64, description: String },
}

/// Refuses a database that a newer (or different) mintgate migrated, or whose migration failed;
/// an older schema is fine: the caller migrates it.
pub fn check_not_newer(found: &[Migration], binary: &[Migration]) -> Result<(), SchemaMismatch> {
    if let Some(dirty) = found.iter().find(|m| !m.success) {
        return Err(SchemaMismatch::Dirty {
            version: dirty.version,
            description: dirty.description.clone(),
        });
    }
    if found
        .iter()
        .any(|m| !binary.iter().any(|b| b.version == m.version))
    {
        return Err(SchemaMismatch::Newer {
            database: Version::latest(found),
            binary: Version::latest(binary),
        });
    }
    for applied in found {
        if let Some(ours) = binary.iter().find(|b| b.version == applied.version)
            && ours.checksum != applied.checksum
        {
            return Err(SchemaMismatch::Changed {
                version: applied.version,
                description: applied.description.clone(),
            });
        }
    }
    Ok(())
}

/// Accepts only a database whose schema is exactly this binary's.
pub fn check_current(found: &[Migration], binary: &[Migration]) -> Result<(), SchemaMismatch> {
    check_not_newer(found, binary)?;
    if binary
        .iter()
        .any(|b| !found.iter().any(|m| m.version == b.version))
    {
        return Err(SchemaMismatch::Older {
            database: Version::latest(found),
            binary: Version::latest(binary),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migration(version: i64, checksum: u8) -> Migration {
        Migration {
            version,
            description: format!("step {version}"),
            checksum: vec![checksum],
            success: true,
        }
    }

    #[test]
    fn the_same_migrations_are_current() {
        let binary = [migration(1, 1), migration(2, 2)];
        check_current(&binary, &binary).unwrap();
    }

    #[test]
    fn a_missing_migration_is_an_older_schema_that_serve_may_migrate() {
        let binary = [migration(1, 1), migration(2, 2)];
        let found = [migration(1, 1)];
        check_not_newer(&found, &binary).unwrap();
        let error = check_current(&found, &binary).unwrap_err();
        assert!(matches!(error, SchemaMismatch::Older { .. }));
        let text = error.to_string();
        assert!(text.contains("version 1 (step 1)"), "{text}");
        assert!(text.contains("version 2 (step 2)"), "{text}");
        assert!(text.contains("mintgate serve"), "{text}");
    }

    #[test]
    fn an_empty_database_is_at_version_zero() {
        let binary = [migration(1, 1)];
        let text = check_current(&[], &binary).unwrap_err().to_string();
        assert!(text.contains("version 0 (no mintgate tables)"), "{text}");
    }

    #[test]
    fn an_unknown_migration_is_a_newer_schema_that_nothing_may_touch() {
        let binary = [migration(1, 1)];
        let found = [migration(1, 1), migration(2, 2)];
        let error = check_not_newer(&found, &binary).unwrap_err();
        assert!(matches!(error, SchemaMismatch::Newer { .. }));
        let text = error.to_string();
        assert!(text.contains("version 2 (step 2)"), "{text}");
        assert!(text.contains("version 1 (step 1)"), "{text}");
        assert!(text.contains("upgrade mintgate"), "{text}");
    }

    #[test]
    fn a_changed_or_failed_migration_is_refused() {
        let binary = [migration(1, 1)];
        assert!(matches!(
            check_not_newer(&[migration(1, 9)], &binary),
            Err(SchemaMismatch::Changed { version: 1, .. })
        ));
        let failed = Migration {
            success: false,
            ..migration(1, 1)
        };
        assert!(matches!(
            check_not_newer(&[failed], &binary),
            Err(SchemaMismatch::Dirty { version: 1, .. })
        ));
    }
}
