//! Aligned text table of result rows (the paper's table layout). The detection columns
//! (time per image of the head and of the whole pipeline) appear only when some row has them.

use super::Row;

fn cell(v: Option<f64>, fmt: impl Fn(f64) -> String) -> String {
    v.map(fmt).unwrap_or_else(|| "-".into())
}

type Column = (String, Box<dyn Fn(&Row) -> String>);

pub fn to_string(rows: &[Row]) -> String {
    let metric = rows
        .first()
        .map(|r| r.metric_name.clone())
        .unwrap_or_else(|| "metric".into());
    let mut columns: Vec<Column> = vec![
        ("network".into(), Box::new(|r: &Row| r.network.clone())),
        (
            metric,
            Box::new(|r: &Row| cell(r.metric, |v| format!("{:.2}", 100.0 * v))),
        ),
        (
            "target TPR".into(),
            // (at most 4 decimals: a budget's target is any k/n)
            Box::new(|r: &Row| {
                cell(r.target_tpr, |v| {
                    let t = format!("{v:.4}");
                    t.trim_end_matches('0').trim_end_matches('.').to_string()
                })
            }),
        ),
        (
            "reached TPR".into(),
            Box::new(|r: &Row| cell(r.reached_tpr, |v| format!("{v:.3}"))),
        ),
        (
            "% pass s1".into(),
            Box::new(|r: &Row| cell(r.pass_pct, |v| format!("{v:.1}"))),
        ),
        (
            "ms/1000".into(),
            Box::new(|r: &Row| cell(r.ms_per_1000, |v| format!("{v:.1}"))),
        ),
        (
            "speed-up".into(),
            Box::new(|r: &Row| cell(r.speedup_measured, |v| format!("{v:.2}x"))),
        ),
        (
            "theory".into(),
            Box::new(|r: &Row| cell(r.speedup_theory, |v| format!("{v:.2}x"))),
        ),
    ];
    if rows.iter().any(|r| r.budget.is_some()) {
        columns.insert(
            2,
            (
                "budget".into(),
                Box::new(|r: &Row| r.budget.clone().unwrap_or_else(|| "-".into())),
            ),
        );
    }
    // (the study's columns: its variant, stage 1 alone and 'full' beside the cascade's metric)
    if rows.iter().any(|r| r.variant.is_some()) {
        let name = rows.first().map_or("metric", |r| r.metric_name.as_str());
        columns.insert(
            1,
            (
                format!("s1 {name}"),
                Box::new(|r: &Row| cell(r.stage1_metric, |v| format!("{:.2}", 100.0 * v))),
            ),
        );
        columns.insert(
            3,
            (
                format!("full {name}"),
                Box::new(|r: &Row| cell(r.full_metric, |v| format!("{:.2}", 100.0 * v))),
            ),
        );
        columns.insert(
            0,
            (
                "variant".into(),
                Box::new(|r: &Row| r.variant.clone().unwrap_or_default()),
            ),
        );
    }
    if rows.iter().any(|r| r.pass_pct_stages.is_some()) {
        let at = columns.iter().position(|c| c.0 == "% pass s1").unwrap() + 1;
        columns.insert(
            at,
            (
                "% pass s2".into(),
                Box::new(|r: &Row| {
                    cell(
                        r.pass_pct_stages.as_ref().and_then(|v| v.get(1).copied()),
                        |v| format!("{v:.1}"),
                    )
                }),
            ),
        );
    }
    let after_tpr = columns.iter().position(|c| c.0 == "reached TPR").unwrap() + 1;
    if rows.iter().any(|r| r.reached_tpr_interval.is_some()) {
        columns.insert(
            after_tpr,
            (
                "95% interval".into(),
                Box::new(|r: &Row| {
                    r.reached_tpr_interval
                        .map_or("-".into(), |[lo, hi]| format!("{lo:.3}-{hi:.3}"))
                }),
            ),
        );
    }
    if rows.iter().any(|r| r.head_ms_per_image.is_some()) {
        columns.push((
            "head ms/img".into(),
            Box::new(|r: &Row| cell(r.head_ms_per_image, |v| format!("{v:.1}"))),
        ));
        columns.push((
            "total ms/img".into(),
            Box::new(|r: &Row| cell(r.pipeline_ms_per_image, |v| format!("{v:.1}"))),
        ));
        columns.push((
            "total speed-up".into(),
            Box::new(|r: &Row| cell(r.speedup_pipeline, |v| format!("{v:.2}x"))),
        ));
    }
    let header: Vec<String> = columns.iter().map(|c| c.0.clone()).collect();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| (c.1)(r)).collect())
        .collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            body.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap()
        })
        .collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == 0 {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    format!("{c:>w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = line(&header);
    out.push('\n');
    out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (columns.len() - 1)));
    for r in &body {
        out.push('\n');
        out.push_str(&line(r));
    }
    out.push('\n');
    out
}
