//! The shared mapping: one memfd holding the header, the stamp and owner words and the cells.
//!
//! Layout (offsets from the start, so every process may map it anywhere):
//! `[Header (one page)] [stamps: cells × u64] [owners: cells × u32] [pad to a page] [cells × cell_size]`.
//! The page size comes from `sysconf(_SC_PAGESIZE)` (4 KiB, 16 KiB and 64 KiB pages all exist).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::ring::{Header, Ring};
use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// "KEFURNG1": a mapping not made by this crate (or by another layout version) is refused.
const MAGIC: u64 = 0x4b45_4655_524e_4731;
/// Bounds on what a mapping may claim, so a foreign fd cannot make us map or index absurd sizes.
pub const MAX_CELLS: u64 = 1 << 24;
pub const MIN_CELL_SIZE: usize = 16;
pub const MAX_CELL_SIZE: usize = 1 << 16;

/// The OS page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as usize } else { 4096 }
}

struct Layout {
    stamps: usize,
    owners: usize,
    data: usize,
    total: usize,
}

fn layout(cells: u64, cell_size: usize) -> Layout {
    let page = page_size();
    let stamps = std::mem::size_of::<Header>().next_multiple_of(page);
    let owners = stamps + cells as usize * 8;
    let data = (owners + cells as usize * 4).next_multiple_of(page);
    let total = (data + cells as usize * cell_size).next_multiple_of(page);
    Layout { stamps, owners, data, total }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message.to_owned())
}

/// A ring in a shared mapping, owned by this view (unmapped on drop; the memory lives while any
/// process maps it or holds the fd).
pub struct SharedRing {
    ring: Ring,
    base: *mut libc::c_void,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the ring is Send + Sync; the mapping itself is only unmapped in Drop.
unsafe impl Send for SharedRing {}
// SAFETY: as above.
unsafe impl Sync for SharedRing {}

impl SharedRing {
    /// A new ring of `cells` cells of `cell_size` bytes (both powers of two) in a fresh memfd.
    pub fn create(name: &str, cells: u64, cell_size: usize) -> io::Result<Self> {
        if !cells.is_power_of_two() || !(2..=MAX_CELLS).contains(&cells) {
            return Err(invalid("cells must be a power of two in 2..=2^24"));
        }
        if !cell_size.is_power_of_two() || !(MIN_CELL_SIZE..=MAX_CELL_SIZE).contains(&cell_size) {
            return Err(invalid("cell_size must be a power of two in 16..=65536"));
        }
        let name = std::ffi::CString::new(name).map_err(|_| invalid("name contains NUL"))?;
        // SAFETY: a valid C string. Close-on-exec: a child gets the fd only when passed explicitly.
        let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: memfd_create returned a fresh fd that nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let plan = layout(cells, cell_size);
        // SAFETY: a valid fd; ftruncate zero-fills, which is the header's empty state.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), plan.total as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let shared = Self::map(fd, cells, cell_size, plan.total)?;
        let header = shared.header();
        header.cells.store(cells, Ordering::Relaxed);
        header.cell_size.store(cell_size as u64, Ordering::Relaxed);
        header.total_len.store(plan.total as u64, Ordering::Relaxed);
        shared.ring.initialise();
        header.magic.store(MAGIC, Ordering::Release);
        Ok(shared)
    }

    /// Maps a ring another process created, from its (inherited or passed) fd. The fd is duplicated,
    /// the caller keeps its own. Geometry is read from the header and checked against the file size.
    pub fn open(fd: RawFd) -> io::Result<Self> {
        // SAFETY: dup of a caller-provided fd; failure is reported.
        let raw = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd from F_DUPFD_CLOEXEC.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: zeroed stat is a valid out-parameter.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and out-pointer.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let file_len = stat.st_size as usize;
        if file_len < page_size() {
            return Err(invalid("not a ring: too small"));
        }
        // Map the header page alone first: its geometry decides the full mapping.
        let probe = Self::map_raw(fd.as_raw_fd(), page_size())?;
        // SAFETY: the page is mapped and Header fits in a page (align 64, size 256).
        let header = unsafe { &*(probe as *const Header) };
        let geometry = (
            header.magic.load(Ordering::Acquire),
            header.cells.load(Ordering::Relaxed),
            header.cell_size.load(Ordering::Relaxed) as usize,
            header.total_len.load(Ordering::Relaxed) as usize,
        );
        // SAFETY: unmapping what map_raw mapped.
        unsafe { libc::munmap(probe, page_size()) };
        let (magic, cells, cell_size, total) = geometry;
        let sane = magic == MAGIC
            && cells.is_power_of_two()
            && cells <= MAX_CELLS
            && cell_size.is_power_of_two()
            && (MIN_CELL_SIZE..=MAX_CELL_SIZE).contains(&cell_size)
            && layout(cells, cell_size).total == total
            && total <= file_len;
        if !sane {
            return Err(invalid("not a ring of this layout version"));
        }
        Self::map(fd, cells, cell_size, total)
    }

    fn map_raw(fd: RawFd, len: usize) -> io::Result<*mut libc::c_void> {
        // SAFETY: a shared read-write mapping of a file we hold; checked below.
        let base = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(base)
    }

    fn map(fd: OwnedFd, cells: u64, cell_size: usize, total: usize) -> io::Result<Self> {
        let base = Self::map_raw(fd.as_raw_fd(), total)?;
        let plan = layout(cells, cell_size);
        let bytes = base as *mut u8;
        // SAFETY: every region lies inside the `total` bytes just mapped, page- or 8-byte aligned.
        let ring = unsafe {
            Ring::from_raw(
                bytes as *const Header,
                bytes.add(plan.stamps) as *const AtomicU64,
                bytes.add(plan.owners) as *const AtomicU32,
                bytes.add(plan.data),
                cells,
                cell_size,
            )
        };
        Ok(Self { ring, base, len: total, fd })
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping starts with the header and lives as long as self.
        unsafe { &*(self.base as *const Header) }
    }

    /// The ring protocol over this mapping.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The memfd, to pass to another process (e.g. `subprocess`'s `pass_fds`).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Bytes mapped.
    pub fn mapped_len(&self) -> usize {
        self.len
    }
}

impl Drop for SharedRing {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped; no reference into it outlives self.
        unsafe { libc::munmap(self.base, self.len) };
    }
}
