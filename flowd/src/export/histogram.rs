//! The snapshot of a histogram as collected (cumulative buckets), shared by
//! the collectors that fill one (drains, TCP signals) and the exporter.

/// A histogram as collected: cumulative bucket counts by upper bound.
#[derive(Debug, Clone, Default)]
pub struct HistogramSnapshot {
    pub sum: f64,
    pub count: u64,
    /// (upper bound, cumulative count), ascending; +Inf is implied by `count`.
    pub buckets: Vec<(f64, u64)>,
}

impl HistogramSnapshot {
    /// An empty histogram with these upper bounds.
    pub fn with_bounds(bounds: &[f64]) -> Self {
        Self {
            sum: 0.0,
            count: 0,
            buckets: bounds.iter().map(|b| (*b, 0)).collect(),
        }
    }

    pub fn observe(&mut self, v: f64) {
        self.sum += v;
        self.count += 1;
        for (bound, n) in &mut self.buckets {
            if v <= *bound {
                *n += 1;
            }
        }
    }
}
