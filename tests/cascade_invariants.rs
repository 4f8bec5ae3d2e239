//! Invariants of cascade inference on randomly initialised networks built from one
//! description with three stages of different depths (so S > 2 and depth changes are covered).

use burn::tensor::{Distribution, Tensor};
use onionnet::cascade::{Gate, run};
use onionnet::model::Model;
use onionnet::onion::{Net, NetworkKind, archs};
use std::time::Duration;

mod common;

fn model(kind: NetworkKind, seed: u64) -> Model {
    let spec = common::three_stage(false);
    let device = burn::tensor::Device::default();
    device.seed(seed);
    let nets = archs(&spec, kind)
        .into_iter()
        .map(|a| Net::new(a, &device))
        .collect();
    Model { kind, spec, nets }
}

fn input(n: usize) -> Tensor<4> {
    Tensor::random(
        [n, 2, 12, 12],
        Distribution::Normal(0.0, 1.0),
        &burn::tensor::Device::default(),
    )
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= 1e-5, "{what}[{i}]: {x} vs {y}");
    }
}

#[test]
fn open_gate_equals_the_last_stage_on_the_whole_batch() {
    for kind in [NetworkKind::Onion, NetworkKind::NonSharing] {
        let m = model(kind, 1);
        let x = input(17);
        let full = m.scores_all(&x);
        let out = run(&m, x, &Gate::open(&m.spec));
        assert!(
            out.reached.iter().all(|&r| r == 2),
            "{kind}: every row reaches stage 3"
        );
        for (s, (got, want)) in out.scores.iter().zip(&full).enumerate() {
            assert_close(got, want, &format!("{kind} stage {}", s + 1));
        }
    }
}

#[test]
fn closed_gate_rejects_everything_after_stage_one() {
    for kind in [NetworkKind::Onion, NetworkKind::NonSharing] {
        let m = model(kind, 2);
        let out = run(&m, input(9), &Gate::closed(&m.spec));
        assert!(
            out.reached.iter().all(|&r| r == 0),
            "{kind}: nobody passes stage 1"
        );
        assert!(
            out.scores[1].iter().all(|v| v.is_nan()) && out.scores[2].iter().all(|v| v.is_nan())
        );
        assert_eq!(
            out.timing.stage[1],
            Duration::ZERO,
            "{kind}: stage 2 never runs"
        );
        assert_eq!(
            out.timing.stage[2],
            Duration::ZERO,
            "{kind}: stage 3 never runs"
        );
        assert!(out.scores[0].iter().all(|v| v.is_finite()));
    }
}

#[test]
fn compacted_survivors_get_the_same_scores_as_the_full_batch() {
    // thresholds at the median score: about half pass each stage, at scattered positions
    for kind in [NetworkKind::Onion, NetworkKind::NonSharing] {
        let m = model(kind, 3);
        let x = input(40);
        let full = m.scores_all(&x);
        // median of a score over a set of rows
        let median = |s: usize, c: usize, k: usize, rows: &[usize]| {
            let mut v: Vec<f32> = rows.iter().map(|&i| full[s][i * k + c]).collect();
            v.sort_by(f32::total_cmp);
            v[v.len() / 2]
        };
        let all: Vec<usize> = (0..40).collect();
        let t1 = median(0, 1, 2, &all);
        let survivors: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&i| full[0][i * 2 + 1] >= t1)
            .collect();
        let gate = Gate {
            per_stage: vec![vec![(1, t1)], vec![(2, median(1, 2, 3, &survivors))]],
        };
        let out = run(&m, x, &gate);
        let mut reached = [0usize; 3];
        for i in 0..40 {
            reached[out.reached[i]] += 1;
            let pass1 = full[0][i * 2 + 1] >= gate.per_stage[0][0].1;
            let pass2 = gate.per_stage[1]
                .iter()
                .any(|&(c, t)| full[1][i * 3 + c] >= t);
            let expect = if !pass1 {
                0
            } else if !pass2 {
                1
            } else {
                2
            };
            assert_eq!(out.reached[i], expect, "{kind} row {i}");
            for s in 0..=expect {
                let k = [2, 3, 6][s];
                assert_close(
                    &out.scores[s][i * k..(i + 1) * k],
                    &full[s][i * k..(i + 1) * k],
                    &format!("{kind} row {i} stage {}", s + 1),
                );
            }
        }
        assert!(
            reached.iter().all(|&r| r > 0),
            "{kind}: the gate splits the batch {reached:?}"
        );
    }
}

#[test]
fn the_three_networks_come_from_one_description() {
    let spec = common::three_stage(false);
    let mono = &archs(&spec, NetworkKind::Monolithic)[0];
    let ns = archs(&spec, NetworkKind::NonSharing);
    // the non-sharing cascade's last network is the monolithic one
    assert_eq!(&ns[2], mono);
    // stage 2 of the non-sharing cascade has stages 1+2's channels of the onion
    assert_eq!(ns[1].branches[0].channels[0], 7);
    assert_eq!(
        ns[1].branches[0].channels[2], 7,
        "batch-norm and ReLU keep the channels"
    );
    // the onion's stage 3 conv c2 reads stages 1..3's pooled maps: 3 + 4 + 5 channels
    let onion = &archs(&spec, NetworkKind::Onion)[0];
    assert_eq!(onion.in_channels(2, 4), 12);
    // stage 1 ends after c2's ReLU: stage 2's f1 reads those maps (consumed at the next layer)
    assert_eq!(onion.in_channels(1, 6), 4 + 6);
    assert_eq!(onion.in_channels(2, 6), 4 + 6 + 6);
}
