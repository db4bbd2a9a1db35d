// `sqlx::migrate!` embeds the files of `migrations/` at compile time, but on stable Rust the
// compiler is not told to watch that folder: without this, a new migration is missed until
// something else changes (sqlx's own advice, `sqlx migrate build-script`).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
