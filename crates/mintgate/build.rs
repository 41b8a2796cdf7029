//! `sqlx::migrate!` embeds `migrations/` at compile time: rebuild when a migration is added or
//! changed (otherwise a new migration file leaves the binary without it).

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
