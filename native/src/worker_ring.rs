//! The hot path across processes (`kefu serve --workers N`): frames up, deliveries down, in Rust.
//!
//! * [`RingForwarder`] runs in a gateway worker. It hands the Cython gateway the same C vtable as
//!   the data plane ([`DataPlaneVtable`]), but its `handle` writes the complete frame, as received,
//!   into the ingress ring (an `F` record of `kefu_shmring::records`) and says "taken": the worker
//!   never decodes a client frame. When the ring is full it declines, and the gateway's Python path
//!   answers `unavailable` (nothing was stored).
//! * [`WorkerRouter`] runs in the control process, beside the one data plane. `feed` runs a batch of
//!   ingress records through the data plane, stopping at the first record Python must see (a pickled
//!   control record, or a frame the data plane declined) so that order per connection is kept;
//!   `route` turns the data plane's deliveries into one `D` record per worker; `send` queues the
//!   control plane's own (pickled) records on the same rings, so everything a worker receives stays
//!   in the order it was produced. A ring that is full keeps its records in a per-worker backlog, in
//!   order; `flush` retries them.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::ffi::{c_char, c_int, c_void};

use kefu_dataplane::Handled;
use kefu_shmring::records::{decode_frame, encode_delivery, FrameRecord};
use kefu_shmring::PushError;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyCapsule, PyList};

use crate::dataplane::{
    ctx_cell, DataPlane, DataPlaneVtable, CAPSULE_NAME, HANDLED_DECLINED, HANDLED_TAKEN,
};
use crate::shmring::ShmRing;

// --- worker side ---------------------------------------------------------------------------------

struct ForwarderInner {
    ring: Py<ShmRing>,
    worker: u16,
    generation: u32,
    pid: u32,
    /// slot → serial of the connection holding it (set by the worker when a connection arrives).
    serials: Vec<u32>,
    scratch: Vec<u8>,
    forwarded: u64,
    refused: u64,
}

/// A worker's stand-in for the data plane: every frame goes up the ingress ring untouched.
#[pyclass(module = "kefu._native", unsendable)]
pub struct RingForwarder {
    // Boxed: the vtable's ctx points at it.
    inner: Box<RefCell<ForwarderInner>>,
}

unsafe extern "C" fn fw_handle(
    ctx: *mut c_void,
    slot: u32,
    data: *const c_char,
    len: usize,
    binary: c_int,
    now_wall: f64,
    now_mono: f64,
) -> c_int {
    let Ok(mut inner) = ctx_cell::<ForwarderInner>(ctx).try_borrow_mut() else {
        return HANDLED_DECLINED;
    };
    let Some(&serial) = inner.serials.get(slot as usize) else {
        return HANDLED_DECLINED; // not bound: the Python path relays it (and control sorts it out)
    };
    let record = FrameRecord {
        binary: binary != 0,
        worker: inner.worker,
        generation: inner.generation,
        slot,
        serial,
        now_wall,
        now_mono,
        payload: std::slice::from_raw_parts(data.cast::<u8>(), len),
    };
    let ForwarderInner {
        ring, pid, scratch, ..
    } = &mut *inner;
    record.encode_into(scratch);
    if ring.get().push_bytes(scratch, *pid) {
        inner.forwarded += 1;
        HANDLED_TAKEN
    } else {
        inner.refused += 1;
        HANDLED_DECLINED
    }
}

unsafe extern "C" fn fw_take(_: *mut c_void) -> usize {
    0
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn fw_get(
    _: *mut c_void,
    _: usize,
    _: *mut *const u32,
    slot_count: *mut usize,
    _: *mut *mut c_char,
    json_len: *mut usize,
    _: *mut *mut c_char,
    binary_len: *mut usize,
) {
    *slot_count = 0;
    *json_len = 0;
    *binary_len = 0;
}

unsafe extern "C" fn fw_clear(_: *mut c_void) {}

unsafe extern "C" fn fw_queued(_: *mut c_void) -> usize {
    0
}

#[pymethods]
impl RingForwarder {
    #[new]
    fn new(ring: Py<ShmRing>, worker: u16, generation: u32) -> Self {
        RingForwarder {
            inner: Box::new(RefCell::new(ForwarderInner {
                ring,
                worker,
                generation,
                pid: std::process::id(),
                serials: Vec::new(),
                scratch: Vec::new(),
                forwarded: 0,
                refused: 0,
            })),
        }
    }

    /// The C vtable for the gateway (same layout and capsule name as `DataPlane.capsule`). Keep
    /// this object alive while the gateway uses it.
    fn capsule<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        let vtable = DataPlaneVtable {
            ctx: std::ptr::from_ref::<RefCell<ForwarderInner>>(&self.inner)
                .cast_mut()
                .cast(),
            handle: fw_handle,
            take: fw_take,
            get: fw_get,
            clear: fw_clear,
            queued: fw_queued,
        };
        PyCapsule::new_with_value(py, vtable, CAPSULE_NAME)
    }

    /// Connection `serial` now holds `slot`: its frames are forwarded with that name.
    fn bind(&self, slot: u32, serial: u32) -> PyResult<()> {
        let mut inner = self.inner.try_borrow_mut().map_err(busy)?;
        let slot = slot as usize;
        if inner.serials.len() <= slot {
            inner.serials.resize(slot + 1, 0);
        }
        inner.serials[slot] = serial;
        Ok(())
    }

    /// (frames forwarded, frames refused because the ring was full).
    fn stats(&self) -> PyResult<(u64, u64)> {
        let inner = self.inner.try_borrow().map_err(busy)?;
        Ok((inner.forwarded, inner.refused))
    }
}

