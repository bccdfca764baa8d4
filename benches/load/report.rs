//! Printing ratios against their targets.

/// One line of a ratio table: what, the ratio, its target (`None`: a control or a calibration).
pub type Ratio = (&'static str, f64, Option<f64>);

pub fn report_ratios(rows: &[Ratio], judged: bool) {
    for &(what, ratio, target) in rows {
        let (target, verdict) = match target {
            Some(t) => (
                format!(">= {t:.2}"),
                if judged { mark(ratio >= t) } else { "" },
            ),
            None if what.contains("twin") => ("1.00: the method's noise".to_owned(), ""),
            None => ("none; a control".to_owned(), ""),
        };
        println!("  {what:<30} {ratio:>6.2}x     (target {target}) {verdict}");
    }
}

pub fn mark(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISSED" }
}
