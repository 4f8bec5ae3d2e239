//! Aligned text table of result rows (the paper's table layout).

use super::Row;

fn cell(v: Option<f64>, fmt: impl Fn(f64) -> String) -> String {
    v.map(fmt).unwrap_or_else(|| "-".into())
}

pub fn to_string(rows: &[Row]) -> String {
    let metric = rows.first().map(|r| r.metric_name.clone()).unwrap_or_else(|| "metric".into());
    let header = [
        "network".to_string(),
        metric,
        "target TPR".into(),
        "reached TPR".into(),
        "% pass s1".into(),
        "ms/1000".into(),
        "speed-up".into(),
        "theory".into(),
    ];
    let body: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.network.clone(),
                cell(r.metric, |v| format!("{:.2}", 100.0 * v)),
                cell(r.target_tpr, |v| format!("{v}")),
                cell(r.reached_tpr, |v| format!("{v:.3}")),
                cell(r.pass_pct, |v| format!("{v:.1}")),
                cell(r.ms_per_1000, |v| format!("{v:.1}")),
                cell(r.speedup_measured, |v| format!("{v:.2}x")),
                cell(r.speedup_theory, |v| format!("{v:.2}x")),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..8)
        .map(|i| body.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap())
        .collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| if i == 0 { format!("{c:<w$}", w = widths[i]) } else { format!("{c:>w$}", w = widths[i]) })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = line(&header);
    out.push('\n');
    out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * 7));
    for r in &body {
        out.push('\n');
        out.push_str(&line(r));
    }
    out.push('\n');
    out
}
