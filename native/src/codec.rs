//! Python bindings for the `kefu-codec` kernel: `decode_frame`, `encode_frame`, `FrameLimits`,
//! `FrameError`, `FRAME_TYPES`, `HEADER_SIZE`.
//!
//! Decoding drives the kernel's validating parser with a visitor that builds `dict`/`list`/`str`
//! objects directly from the input bytes (no intermediate tree), because `decode_frame` runs once per
//! incoming binary frame. Encoding streams Python objects into the kernel's `FrameEncoder`, which owns
//! every limit and the canonical msgpack forms. A Python frame is `{"t": name, "conv"?, "seq"?, ...}`:
//! `conv`/`seq` live in the header (and appear on decode only when non-zero), everything else is the
//! body map. Type errors (a value of a Python type outside the model, a non-str key, a non-dict frame)
//! raise `TypeError`; every other refusal raises `FrameError(code, message)`. Any panic left in the
//! kernel is caught here and reported as `FrameError("bad_frame", ...)` rather than crossing FFI.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use kefu_codec::{
    decode_frame as decode_with, FrameEncoder, FrameError as KernelError, FrameLimits, FrameType,
    Header, Visitor, HEADER_SIZE, RESERVED_KEYS,
};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};
use pyo3::{create_exception, intern};

create_exception!(
    kefu._native,
    FrameError,
    PyValueError,
    "A refused kefu.bin.v1 frame: `args == (code, message)`, also readable as `.code` and `.message`.\n\
     `code` is the protocol error code (`\"bad_frame\"` or `\"too_large\"`)."
);

/// `FrameError.code` / `.message`: the exception type is created by `create_exception!`, which has no
/// fields, so the two attributes are properties reading `args` (which is what pickling preserves).
#[pyfunction]
fn frame_error_code(error: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    frame_error_arg(error, 0)
}

/// `FrameError.message` (see `frame_error_code`).
#[pyfunction]
fn frame_error_message(error: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    frame_error_arg(error, 1)
}

fn frame_error_arg(error: &Bound<'_, PyAny>, index: usize) -> PyResult<Py<PyAny>> {
    let args = error
        .getattr(intern!(error.py(), "args"))?
        .cast_into::<PyTuple>()?;
    Ok(match args.get_item(index) {
        Ok(item) => item.unbind(),
        Err(_) => error.py().None(),
    })
}

/// Limits applied by `decode_frame` and `encode_frame` (immutable; see the kernel's `FrameLimits`).
#[pyclass(name = "FrameLimits", module = "kefu._native", frozen, eq, hash)]
#[derive(PartialEq, Eq, Hash)]
struct PyFrameLimits(FrameLimits);

#[pymethods]
impl PyFrameLimits {
    #[new]
    #[pyo3(signature = (max_frame_size = 65536, max_depth = 8, max_container_len = 1024, max_str_len = 65536))]
    fn new(
        max_frame_size: i64,
        max_depth: i64,
        max_container_len: i64,
        max_str_len: i64,
    ) -> PyResult<Self> {
        let size = |name: &str, value: i64| {
            usize::try_from(value)
                .map_err(|_| PyValueError::new_err(format!("{name} must be >= 0, got {value}")))
        };
        FrameLimits::new(
            size("max_frame_size", max_frame_size)?,
            size("max_depth", max_depth)?,
            size("max_container_len", max_container_len)?,
            size("max_str_len", max_str_len)?,
        )
        .map(PyFrameLimits)
        .map_err(PyValueError::new_err)
    }

    #[getter]
    fn max_frame_size(&self) -> usize {
        self.0.max_frame_size
    }

    #[getter]
    fn max_depth(&self) -> usize {
        self.0.max_depth
    }

    #[getter]
    fn max_container_len(&self) -> usize {
        self.0.max_container_len
    }

    #[getter]
    fn max_str_len(&self) -> usize {
        self.0.max_str_len
    }

    fn __repr__(&self) -> String {
        let FrameLimits {
            max_frame_size,
            max_depth,
            max_container_len,
            max_str_len,
        } = self.0;
        format!(
            "FrameLimits(max_frame_size={max_frame_size}, max_depth={max_depth}, \
             max_container_len={max_container_len}, max_str_len={max_str_len})"
        )
    }
}

/// A refusal from either side of the boundary: the kernel's typed error, or a Python exception
/// (allocation failure, `TypeError` from the encoder).
enum Failure {
    Frame(KernelError),
    Python(PyErr),
}

impl From<KernelError> for Failure {
    fn from(error: KernelError) -> Self {
        Failure::Frame(error)
    }
}

impl From<PyErr> for Failure {
    fn from(error: PyErr) -> Self {
        Failure::Python(error)
    }
}