fn busy<E>(_: E) -> PyErr {
    PyRuntimeError::new_err("busy (re-entered)")
}

// --- control side --------------------------------------------------------------------------------

struct Link {
    generation: u32,
    ring: Py<ShmRing>,
    /// Records the ring could not take yet, oldest first; nothing newer may overtake them.
    backlog: VecDeque<Vec<u8>>,
}

impl Link {
    /// Pushes `record`, or keeps a copy behind the ones already waiting (copied only then).
    fn send(&mut self, record: &[u8], pid: u32) {
        if self.backlog.is_empty() && self.ring.get().push_bytes(record, pid) {
            return;
        }
        self.backlog.push_back(record.to_vec());
    }

    fn flush(&mut self, pid: u32) {
        while let Some(record) = self.backlog.front() {
            if !self.ring.get().push_bytes(record, pid) {
                return;
            }
            self.backlog.pop_front();
        }
    }
}

#[derive(Clone, Copy)]
struct Target {
    worker: u16,
    slot: u32,
    serial: u32,
}

/// The control process's end of the rings: worker connections as data-plane slots.
#[pyclass(module = "kefu._native", unsendable)]
pub struct WorkerRouter {
    links: Vec<Option<Link>>,
    /// Data-plane slot → the connection on its worker.
    targets: Vec<Option<Target>>,
    /// (worker, worker slot) → (data-plane slot, serial).
    slots: HashMap<(u16, u32), (u32, u32)>,
    pid: u32,
    scratch: Vec<u8>,
    dropped: u64,
}

impl WorkerRouter {
    fn link(&mut self, worker: u16) -> Option<&mut Link> {
        self.links.get_mut(worker as usize).and_then(Option::as_mut)
    }

    /// The data-plane slot of a frame record's connection, if it is current.
    fn slot_of(&self, frame: &FrameRecord<'_>) -> Option<u32> {
        let link = self.links.get(frame.worker as usize)?.as_ref()?;
        if link.generation != frame.generation {
            return None;
        }
        match self.slots.get(&(frame.worker, frame.slot)) {
            Some(&(slot, serial)) if serial == frame.serial => Some(slot),
            _ => None,
        }
    }
}

#[pymethods]
impl WorkerRouter {
    #[new]
    fn new() -> Self {
        WorkerRouter {
            links: Vec::new(),
            targets: Vec::new(),
            slots: HashMap::new(),
            pid: std::process::id(),
            scratch: Vec::new(),
            dropped: 0,
        }
    }

    /// Worker `worker` (incarnation `generation`) reads `ring`; replaces an earlier incarnation.
    fn attach(&mut self, worker: u16, generation: u32, ring: Py<ShmRing>) {
        self.detach(worker);
        let index = worker as usize;
        if self.links.len() <= index {
            self.links.resize_with(index + 1, || None);
        }
        self.links[index] = Some(Link {
            generation,
            ring,
            backlog: VecDeque::new(),
        });
    }

    /// The worker is gone: its ring, backlog and connections are forgotten.
    fn detach(&mut self, worker: u16) {
        if let Some(link) = self.links.get_mut(worker as usize) {
            *link = None;
        }
        self.slots.retain(|&(owner, _), _| owner != worker);
        for target in &mut self.targets {
            if target.is_some_and(|t| t.worker == worker) {
                *target = None;
            }
        }
    }

    /// Data-plane slot `slot` is connection (`worker`, `worker_slot`, `serial`).
    fn map(&mut self, slot: u32, worker: u16, worker_slot: u32, serial: u32) {
        let index = slot as usize;
        if self.targets.len() <= index {
            self.targets.resize(index + 1, None);
        }
        self.targets[index] = Some(Target {
            worker,
            slot: worker_slot,
            serial,
        });
        self.slots.insert((worker, worker_slot), (slot, serial));
    }

