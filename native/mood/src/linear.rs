//! The sentiment model's graph in Rust: `softmax(Σ W[ids] / sqrt(max(n, 1)) + b)`.
//!
//! Same order of float32 operations as the ONNX graph (gather and cast each fp16 row, sum the rows
//! in id order, divide, add, max-subtracted softmax), so the two agree to float32 rounding
//! (tests/native/test_mood_pipe.py compares them on the hand-written chat lines).

use std::fmt;

use kefu_textfeat::{Featurizer, Scratch};

/// The linear model over a featuriser's ids. Read-only once built; share it behind an `Arc`.
pub struct LinearScorer {
    featurizer: Featurizer,
    /// fp16 bit patterns, row-major `[2^bits][classes]`.
    weights: Vec<u16>,
    bias: Vec<f32>,
    neg_class: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScorerError {
    /// The table is not `2^bits × len(bias)` long.
    Shape {
        weights: usize,
        rows: usize,
        classes: usize,
    },
    /// No classes, or the negative class index is out of range.
    Classes { classes: usize, neg_class: usize },
}

impl fmt::Display for ScorerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScorerError::Shape {
                weights,
                rows,
                classes,
            } => write!(
                f,
                "weight table has {weights} values, expected {rows} rows x {classes} classes"
            ),
            ScorerError::Classes { classes, neg_class } => {
                write!(
                    f,
                    "negative class {neg_class} is not one of {classes} classes"
                )
            }
        }
    }
}

impl std::error::Error for ScorerError {}

impl LinearScorer {
    /// `weights`: fp16 bits of the `[2^bits][classes]` table; `bias`: one value per class.
    pub fn new(
        featurizer: Featurizer,
        weights: Vec<u16>,
        bias: Vec<f32>,
        neg_class: usize,
    ) -> Result<Self, ScorerError> {
        let classes = bias.len();
        if classes == 0 || neg_class >= classes {
            return Err(ScorerError::Classes { classes, neg_class });
        }
        let rows = 1usize << featurizer.bits();
        if weights.len() != rows * classes {
            return Err(ScorerError::Shape {
                weights: weights.len(),
                rows,
                classes,
            });
        }
        Ok(Self {
            featurizer,
            weights,
            bias,
            neg_class,
        })
    }

    pub fn classes(&self) -> usize {
        self.bias.len()
    }

    /// Class probabilities of `text` into `probs` (length [`Self::classes`]).
    pub fn probs_with(&self, text: &str, scratch: &mut Scratch, probs: &mut [f32]) {
        let classes = self.classes();
        assert_eq!(probs.len(), classes, "one probability per class");
        probs.fill(0.0);
        let ids = self.featurizer.featurize_with(text, scratch);
        for &id in ids {
            // Ids are masked to 2^bits by the featuriser, so the row is in the table.
            let row = &self.weights[id as usize * classes..(id as usize + 1) * classes];
            for (sum, &weight) in probs.iter_mut().zip(row) {
                *sum += f16_to_f32(weight);
            }
        }
        let norm = (ids.len().max(1) as f32).sqrt();
        let mut max = f32::NEG_INFINITY;
        for (logit, bias) in probs.iter_mut().zip(&self.bias) {
            *logit = *logit / norm + bias;
            max = max.max(*logit);
        }
        let mut total = 0.0f32;
        for logit in probs.iter_mut() {
            *logit = (*logit - max).exp();
            total += *logit;
        }
        for p in probs.iter_mut() {
            *p /= total;
        }
    }

    /// Probability that `text` is negative (the visitor is upset).
    pub fn p_neg_with(&self, text: &str, scratch: &mut Scratch) -> f32 {
        let mut probs = [0.0f32; 8];
        let classes = self.classes();
        if classes <= probs.len() {
            self.probs_with(text, scratch, &mut probs[..classes]);
            probs[self.neg_class]
        } else {
            let mut probs = vec![0.0f32; classes];
            self.probs_with(text, scratch, &mut probs);
            probs[self.neg_class]
        }
    }

    pub fn p_neg(&self, text: &str) -> f32 {
        self.p_neg_with(text, &mut Scratch::default())
    }
}

/// IEEE 754 half → single precision, exactly (every half value is a single value).
pub fn f16_to_f32(half: u16) -> f32 {
    let sign = u32::from(half >> 15) << 31;
    let exponent = u32::from((half >> 10) & 0x1f);
    let mantissa = u32::from(half & 0x3ff);
    let bits = match (exponent, mantissa) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal half: shift the mantissa up to an implicit leading one.
            let mut exponent = 127 - 15 + 1;
            let mut mantissa = mantissa;
            while mantissa & 0x400 == 0 {
                mantissa <<= 1;
                exponent -= 1;
            }
            sign | (exponent << 23) | ((mantissa & 0x3ff) << 13)
        }
        (0x1f, _) => sign | 0x7f80_0000 | (mantissa << 13),
        _ => sign | ((exponent + 127 - 15) << 23) | (mantissa << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_to_single_matches_known_values() {
        assert_eq!(f16_to_f32(0x0000), 0.0);
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x0200), 2f32.powi(-15));
        assert_eq!(f16_to_f32(0x03ff), 1023.0 * 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn an_empty_table_scores_the_softmax_of_the_bias() {
        let featurizer = Featurizer::new(4, Vec::<(String, i64)>::new()).unwrap();
        let scorer =
            LinearScorer::new(featurizer, vec![0; 16 * 3], vec![0.0, 0.0, 0.0], 0).unwrap();
        assert!((scorer.p_neg("anything") - 1.0 / 3.0).abs() < 1e-7);
    }

    #[test]
    fn a_wrong_shape_is_refused() {
        let featurizer = Featurizer::new(4, Vec::<(String, i64)>::new()).unwrap();
        assert!(LinearScorer::new(featurizer, vec![0; 10], vec![0.0; 3], 0).is_err());
        let featurizer = Featurizer::new(4, Vec::<(String, i64)>::new()).unwrap();
        assert!(LinearScorer::new(featurizer, vec![0; 48], vec![0.0; 3], 3).is_err());
    }
}
