use super::*;

const GOOD: &str = r#"
name = "t"
classes = 4
input = { channels = 1, height = 8, width = 8 }
[[layer]]
type = "conv"
name = "c1"
filters = 8
kernel = 3
padding = 1
split = [2, 6]
[[layer]]
type = "relu"
[[layer]]
type = "maxpool"
kernel = 2
[[layer]]
type = "fc"
name = "f1"
units = 16
split = [0.25, 0.75]
[[stage]]
classes = 2
label_map = [0, 0, 1, 1]
[[stage]]
"#;

fn parse(text: &str) -> Result<Spec, SpecError> {
    Spec::from_toml(text, Path::new("t.toml"))
}

#[test]
fn parses_counts_and_fractions() {
    let s = parse(GOOD).unwrap();
    assert_eq!(s.layers[0].split, vec![2, 6]);
    assert_eq!(s.layers[3].split, vec![4, 12]);
    assert_eq!(s.stages[0].depth, 4);
    assert_eq!(s.stages[0].s_class(3), 1);
    assert_eq!(
        s.spatial_sizes(),
        vec![(8, 8), (8, 8), (8, 8), (4, 4), (1, 1)]
    );
}

#[test]
fn round_trips_through_toml() {
    let s = parse(GOOD).unwrap();
    let again = parse(&s.to_toml()).unwrap();
    assert_eq!(s.layers, again.layers);
    assert_eq!(s.stages, again.stages);
}

fn expect_err(text: &str, needles: &[&str]) {
    let e = parse(text).unwrap_err().to_string();
    for n in needles {
        assert!(e.contains(n), "error {e:?} should mention {n:?}");
    }
    assert!(e.contains("t.toml"), "error {e:?} should name the file");
}

#[test]
fn split_that_does_not_add_up() {
    expect_err(
        &GOOD.replace("split = [2, 6]", "split = [2, 5]"),
        &["layer[0].split", "[2, 5]", "adds up to 7"],
    );
}

#[test]
fn stage_must_end_before_a_weighted_layer() {
    expect_err(
        &GOOD.replacen("classes = 2\n", "classes = 2\nends_at = \"c1\"\n", 1),
        &["stage[0].ends_at", "relu"],
    );
    let shallow = GOOD
        .replacen("classes = 2\n", "classes = 2\nends_at = 3\n", 1)
        .replace("[0.25, 0.75]", "[0, 16]");
    assert_eq!(parse(&shallow).unwrap().stages[0].depth, 3);
    // a stage cannot keep channels past its end
    expect_err(
        &GOOD.replacen("classes = 2\n", "classes = 2\nends_at = 3\n", 1),
        &["layer[3].split[0]", "ends at layer 3"],
    );
}

#[test]
fn stage_deeper_than_network() {
    expect_err(
        &GOOD.replacen("classes = 2\n", "classes = 2\nends_at = \"nope\"\n", 1),
        &["stage[0].ends_at", "nope"],
    );
    expect_err(
        &GOOD.replacen("classes = 2\n", "classes = 2\nends_at = 9\n", 1),
        &["stage[0].ends_at", "9"],
    );
}

#[test]
fn label_map_missing_a_class() {
    expect_err(
        &GOOD.replace("[0, 0, 1, 1]", "[0, 0, 1]"),
        &["stage[0].label_map", "3 entries"],
    );
    expect_err(
        &GOOD.replace("[0, 0, 1, 1]", "[0, 0, 0, 0]"),
        &["stage[0].label_map", "s-class 1"],
    );
}

#[test]
fn shape_that_does_not_fit() {
    expect_err(
        &GOOD.replace("kernel = 3", "kernel = 11"),
        &["layer[0]", "does not fit"],
    );
}

#[test]
fn unknown_fields_and_types() {
    expect_err(
        &GOOD.replace("type = \"relu\"", "type = \"gelu\""),
        &["layer[1].type", "gelu"],
    );
    expect_err(
        &GOOD.replace("type = \"relu\"", "type = \"relu\"\nkernel = 3"),
        &["layer[1].kernel"],
    );
    expect_err(&format!("{GOOD}\nbogus = 1"), &["malformed TOML"]);
}

#[test]
fn single_stage_is_rejected() {
    let one = GOOD.replace("[[stage]]\nclasses = 2\nlabel_map = [0, 0, 1, 1]\n", "");
    expect_err(&one, &["stage", "at least 2"]);
}
