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

/// A residual block: conv (c1) - relu (r1) - conv (c2) - add from r1 - relu, then a
/// downsampling conv c3 whose block adds r2 through a projection, global average pooling.
fn residual(c2_split: &str, c3_stride: usize, from2: &str) -> String {
    format!(
        r#"
classes = 4
input = {{ channels = 1, height = 8, width = 8 }}
[[layer]]
type = "conv"
name = "c1"
filters = 8
kernel = 3
padding = 1
split = [2, 6]
[[layer]]
type = "relu"
name = "r1"
[[layer]]
type = "conv"
name = "c2"
filters = 8
kernel = 3
padding = 1
split = {c2_split}
[[layer]]
type = "add"
name = "a1"
from = "r1"
[[layer]]
type = "relu"
name = "r2"
[[layer]]
type = "conv"
name = "c3"
filters = 16
kernel = 3
padding = 1
stride = {c3_stride}
split = [4, 12]
[[layer]]
type = "add"
from = "{from2}"
[[layer]]
type = "avgpool"
[[stage]]
classes = 2
label_map = [0, 0, 1, 1]
[[stage]]
"#
    )
}

#[test]
fn residuals_resolve_identity_and_projection() {
    let s = parse(&residual("[2, 6]", 2, "r2")).unwrap();
    // same channels, split and size: identity; 8 -> 16 channels at half the size: projection
    assert_eq!(
        s.layers[3].kind,
        LayerKind::Add {
            from: 1,
            projection: false,
            stride: 1
        }
    );
    assert_eq!(
        s.layers[6].kind,
        LayerKind::Add {
            from: 4,
            projection: true,
            stride: 2
        }
    );
    assert_eq!(s.spatial_sizes().last(), Some(&(1, 1)));
    // a split that differs from the source's needs a projection, even at the same width
    let s = parse(&residual("[4, 4]", 1, "r2")).unwrap();
    assert_eq!(s.layers[3].kind.projection(), Some((1, 1)));
    // written back and read again, the same network
    let again = parse(&s.to_toml()).unwrap();
    assert_eq!(s.layers, again.layers);
}

#[test]
fn bad_residuals_are_refused_naming_the_field() {
    expect_err(
        &residual("[2, 6]", 2, "nowhere"),
        &[
            "layer[6].from",
            "\"nowhere\"",
            "not the name of a layer before this one",
        ],
    );
    // a later layer
    expect_err(
        &residual("[2, 6]", 2, "r2").replace("from = \"r1\"", "from = \"c3\""),
        &[
            "layer[3].from",
            "\"c3\"",
            "not the name of a layer before this one",
        ],
    );
    // no conv between the source and the add
    expect_err(
        &residual("[2, 6]", 2, "c3"),
        &["layer[6].from", "no conv or fc layer between"],
    );
    // 8x8 maps cannot become 3x3 by a 1x1 conv of any stride
    expect_err(
        &residual("[2, 6]", 3, "r2"),
        &["layer[6].from", "cannot be brought to the 3x3 maps"],
    );
    expect_err(
        &residual("[2, 6]", 2, "r2").replace("from = \"r1\"\n", ""),
        &["layer[3].from", "required"],
    );
    expect_err(
        &residual("[2, 6]", 2, "r2")
            .replace("type = \"avgpool\"", "type = \"avgpool\"\nfrom = \"r1\""),
        &["layer[7].from", "a avgpool layer has no field from"],
    );
}
