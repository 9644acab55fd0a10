//! Learning-rate schedules: the learning rate as a function of the step.

use crate::{Error, Result};

/// How the learning rate changes over training.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Schedule {
    /// The same rate throughout (the document).
    Constant,
    /// Multiply the rate by `factor` every `every` units of training (iterations, or epochs
    /// when training by epochs).
    Step {
        /// Units between drops.
        every: usize,
        /// Multiplier at each drop (e.g. 0.5).
        factor: f32,
    },
    /// Cosine decay from the base rate to `min_factor × base` over the whole run.
    Cosine {
        /// Final rate as a fraction of the base rate.
        min_factor: f32,
    },
}

impl Schedule {
    /// The rate for base rate `base` after `done` of `total` units of training (iterations, or
    /// epochs, possibly fractional, when training by epochs).
    pub fn rate(&self, base: f32, done: f64, total: f64) -> f32 {
        match *self {
            Schedule::Constant => base,
            Schedule::Step { every, factor } => {
                base * factor.powi((done / every.max(1) as f64).floor() as i32)
            }
            Schedule::Cosine { min_factor } => {
                let progress = (done / total.max(1e-12)).min(1.0);
                let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                base * (min_factor as f64 + (1.0 - min_factor as f64) * cos) as f32
            }
        }
    }

    /// Parses `constant`, `step:EVERY:FACTOR` or `cosine[:MIN_FACTOR]`.
    ///
    /// # Errors
    /// [`Error::Config`] for anything else.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::Config(format!(
                "--schedule: cannot read {text:?}; use constant, step:EVERY:FACTOR (e.g. step:10:0.5) \
                 or cosine[:MIN_FACTOR]"
            ))
        };
        let parts: Vec<&str> = text.split(':').collect();
        match parts.as_slice() {
            ["constant"] => Ok(Schedule::Constant),
            ["step", every, factor] => {
                let every: usize = every.parse().map_err(|_| bad())?;
                let factor: f32 = factor.parse().map_err(|_| bad())?;
                if every == 0 || !(factor > 0.0 && factor <= 1.0) {
                    return Err(bad());
                }
                Ok(Schedule::Step { every, factor })
            }
            ["cosine"] => Ok(Schedule::Cosine { min_factor: 0.0 }),
            ["cosine", min] => {
                let min_factor: f32 = min.parse().map_err(|_| bad())?;
                if !(0.0..=1.0).contains(&min_factor) {
                    return Err(bad());
                }
                Ok(Schedule::Cosine { min_factor })
            }
            _ => Err(bad()),
        }
    }

    /// The text form [`parse`](Schedule::parse) reads back.
    pub fn describe(&self) -> String {
        match *self {
            Schedule::Constant => "constant".into(),
            Schedule::Step { every, factor } => format!("step:{every}:{factor}"),
            Schedule::Cosine { min_factor: 0.0 } => "cosine".into(),
            Schedule::Cosine { min_factor } => format!("cosine:{min_factor}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_give_the_expected_rates() {
        assert_eq!(Schedule::Constant.rate(0.1, 500.0, 1000.0), 0.1);
        let step = Schedule::parse("step:10:0.5").unwrap();
        assert_eq!(
            step,
            Schedule::Step {
                every: 10,
                factor: 0.5
            }
        );
        assert_eq!(step.rate(1.0, 9.99, 100.0), 1.0);
        assert_eq!(step.rate(1.0, 10.0, 100.0), 0.5);
        assert_eq!(step.rate(1.0, 25.0, 100.0), 0.25);
        let cos = Schedule::parse("cosine").unwrap();
        assert_eq!(cos.rate(1.0, 0.0, 100.0), 1.0);
        assert!((cos.rate(1.0, 50.0, 100.0) - 0.5).abs() < 1e-6);
        assert!(cos.rate(1.0, 100.0, 100.0).abs() < 1e-6);
        assert_eq!(
            Schedule::parse("cosine:0.1").unwrap(),
            Schedule::Cosine { min_factor: 0.1 }
        );
        for text in ["constant", "step:10:0.5", "cosine", "cosine:0.1"] {
            assert_eq!(Schedule::parse(text).unwrap().describe(), text);
        }
        assert!(Schedule::parse("step:0:0.5").is_err());
        assert!(Schedule::parse("linear").is_err());
    }
}