impl From<Failure> for PyErr {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Frame(error) => FrameError::new_err((error.code.as_str(), error.message)),
            Failure::Python(error) => error,
        }
    }
}

/// Run `body`, turning a panic (a kernel bug) into `FrameError("bad_frame")` so one hostile frame can
/// never take the connection's task down with a `PanicException`.
fn guarded<T>(body: impl FnOnce() -> Result<T, Failure>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(result) => result.map_err(PyErr::from),
        Err(panic) => {
            let detail = panic
                .downcast_ref::<&str>()
                .map(|text| text.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(FrameError::new_err((
                "bad_frame",
                format!("internal codec error: {detail}"),
            )))
        }
    }
}

/// Interned `"t"` values, one per frame type, indexed by type code.
static TYPE_NAMES: PyOnceLock<Vec<Py<PyString>>> = PyOnceLock::new();

fn type_name<'py>(py: Python<'py>, frame_type: FrameType) -> Bound<'py, PyString> {
    let names = TYPE_NAMES.get_or_init(py, || {
        let mut names = vec![PyString::intern(py, "").unbind()];
        names.extend(
            FrameType::ALL
                .iter()
                .map(|kind| PyString::intern(py, kind.name()).unbind()),
        );
        names
    });
    names[usize::from(frame_type.code())].bind(py).clone()
}

/// Keys longer than this are not cached (field names are short; long keys are rare and one-off).
const KEY_CACHE_MAX_LEN: usize = 24;
/// Slots in the per-thread key cache (direct-mapped, power of two).
const KEY_CACHE_SLOTS: usize = 512;

/// A cached key: its text (to confirm a slot hit) and the Python string to reuse.
type CachedKey = (Box<str>, Py<PyString>);

thread_local! {
    /// Recently seen map keys as ready-made Python strings. Frames repeat the same few field names, and
    /// reusing the `str` object skips its allocation, UTF-8 decoding and hashing (the hash is cached in
    /// the object). Per thread, so no locking on free-threaded builds; direct-mapped, so a hostile
    /// peer can only cause misses, never growth.
    static KEY_CACHE: RefCell<Vec<Option<CachedKey>>> =
        RefCell::new((0..KEY_CACHE_SLOTS).map(|_| None).collect());
}

fn cached_key<'py>(py: Python<'py>, key: &str) -> Bound<'py, PyString> {
    if key.len() > KEY_CACHE_MAX_LEN {
        return PyString::new(py, key);
    }
    // FNV-1a: cheap, and spreads short field names well enough over the slots.
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
    });
    let slot = (hash as usize) & (KEY_CACHE_SLOTS - 1);
    KEY_CACHE.with(|cache| {
        // `try_borrow_mut`: a garbage-collector callback running Python code could re-enter decode on
        // this thread while the cache is borrowed; such a nested call simply bypasses the cache.
        let Ok(mut cache) = cache.try_borrow_mut() else {
            return PyString::new(py, key);
        };
        match &cache[slot] {
            Some((cached, object)) if **cached == *key => object.bind(py).clone(),
            _ => {
                let object = PyString::new(py, key);
                cache[slot] = Some((key.into(), object.clone().unbind()));
                object
            }
        }
    })
}

/// Builds the Python frame dict straight from the kernel's parse.
struct PyBuilder<'py> {
    py: Python<'py>,
}

impl<'py, 'de> Visitor<'de> for PyBuilder<'py> {
    type Value = Bound<'py, PyAny>;
    type Array = Vec<Bound<'py, PyAny>>;
    type Map = Bound<'py, PyDict>;
    type Error = Failure;

