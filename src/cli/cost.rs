//! `onionnet cost SPEC`: multiply-adds per layer and stage, T(p) and theoretical speed-ups.

use crate::cost::{layer_costs, stage_costs, time_at};
use crate::onion::{NetworkKind, archs};
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct CostArgs {
    /// Model description (TOML).
    pub spec: PathBuf,
    /// Fractions p of examples passing each early stage, repeated or comma-separated.
    #[arg(long = "p", value_parser = super::parse_fraction, value_delimiter = ',',
          default_values_t = [0.05, 0.1, 0.2, 0.3, 0.5, 1.0])]
    pub p: Vec<f64>,
    /// Print `{"rows": [...]}` on stdout instead of the tables.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &CostArgs) -> anyhow::Result<()> {
    let spec = crate::shipped::load_spec(&args.spec)?;
    let mono = time_at(&spec, NetworkKind::Monolithic, 1.0);
    let mut rows = Vec::new();
    for &p in &args.p {
        for kind in NetworkKind::ALL {
            let t = time_at(&spec, kind, p);
            rows.push(serde_json::json!({
                "network": kind.name(), "p": p, "macs": t,
                "speedup_theory": mono / t, "theory_ratio": t / mono,
            }));
        }
    }
    if args.json {
        let layers: Vec<_> = NetworkKind::ALL
            .iter()
            .flat_map(|&k| {
                archs(&spec, k).into_iter().enumerate().flat_map(move |(i, a)| {
                    layer_costs(&a).into_iter().map(move |c| {
                        let stage = if k == NetworkKind::NonSharing { i } else { c.branch } + 1;
                        serde_json::json!({"network": k.name(), "stage": stage, "layer": c.layer,
                            "in_channels": c.in_channels, "out_channels": c.out_channels, "macs": c.macs})
                    })
                })
            })
            .collect();
        println!("{}", serde_json::json!({"rows": rows, "layers": layers}));
        return Ok(());
    }
    println!(
        "{} ({} stages), multiply-adds per example",
        spec.name,
        spec.num_stages()
    );
    for kind in NetworkKind::ALL {
        println!("\n{kind}:");
        println!(
            "  {:<6} {:<10} {:>6} {:>6} {:>14}",
            "stage", "layer", "c_in", "c_out", "MACs"
        );
        for (i, a) in archs(&spec, kind).iter().enumerate() {
            for c in layer_costs(a) {
                let stage = if kind == NetworkKind::NonSharing {
                    i
                } else {
                    c.branch
                } + 1;
                println!(
                    "  {:<6} {:<10} {:>6} {:>6} {:>14}",
                    stage, c.layer, c.in_channels, c.out_channels, c.macs
                );
            }
        }
        let st = stage_costs(&spec, kind);
        println!(
            "  per stage: {}",
            st.iter()
                .enumerate()
                .map(|(s, c)| format!("stage {} = {c}", s + 1))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!("\ntheoretical time T(p) relative to the monolithic network (speed-up in brackets):");
    print!("  {:<12}", "p");
    for kind in NetworkKind::ALL {
        print!(" {:>22}", kind.name());
    }
    println!();
    for &p in &args.p {
        print!("  {p:<12}");
        for kind in NetworkKind::ALL {
            let t = time_at(&spec, kind, p);
            print!(" {:>22}", format!("{:.3} ({:.2}x)", t / mono, mono / t));
        }
        println!();
    }
    Ok(())
}
