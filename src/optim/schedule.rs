//! Learning-rate schedules: the learning rate as a function of the step.

use crate::{Error, Result};

/// How the learning rate changes over training.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Schedule {
    /// The same rate throughout (the document).
    Constant,
    /// Multiply the rate by `factor` every `every` steps.
    Step {
        /// Steps between drops.
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
    /// The rate at step `step` (0-based) of `total`, for base rate `base`.
    pub fn rate(&self, base: f32, step: usize, total: usize) -> f32 {
        match *self {
            Schedule::Constant => base,
            Schedule::Step { every, factor } => base * factor.powi((step / every.max(1)) as i32),
            Schedule::Cosine { min_factor } => {
                let progress = step as f64 / total.max(1) as f64;
                let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                base * (min_factor as f64 + (1.0 - min_factor as f64) * cos) as f32
            }
        }
    }

    /// Parses `constant`, `step:EVERY:FACTOR` or `cosine[:MIN_FACTOR]`; `EVERY` is counted in
    /// `unit_steps` (1 for iterations, steps per epoch when training by epochs).
    ///
    /// # Errors
    /// [`Error::Config`] for anything else.
    pub fn parse(text: &str, unit_steps: usize) -> Result<Self> {
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
                Ok(Schedule::Step {
                    every: every * unit_steps.max(1),
                    factor,
                })
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_give_the_expected_rates() {
        assert_eq!(Schedule::Constant.rate(0.1, 500, 1000), 0.1);
        let step = Schedule::parse("step:10:0.5", 3).unwrap();
        assert_eq!(step, Schedule::Step { every: 30, factor: 0.5 });
        assert_eq!(step.rate(1.0, 29, 100), 1.0);
        assert_eq!(step.rate(1.0, 30, 100), 0.5);
        assert_eq!(step.rate(1.0, 65, 100), 0.25);
        let cos = Schedule::parse("cosine", 1).unwrap();
        assert_eq!(cos.rate(1.0, 0, 100), 1.0);
        assert!((cos.rate(1.0, 50, 100) - 0.5).abs() < 1e-6);
        assert!(cos.rate(1.0, 100, 100).abs() < 1e-6);
        assert!(Schedule::parse("step:0:0.5", 1).is_err());
        assert!(Schedule::parse("linear", 1).is_err());
    }
}
