//! One metric family as planned before anything is written (so a scrape
//! can count its series), and its encoding through `prometheus-client`.

use std::fmt::Write as _;

use prometheus_client::{
    encoding::{
        DescriptorEncoder, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder,
    },
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

use crate::export::histogram::HistogramSnapshot;

/// A label value, escaped as the exposition formats require when written.
#[derive(Debug, Clone)]
pub(super) struct Value(pub(super) String);

impl EncodeLabelValue for Value {
    fn encode(&self, e: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        for c in self.0.chars() {
            match c {
                '\\' => e.write_str("\\\\")?,
                '"' => e.write_str("\\\"")?,
                '\n' => e.write_str("\\n")?,
                c => e.write_char(c)?,
            }
        }
        Ok(())
    }
}

pub(super) type Labels = Vec<(&'static str, Value)>;

pub(super) fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs
        .into_iter()
        .map(|(k, v)| (k, Value(v.to_owned())))
        .collect()
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Num {
    U(u64),
    F(f64),
}

#[derive(Debug)]
pub(super) enum Body {
    Counter(Vec<(Labels, Num)>),
    Gauge(Vec<(Labels, Num)>),
    Histogram(Vec<(Labels, HistogramSnapshot)>),
    Info(Labels),
}

/// One metric family, planned before anything is written so the scrape
/// can count its series.
#[derive(Debug)]
pub(super) struct Family {
    /// Without `_total` for counters and `_info` for info: the client adds them.
    pub(super) name: &'static str,
    pub(super) help: &'static str,
    pub(super) body: Body,
}

impl Family {
    pub(super) fn counter(
        name: &'static str,
        help: &'static str,
        samples: Vec<(Labels, Num)>,
    ) -> Self {
        Self {
            name,
            help,
            body: Body::Counter(samples),
        }
    }

    pub(super) fn gauge(
        name: &'static str,
        help: &'static str,
        samples: Vec<(Labels, Num)>,
    ) -> Self {
        Self {
            name,
            help,
            body: Body::Gauge(samples),
        }
    }

    /// Samples (lines) this family writes.
    pub(super) fn series(&self) -> usize {
        match &self.body {
            Body::Counter(s) | Body::Gauge(s) => s.len(),
            // Finite buckets, +Inf, _sum and _count.
            Body::Histogram(hs) => hs.iter().map(|(_, h)| h.buckets.len() + 3).sum(),
            Body::Info(_) => 1,
        }
    }

    pub(super) fn encode(&self, enc: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        match &self.body {
            Body::Counter(samples) => {
                let mut m =
                    enc.encode_descriptor(self.name, self.help, None, MetricType::Counter)?;
                let put = |m: MetricEncoder<'_>, v: &Num| match v {
                    Num::U(v) => ConstCounter::new(*v).encode(m),
                    Num::F(v) => ConstCounter::new(*v).encode(m),
                };
                match samples.as_slice() {
                    // No `{}` after an unlabelled sample.
                    [(l, v)] if l.is_empty() => put(m, v)?,
                    _ => {
                        for (l, v) in samples {
                            put(m.encode_family(l)?, v)?;
                        }
                    }
                }
            }
            Body::Gauge(samples) => {
                let mut m = enc.encode_descriptor(self.name, self.help, None, MetricType::Gauge)?;
                let put = |m: MetricEncoder<'_>, v: &Num| match v {
                    Num::U(v) => ConstGauge::new(*v).encode(m),
                    Num::F(v) => ConstGauge::new(*v).encode(m),
                };
                match samples.as_slice() {
                    [(l, v)] if l.is_empty() => put(m, v)?,
                    _ => {
                        for (l, v) in samples {
                            put(m.encode_family(l)?, v)?;
                        }
                    }
                }
            }
            Body::Histogram(hs) => {
                let mut m =
                    enc.encode_descriptor(self.name, self.help, None, MetricType::Histogram)?;
                for (l, h) in hs {
                    // The client wants per-bucket counts and accumulates them
                    // itself; f64::MAX is how it spells the +Inf bucket.
                    let mut prev = 0;
                    let mut buckets: Vec<(f64, u64)> = h
                        .buckets
                        .iter()
                        .map(|(b, cum)| {
                            let n = cum.saturating_sub(prev);
                            prev = *cum;
                            (*b, n)
                        })
                        .collect();
                    buckets.push((f64::MAX, h.count.saturating_sub(prev)));
                    if l.is_empty() {
                        m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                            h.sum, h.count, &buckets, None,
                        )?;
                    } else {
                        m.encode_family(l)?
                            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                                h.sum, h.count, &buckets, None,
                            )?;
                    }
                }
            }
            Body::Info(l) => {
                let mut m = enc.encode_descriptor(self.name, self.help, None, MetricType::Info)?;
                m.encode_info(l)?;
            }
        }
        Ok(())
    }
}

pub(super) fn one(v: u64) -> Vec<(Labels, Num)> {
    vec![(Vec::new(), Num::U(v))]
}

pub(super) fn dir_label(direction: u8) -> &'static str {
    flowd_common::proto::direction_label(direction)
}

/// Samples (lines) all of `families` write.
pub(super) fn series(families: &[Family]) -> usize {
    families.iter().map(Family::series).sum()
}
