//! Learning-rate schedules: the rate of each epoch.

use super::Schedule;

impl Schedule {
    /// The learning rate for `epoch` (0-based) from the base rate.
    ///
    /// ```
    /// use chainrule::optim::Schedule;
    /// let cosine = Schedule::Cosine { t_max: 10, eta_min: 0.0 };
    /// assert_eq!(cosine.lr(0.1, 0), 0.1);
    /// assert!((cosine.lr(0.1, 5) - 0.05).abs() < 1e-15);
    /// assert!(cosine.lr(0.1, 10).abs() < 1e-15);
    /// let warmup = Schedule::LinearWarmup { start_factor: 0.25, warmup_epochs: 3 };
    /// assert_eq!(warmup.lr(1.0, 0), 0.25);
    /// assert_eq!(warmup.lr(1.0, 3), 1.0);
    /// ```
    pub fn lr(&self, base: f64, epoch: usize) -> f64 {
        match *self {
            Schedule::Constant => base,
            Schedule::Step { step_size, gamma } => {
                base * gamma.powi((epoch / step_size.max(1)) as i32)
            }
            Schedule::Exponential { gamma } => base * gamma.powi(epoch as i32),
            Schedule::Cosine { t_max, eta_min } => {
                let phase = std::f64::consts::PI * epoch as f64 / t_max.max(1) as f64;
                eta_min + (base - eta_min) * (1.0 + phase.cos()) / 2.0
            }
            Schedule::LinearWarmup {
                start_factor,
                warmup_epochs,
            } => {
                let progress = (epoch.min(warmup_epochs) as f64) / warmup_epochs.max(1) as f64;
                base * (start_factor + (1.0 - start_factor) * progress)
            }
        }
    }
}