    fn visit_nil(&mut self) -> Result<Self::Value, Failure> {
        Ok(self.py.None().into_bound(self.py))
    }
    fn visit_bool(&mut self, value: bool) -> Result<Self::Value, Failure> {
        Ok(PyBool::new(self.py, value).to_owned().into_any())
    }
    fn visit_i64(&mut self, value: i64) -> Result<Self::Value, Failure> {
        Ok(PyInt::new(self.py, value).into_any())
    }
    fn visit_u64(&mut self, value: u64) -> Result<Self::Value, Failure> {
        Ok(PyInt::new(self.py, value).into_any())
    }
    fn visit_f64(&mut self, value: f64) -> Result<Self::Value, Failure> {
        Ok(PyFloat::new(self.py, value).into_any())
    }
    fn visit_str(&mut self, value: &'de str) -> Result<Self::Value, Failure> {
        Ok(PyString::new(self.py, value).into_any())
    }
    fn visit_bin(&mut self, value: &'de [u8]) -> Result<Self::Value, Failure> {
        Ok(PyBytes::new(self.py, value).into_any())
    }
    fn array_start(&mut self, len: usize) -> Result<Self::Array, Failure> {
        Ok(Vec::with_capacity(len))
    }
    fn array_push(&mut self, array: &mut Self::Array, item: Self::Value) -> Result<(), Failure> {
        array.push(item);
        Ok(())
    }
    fn array_end(&mut self, array: Self::Array) -> Result<Self::Value, Failure> {
        Ok(PyList::new(self.py, array)?.into_any())
    }
    fn map_start(&mut self, _len: usize) -> Result<Self::Map, Failure> {
        Ok(PyDict::new(self.py))
    }
    fn map_insert(
        &mut self,
        map: &mut Self::Map,
        key: &'de str,
        value: Self::Value,
    ) -> Result<bool, Failure> {
        // A duplicate key overwrites instead of growing the dict: one length comparison detects it.
        let len_before = map.len();
        map.set_item(cached_key(self.py, key), value)?;
        Ok(map.len() > len_before)
    }
    fn map_end(&mut self, map: Self::Map) -> Result<Self::Value, Failure> {
        Ok(map.into_any())
    }
    fn frame_start(&mut self, header: &Header, _len: usize) -> Result<Self::Map, Failure> {
        let py = self.py;
        let frame = PyDict::new(py);
        frame.set_item(intern!(py, "t"), type_name(py, header.frame_type))?;
        if header.conv != 0 {
            frame.set_item(intern!(py, "conv"), header.conv)?;
        }
        if header.seq != 0 {
            frame.set_item(intern!(py, "seq"), header.seq)?;
        }
        Ok(frame)
    }
}

fn limits_or_default(limits: Option<&Bound<'_, PyFrameLimits>>) -> FrameLimits {
    limits.map(|limits| limits.get().0).unwrap_or_default()
}

/// Decode one whole binary frame (header + body) into `{"t": name, "conv"?, "seq"?, **fields}`.
#[pyfunction]
#[pyo3(signature = (data, limits = None))]
fn decode_frame<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    limits: Option<&Bound<'py, PyFrameLimits>>,
) -> PyResult<Bound<'py, PyDict>> {
    let limits = limits_or_default(limits);
    let decode =
        |bytes: &[u8]| guarded(|| Ok(decode_with(bytes, &limits, &mut PyBuilder { py })?.1));
    if let Ok(bytes) = data.cast::<PyBytes>() {
        return decode(bytes.as_bytes());
    }
    // bytearray / memoryview: their memory can change under us, so copy, but only what the limit allows.
    let buffer = PyBuffer::<u8>::get(data).map_err(|_| {
        PyTypeError::new_err(format!(
            "data must be a buffer of bytes (format B or c), not {}",
            type_label(data)
        ))
    })?;
    if buffer.len_bytes() > limits.max_frame_size {
        return Err(FrameError::new_err((
            "too_large",
            format!(
                "frame is {} bytes, limit is {}",
                buffer.len_bytes(),
                limits.max_frame_size
            ),
        )));
    }
    decode(&buffer.to_vec(py)?)
}

/// Encode a frame dict into canonical `kefu.bin.v1` bytes.
#[pyfunction]
#[pyo3(signature = (frame, limits = None))]
fn encode_frame<'py>(
    py: Python<'py>,
    frame: &Bound<'py, PyAny>,
    limits: Option<&Bound<'py, PyFrameLimits>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let limits = limits_or_default(limits);
    let frame = frame.cast::<PyDict>().map_err(|_| {
        PyTypeError::new_err(format!("frame must be a dict, not {}", type_label(frame)))
    })?;
    let bytes = guarded(|| encode_dict(frame, &limits))?;
    Ok(PyBytes::new(py, &bytes))
}

