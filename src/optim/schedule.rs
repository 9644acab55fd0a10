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
    /// One cycle (Smith & Topin), as PyTorch's `OneCycleLR` with its defaults: from
    /// `base/25` up to `base` along a half cosine over the first `pct` of the run, then down
    /// to `base/25/10⁴` along another.
    #[serde(rename = "onecycle")]
    OneCycle {
        /// The rising fraction of the run (PyTorch's `pct_start`, 0.3).
        pct: f32,
    },
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
            Schedule::OneCycle { pct } => {
                let progress = (done / total.max(1e-12)).min(1.0);
                let (start, end) = (1.0 / ONECYCLE_DIV, 1.0 / ONECYCLE_DIV / ONECYCLE_FINAL_DIV);
                let pct = f64::from(pct);
                // A half cosine from a to b as p goes from 0 to 1.
                let anneal = |a: f64, b: f64, p: f64| {
                    b + (a - b) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
                };
                let factor = if progress < pct {
                    anneal(start, 1.0, progress / pct)
                } else {
                    anneal(1.0, end, (progress - pct) / (1.0 - pct).max(1e-12))
                };
                (f64::from(base) * factor) as f32
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
                 cosine[:MIN_FACTOR] or onecycle[:PCT] (e.g. onecycle:0.3)"
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
            ["onecycle"] => Ok(Schedule::OneCycle { pct: 0.3 }),
            ["onecycle", pct] => {
                let pct: f32 = pct.parse().map_err(|_| bad())?;
                if !(pct > 0.0 && pct < 1.0) {
                    return Err(bad());
                }
                Ok(Schedule::OneCycle { pct })
            }
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
            Schedule::OneCycle { pct } => format!("onecycle:{pct}"),
            Schedule::Cosine { min_factor: 0.0 } => "cosine".into(),
            Schedule::Cosine { min_factor } => format!("cosine:{min_factor}"),
        }
    }
}

/// One cycle's start: the peak rate divided by this (PyTorch's `div_factor`).
const ONECYCLE_DIV: f64 = 25.0;
/// One cycle's end: the start divided by this (PyTorch's `final_div_factor`).
const ONECYCLE_FINAL_DIV: f64 = 1e4;

/// The rate of `schedule` after a linear warm-up over the first `warmup` units: from
/// `1/warmup` of the scheduled rate (at the first unit's start) up to all of it.
pub fn warmed_up(rate: f32, done: f64, warmup: f64) -> f32 {
    if warmup > 0.0 && done < warmup {
        (f64::from(rate) * ((done + 1.0) / (warmup + 1.0))) as f32
    } else {
        rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onecycle_rises_to_the_peak_then_falls_as_pytorchs() {
        let s = Schedule::parse("onecycle").unwrap();
        assert_eq!(s, Schedule::OneCycle { pct: 0.3 });
        assert!((s.rate(1.0, 0.0, 10.0) - 0.04).abs() < 1e-7);
        assert!((s.rate(1.0, 3.0, 10.0) - 1.0).abs() < 1e-6);
        assert!((s.rate(1.0, 1.5, 10.0) - 0.52).abs() < 1e-6);
        assert!(s.rate(1.0, 10.0, 10.0) < 1e-5);
        assert!(s.rate(1.0, 6.0, 10.0) < s.rate(1.0, 4.0, 10.0));
        assert_eq!(Schedule::parse(&s.describe()).unwrap(), s);
        assert!(Schedule::parse("onecycle:1.5").is_err());
        assert_eq!(warmed_up(1.0, 0.0, 3.0), 0.25);
        assert_eq!(warmed_up(1.0, 3.0, 3.0), 1.0);
    }

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
