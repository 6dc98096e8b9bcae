//! Python bindings for the `kefu-textfeat` kernel: text -> hashed n-gram ids for the sentiment model.

use std::borrow::Cow;
use std::collections::HashMap;

use kefu_textfeat::{Featurizer as Kernel, Scratch, DEFAULT_BITS, FEATURIZER_VERSION};
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyString;

/// Padded batch output: ids `(B, L)` int64 and mask `(B, L)` float32 (1 = real id, 0 = padding).
type Batch<'py> = (Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<f32>>);

/// Featuriser with a fixed hash width and an optional `token -> bucket` lexicon, built once and
/// shared: calls hold no lock and release the GIL for batches.
#[pyclass(module = "kefu._native", name = "Featurizer", frozen)]
struct PyFeaturizer {
    kernel: Kernel,
}

#[pymethods]
impl PyFeaturizer {
    #[new]
    #[pyo3(signature = (bits = DEFAULT_BITS, lexicon = None))]
    fn new(bits: u32, lexicon: Option<HashMap<String, i64>>) -> PyResult<Self> {
        let kernel = Kernel::new(bits, lexicon.unwrap_or_default())
            .map_err(|error| PyValueError::new_err(error.to_string()))?;
        Ok(Self { kernel })
    }

    /// Hash width in bits.
    #[getter]
    fn bits(&self) -> u32 {
        self.kernel.bits()
    }

    /// Number of lexicon entries.
    #[getter]
    fn lexicon_size(&self) -> usize {
        self.kernel.lexicon_len()
    }

    /// Sorted unique ids of one text as int64.
    fn featurize<'py>(&self, text: &Bound<'py, PyString>) -> Bound<'py, PyArray1<i64>> {
        featurize_one(&self.kernel, text)
    }

    /// Ids and mask for a list of texts, padded to the longest row.
    fn featurize_batch<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<Bound<'py, PyString>>,
    ) -> Batch<'py> {
        featurize_many(py, &self.kernel, &texts)
    }

    fn __repr__(&self) -> String {
        format!(
            "Featurizer(bits={}, lexicon_size={})",
            self.kernel.bits(),
            self.kernel.lexicon_len()
        )
    }
}

/// Sorted unique ids of one text, without a lexicon.
#[pyfunction]
#[pyo3(signature = (text, bits = DEFAULT_BITS))]
fn featurize<'py>(text: &Bound<'py, PyString>, bits: u32) -> PyResult<Bound<'py, PyArray1<i64>>> {
    Ok(featurize_one(&plain_kernel(bits)?, text))
}

/// Ids `(B, L)` int64 and mask `(B, L)` float32 for a list of texts, without a lexicon.
#[pyfunction]
#[pyo3(signature = (texts, bits = DEFAULT_BITS))]
fn featurize_batch<'py>(
    py: Python<'py>,
    texts: Vec<Bound<'py, PyString>>,
    bits: u32,
) -> PyResult<Batch<'py>> {
    Ok(featurize_many(py, &plain_kernel(bits)?, &texts))
}

fn plain_kernel(bits: u32) -> PyResult<Kernel> {
    Kernel::new(bits, std::iter::empty::<(String, i64)>())
        .map_err(|error| PyValueError::new_err(error.to_string()))
}

/// The text as UTF-8. A Python `str` may hold lone surrogates, which UTF-8 cannot: the contract
/// replaces them with U+FFFD (one per invalid byte of their surrogatepass encoding) instead of failing.
fn utf8_of<'a>(text: &'a Bound<'_, PyString>) -> Cow<'a, str> {
    text.to_string_lossy()
}

fn featurize_one<'py>(kernel: &Kernel, text: &Bound<'py, PyString>) -> Bound<'py, PyArray1<i64>> {
    let mut scratch = Scratch::default();
    let ids: Vec<i64> = kernel
        .featurize_with(&utf8_of(text), &mut scratch)
        .iter()
        .map(|&id| i64::from(id))
        .collect();
    ids.into_pyarray(text.py())
}

fn featurize_many<'py>(
    py: Python<'py>,
    kernel: &Kernel,
    texts: &[Bound<'py, PyString>],
) -> Batch<'py> {
    let owned: Vec<Cow<'_, str>> = texts.iter().map(utf8_of).collect();
    let strs: Vec<&str> = owned.iter().map(|text| text.as_ref()).collect();
    let (ids, mask) = py.detach(|| pad(kernel, &strs));
    (ids.into_pyarray(py), mask.into_pyarray(py))
}

fn pad(kernel: &Kernel, texts: &[&str]) -> (Array2<i64>, Array2<f32>) {
    let mut scratch = Scratch::default();
    let rows: Vec<Vec<u32>> = texts
        .iter()
        .map(|text| kernel.featurize_with(text, &mut scratch).to_vec())
        .collect();
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Array2::<i64>::zeros((rows.len(), width));
    let mut mask = Array2::<f32>::zeros((rows.len(), width));
    for (row_index, row) in rows.iter().enumerate() {
        for (column, &id) in row.iter().enumerate() {
            ids[(row_index, column)] = i64::from(id);
            mask[(row_index, column)] = 1.0;
        }
    }
    (ids, mask)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("FEATURIZER_VERSION", FEATURIZER_VERSION)?;
    m.add_class::<PyFeaturizer>()?;
    m.add_function(wrap_pyfunction!(featurize, m)?)?;
    m.add_function(wrap_pyfunction!(featurize_batch, m)?)?;
    Ok(())
}
