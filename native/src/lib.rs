//! `kefu._native`: the only place where Rust meets CPython.
//!
//! Each submodule is a thin binding over a pure-Rust kernel crate (codec, queue, routing, textfeat):
//! it converts types and errors and holds no policy. Nothing here knows about sockets or databases.
//! Errors cross the boundary as Python exceptions, never as panics.

use pyo3::prelude::*;

mod codec;
mod dataplane;
pub mod journal;
mod mood;
mod queue;
mod routing;
mod shmring;
mod textfeat;
mod worker_ring;

#[pymodule(gil_used = false)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    codec::register(m)?;
    dataplane::register(m)?;
    journal::register(m)?;
    mood::register(m)?;
    queue::register(m)?;
    routing::register(m)?;
    shmring::register(m)?;
    textfeat::register(m)?;
    worker_ring::register(m)?;
    Ok(())
}
