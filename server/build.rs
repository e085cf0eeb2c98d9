//! The web client (`../web-client/public/`) is embedded by `rust-embed` (see `src/http.rs`); this
//! script only refuses to build a server without it: a missing or empty folder is an error, not
//! a binary that answers every page with 404.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let public = manifest.join("..").join("web-client").join("public");
    // A directory is scanned recursively by cargo for changes (files added or removed).
    println!("cargo:rerun-if-changed={}", public.display());
    println!("cargo:rerun-if-changed=build.rs");
    let files = std::fs::read_dir(&public)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0);
    if files == 0 {
        panic!(
            "{} is missing or empty: the server embeds the web client, so build it from a \
             checkout that has web-client/public",
            public.display()
        );
    }
}
