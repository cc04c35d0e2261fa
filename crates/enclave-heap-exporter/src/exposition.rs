//! Encoding metric families for the wire: the classic Prometheus text format (default) and
//! OpenMetrics 1.0 (when the scraper's `Accept` header prefers it), and the negotiation between
//! them.

use std::fmt::Write as _;

use prometheus::proto::{MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};

/// A wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics text 1.0.0.
    OpenMetrics,
}

/// `Content-Type` of the classic text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// `Content-Type` of OpenMetrics.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Format {
    /// Picks the format an `Accept` header prefers: OpenMetrics only when it is acceptable
    /// (`version` absent, 1.0.0 or 0.0.1) and ranked strictly above the text format; the text
    /// format otherwise, including when the header is missing or malformed.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let mut openmetrics_q: f32 = 0.0;
        let mut text_q: f32 = 0.0;
        for range in accept.split(',') {
            let mut params = range.split(';').map(str::trim);
            let media = params.next().unwrap_or("").to_ascii_lowercase();
            let mut q: f32 = 1.0;
            let mut version: Option<&str> = None;
            for param in params {
                if let Some((key, value)) = param.split_once('=') {
                    match key.trim().to_ascii_lowercase().as_str() {
                        "q" => q = value.trim().parse().unwrap_or(0.0),
                        "version" => version = Some(value.trim()),
                        _ => {}
                    }
                }
            }
            let q = if q.is_finite() {
                q.clamp(0.0, 1.0)
            } else {
                0.0
            };
            match media.as_str() {
                "application/openmetrics-text"
                    if matches!(version, None | Some("1.0.0" | "0.0.1")) =>
                {
                    openmetrics_q = openmetrics_q.max(q);
                }
                "text/plain" | "text/*" | "*/*" => text_q = text_q.max(q),
                _ => {}
            }
        }
        if openmetrics_q > 0.0 && openmetrics_q > text_q {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    /// The `Content-Type` header for this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => TEXT_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// Encodes `families` in `format`, appending to `out`.
pub fn encode(
    families: &[MetricFamily],
    format: Format,
    out: &mut Vec<u8>,
) -> Result<(), prometheus::Error> {
    match format {
        Format::Text => TextEncoder::new().encode(families, out),
        Format::OpenMetrics => {
            let mut text = String::new();
            encode_openmetrics(families, &mut text);
            out.extend_from_slice(text.as_bytes());
            Ok(())
        }
    }
}

/// OpenMetrics 1.0 text: counters are declared without their `_total` suffix, which their
/// samples carry; histograms get an explicit `+Inf` bucket; the exposition ends with `# EOF`.
fn encode_openmetrics(families: &[MetricFamily], out: &mut String) {
    for family in families {
        if family.get_metric().is_empty() {
            continue;
        }
        let name = family.name();
        let (declared, kind) = match family.get_field_type() {
            MetricType::COUNTER => (name.strip_suffix("_total").unwrap_or(name), "counter"),
            MetricType::GAUGE => (name, "gauge"),
            MetricType::HISTOGRAM => (name, "histogram"),
            MetricType::SUMMARY => (name, "summary"),
            MetricType::UNTYPED => (name, "unknown"),
        };
        out.push_str("# TYPE ");
        out.push_str(declared);
        out.push(' ');
        out.push_str(kind);
        out.push('\n');
        out.push_str("# HELP ");
        out.push_str(declared);
        out.push(' ');
        escape_into(family.help(), false, out);
        out.push('\n');
        for metric in family.get_metric() {
            let labels = metric.get_label();
            match family.get_field_type() {
                MetricType::COUNTER => {
                    sample(
                        out,
                        declared,
                        "_total",
                        labels,
                        None,
                        metric.get_counter().get_value(),
                    );
                }
                MetricType::GAUGE => {
                    sample(out, name, "", labels, None, metric.get_gauge().get_value())
                }
                // Untyped values are deprecated in the crate, but a registered collector may still
                // produce them; dropping them would lose data.
                #[allow(deprecated)]
                MetricType::UNTYPED => sample(
                    out,
                    name,
                    "",
                    labels,
                    None,
                    metric.get_untyped().get_value(),
                ),
                MetricType::HISTOGRAM => {
                    let histogram = metric.get_histogram();
                    for bucket in histogram.get_bucket() {
                        let bound = float(bucket.upper_bound());
                        sample(
                            out,
                            name,
                            "_bucket",
                            labels,
                            Some(&bound),
                            bucket.cumulative_count() as f64,
                        );
                    }
                    let count = histogram.get_sample_count() as f64;
                    sample(out, name, "_bucket", labels, Some("+Inf"), count);
                    sample(out, name, "_sum", labels, None, histogram.get_sample_sum());
                    sample(out, name, "_count", labels, None, count);
                }
                MetricType::SUMMARY => {
                    let summary = metric.get_summary();
                    for quantile in summary.get_quantile() {
                        let q = float(quantile.quantile());
                        let mut with_quantile = labels.to_vec();
                        let mut pair = prometheus::proto::LabelPair::default();
                        pair.set_name("quantile".to_owned());
                        pair.set_value(q);
                        with_quantile.push(pair);
                        sample(out, name, "", &with_quantile, None, quantile.value());
                    }
                    sample(out, name, "_sum", labels, None, summary.sample_sum());
                    sample(
                        out,
                        name,
                        "_count",
                        labels,
                        None,
                        summary.sample_count() as f64,
                    );
                }
            }
        }
    }
    out.push_str("# EOF\n");
}

fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[prometheus::proto::LabelPair],
    le: Option<&str>,
    value: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        for pair in labels {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(pair.name());
            out.push_str("=\"");
            escape_into(pair.value(), true, out);
            out.push('"');
        }
        if let Some(le) = le {
            if !first {
                out.push(',');
            }
            out.push_str("le=\"");
            out.push_str(le);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&float(value));
    out.push('\n');
}

/// OpenMetrics numbers: integers without a fraction, other values in Rust's shortest round-trip
/// form, and the spellings `+Inf`, `-Inf` and `NaN`.
fn float(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        let mut text = String::new();
        let _ = write!(text, "{value:.1}");
        text
    } else {
        value.to_string()
    }
}

fn escape_into(text: &str, quote: bool, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_prefers_text_unless_openmetrics_ranks_higher() {
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Text);
        assert_eq!(Format::negotiate(Some("garbage;;;,,")), Format::Text);
        // Prometheus 2.x and 3.x defaults.
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            )),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0;q=0.2,text/plain;q=0.5"
            )),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text")),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;version=2.0.0")),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0")),
            Format::Text
        );
    }

    #[test]
    fn floats_follow_openmetrics_spelling() {
        assert_eq!(float(1.0), "1.0");
        assert_eq!(float(0.0001), "0.0001");
        assert_eq!(float(16777216.0), "16777216.0");
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(f64::NAN), "NaN");
    }

    #[test]
    fn escapes_label_values_and_help() {
        let mut out = String::new();
        escape_into("a\\b\"c\nd", true, &mut out);
        assert_eq!(out, "a\\\\b\\\"c\\nd");
        out.clear();
        escape_into("say \"hi\"", false, &mut out);
        assert_eq!(out, "say \"hi\"");
    }
}