fn type_label(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|name| name.to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

fn encode_dict(frame: &Bound<'_, PyDict>, limits: &FrameLimits) -> Result<Vec<u8>, Failure> {
    let py = frame.py();
    let frame_type = match frame.get_item(intern!(py, "t"))? {
        None => return Err(KernelError::bad_frame("frame has no \"t\"").into()),
        Some(name) => name
            .cast::<PyString>()
            .ok()
            .and_then(|name| name.to_str().ok().and_then(FrameType::from_name))
            .ok_or_else(|| {
                KernelError::bad_frame(format!(
                    "unknown frame type {}",
                    name.repr().map(|r| r.to_string()).unwrap_or_default()
                ))
            })?,
    };
    let (conv, has_conv) = header_number(frame, intern!(py, "conv"))?;
    let (seq, has_seq) = header_number(frame, intern!(py, "seq"))?;
    let field_count = frame.len() - 1 - usize::from(has_conv) - usize::from(has_seq);
    let mut encoder = FrameEncoder::new(frame_type, conv, seq, field_count, limits)?;
    for (key, value) in frame.iter() {
        let key = key_str(&key)?;
        if RESERVED_KEYS.contains(&key) {
            continue;
        }
        encoder.str(key)?;
        encode_value(&mut encoder, &value, 2)?;
    }
    Ok(encoder.finish())
}

/// `conv` / `seq`: absent → 0; present → an int (not bool) in `0..2**64`, else `bad_frame`.
fn header_number(
    frame: &Bound<'_, PyDict>,
    key: &Bound<'_, PyString>,
) -> Result<(u64, bool), Failure> {
    let Some(value) = frame.get_item(key)? else {
        return Ok((0, false));
    };
    let number = match value.cast::<PyInt>() {
        Ok(number) if !value.is_instance_of::<PyBool>() => number.extract::<u64>().ok(),
        _ => None,
    };
    match number {
        Some(number) => Ok((number, true)),
        None => Err(KernelError::bad_frame(format!("{key} must be an int in 0..2**64")).into()),
    }
}

fn key_str<'a>(key: &'a Bound<'_, PyAny>) -> Result<&'a str, Failure> {
    let Ok(key) = key.cast::<PyString>() else {
        return Err(
            PyTypeError::new_err(format!("map keys must be str, not {}", type_label(key))).into(),
        );
    };
    key.to_str()
        .map_err(|_| KernelError::bad_frame("str is not valid UTF-8 (lone surrogate)").into())
}

fn encode_value(
    encoder: &mut FrameEncoder<'_>,
    value: &Bound<'_, PyAny>,
    depth: usize,
) -> Result<(), Failure> {
    if let Ok(text) = value.cast::<PyString>() {
        let text = text
            .to_str()
            .map_err(|_| KernelError::bad_frame("str is not valid UTF-8 (lone surrogate)"))?;
        encoder.str(text)?;
    } else if value.is_none() {
        encoder.nil()?;
    } else if let Ok(flag) = value.cast::<PyBool>() {
        encoder.bool(flag.is_true())?;
    } else if let Ok(number) = value.cast::<PyInt>() {
        if let Ok(small) = number.extract::<i64>() {
            encoder.i64(small)?;
        } else if let Ok(large) = number.extract::<u64>() {
            encoder.u64(large)?;
        } else {
            return Err(KernelError::bad_frame("int outside the i64/u64 range").into());
        }
    } else if let Ok(number) = value.cast::<PyFloat>() {
        encoder.f64(number.value())?;
    } else if let Ok(map) = value.cast::<PyDict>() {
        encoder.map_header(map.len(), depth)?;
        for (key, item) in map.iter() {
            encoder.str(key_str(&key)?)?;
            encode_value(encoder, &item, depth + 1)?;
        }
    } else if let Ok(items) = value.cast::<PyList>() {
        encoder.array_header(items.len(), depth)?;
        for item in items.iter() {
            encode_value(encoder, &item, depth + 1)?;
        }
    } else if let Ok(items) = value.cast::<PyTuple>() {
        encoder.array_header(items.len(), depth)?;
        for item in items.iter() {
            encode_value(encoder, &item, depth + 1)?;
        }
    } else if let Ok(bytes) = value.cast::<PyBytes>() {
        encoder.bin(bytes.as_bytes())?;
    } else if let Ok(bytes) = value.cast::<PyByteArray>() {
        encoder.bin(&bytes.to_vec())?;
    } else {
        return Err(PyTypeError::new_err(format!(
            "cannot encode a {} in a frame",
            type_label(value)
        ))
        .into());
    }
    Ok(())
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let error_type = py.get_type::<FrameError>();
    let property = py.import("builtins")?.getattr("property")?;
    error_type.setattr(
        "code",
        property.call1((wrap_pyfunction!(frame_error_code, m)?,))?,
    )?;
    error_type.setattr(
        "message",
        property.call1((wrap_pyfunction!(frame_error_message, m)?,))?,
    )?;
    m.add("FrameError", error_type)?;
    m.add_class::<PyFrameLimits>()?;
    m.add_function(wrap_pyfunction!(decode_frame, m)?)?;
    m.add_function(wrap_pyfunction!(encode_frame, m)?)?;
    let frame_types = PyDict::new(py);
    for kind in FrameType::ALL {
        frame_types.set_item(kind.name(), kind.code())?;
    }
    m.add("FRAME_TYPES", frame_types)?;
    m.add("HEADER_SIZE", HEADER_SIZE)?;
    Ok(())
}
