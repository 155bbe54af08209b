//! The tansu binary `scripts/stack up` built, for tests that start a broker of their own; shared by the
//! integration and fault suites (each includes this file with `#[path]`).

use std::path::{Path, PathBuf};

/// `COSTSIM_TANSU_BIN`, else the binary under the stack's cache folders.
pub fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("COSTSIM_TANSU_BIN") {
        return bin.into();
    }
    let mut caches: Vec<PathBuf> = std::env::var_os("COSTSIM_CACHE_DIR").map(PathBuf::from).into_iter().collect();
    caches.push("/var/cache/costsim-breaker".into());
    if let Some(home) = std::env::var_os("HOME") {
        caches.push(Path::new(&home).join(".cache/costsim-breaker"));
    }
    caches
        .iter()
        .map(|c| c.join("tansu/bin/tansu"))
        .find(|b| b.exists())
        .expect("the tansu binary (run `scripts/stack up` once, or set COSTSIM_TANSU_BIN)")
}