    fn unmap(&mut self, slot: u32) {
        if let Some(Some(target)) = self.targets.get(slot as usize).copied() {
            if self
                .slots
                .get(&(target.worker, target.slot))
                .is_some_and(|&(s, _)| s == slot)
            {
                self.slots.remove(&(target.worker, target.slot));
            }
            self.targets[slot as usize] = None;
        }
    }

    /// Runs `records[start..]` through `plane` while they are frames it takes; returns the index of
    /// the first record Python must handle (a pickled record, or a frame the plane declined), or
    /// `len(records)`. Frames of connections that are gone (or of a dead worker) are dropped.
    fn feed(
        &mut self,
        plane: &DataPlane,
        records: &Bound<'_, PyList>,
        start: usize,
    ) -> PyResult<usize> {
        let mut inner = plane.inner.try_borrow_mut().map_err(busy)?;
        let count = records.len();
        for index in start..count {
            let item = records.get_item(index)?;
            let data = item.cast::<PyBytes>()?.as_bytes();
            let Some(frame) = decode_frame(data) else {
                return Ok(index);
            };
            let Some(slot) = self.slot_of(&frame) else {
                self.dropped += 1;
                continue;
            };
            let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                inner.plane.handle(
                    slot,
                    frame.payload,
                    frame.binary,
                    frame.now_wall,
                    frame.now_mono,
                )
            }));
            if matches!(handled, Ok(Handled::Declined) | Err(_)) {
                return Ok(index);
            }
        }
        Ok(count)
    }

    /// Writes the plane's pending deliveries to the workers' rings (one record per worker per
    /// frame). Returns True when some ring is backed up (call `flush` later).
    fn route(&mut self, plane: &DataPlane) -> PyResult<bool> {
        let mut inner = plane.inner.try_borrow_mut().map_err(busy)?;
        let deliveries = inner.plane.take_deliveries();
        inner.plane.frames_written();
        drop(inner);
        let mut per_worker: Vec<Vec<(u32, u32)>> = vec![Vec::new(); self.links.len()];
        for delivery in &deliveries {
            for targets in &mut per_worker {
                targets.clear();
            }
            for &slot in &delivery.slots {
                let Some(Some(target)) = self.targets.get(slot as usize) else {
                    continue;
                };
                // A slot mapped to a worker never attached has nowhere to go (never a panic).
                if let Some(targets) = per_worker.get_mut(target.worker as usize) {
                    targets.push((target.slot, target.serial));
                }
            }
            let json = delivery.frame.json_payload();
            let binary = delivery.frame.binary_payload().unwrap_or(&[]);
            for (worker, targets) in per_worker.iter().enumerate() {
                let Some(link) = self.links[worker].as_mut() else {
                    continue;
                };
                if !targets.is_empty() {
                    encode_delivery(&mut self.scratch, targets, json, binary);
                    link.send(&self.scratch, self.pid);
                }
            }
        }
        Ok(self.backed_up())
    }

    /// Queues `record` (already encoded: a pickled control record) for `worker`, after anything
    /// still waiting for it. Returns True when some ring is backed up. Unknown workers are ignored.
    fn send(&mut self, worker: u16, record: &[u8]) -> PyResult<bool> {
        let pid = self.pid;
        if let Some(link) = self.link(worker) {
            if record.len() > link.ring.get().max_record_len() {
                return Err(PyValueError::new_err(
                    "record larger than the ring's maximum",
                ));
            }
            link.send(record, pid);
        }
        Ok(self.backed_up())
    }

    /// Retries backed-up records; True while some remain.
    fn flush(&mut self) -> bool {
        let pid = self.pid;
        for link in self.links.iter_mut().flatten() {
            link.flush(pid);
        }
        self.backed_up()
    }

    fn backed_up(&self) -> bool {
        self.links
            .iter()
            .flatten()
            .any(|link| !link.backlog.is_empty())
    }

    /// Frames dropped because their connection or worker was gone.
    #[getter]
    fn dropped(&self) -> u64 {
        self.dropped
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RingForwarder>()?;
    m.add_class::<WorkerRouter>()?;
    Ok(())
}

impl ShmRing {
    /// One record into the ring; false when it is full (or the record can never fit).
    pub(crate) fn push_bytes(&self, record: &[u8], pid: u32) -> bool {
        match self.shared.ring().try_push(record, pid) {
            Ok(()) => {
                self.notify_consumer();
                true
            }
            Err(PushError::Full | PushError::Abandoned | PushError::TooLarge) => false,
        }
    }

    pub(crate) fn max_record_len(&self) -> usize {
        self.shared.ring().max_record()
    }
}
