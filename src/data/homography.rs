//! Planar homographies: 3x3 matrices acting on homogeneous pixel coordinates.

use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Homography(pub [f64; 9]);

impl Homography {
    pub const IDENTITY: Homography = Homography([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]);

    /// Maps a point; `None` when it goes to infinity.
    pub fn apply(&self, x: f64, y: f64) -> Option<(f64, f64)> {
        let m = &self.0;
        let w = m[6] * x + m[7] * y + m[8];
        (w.abs() > 1e-12).then(|| {
            (
                (m[0] * x + m[1] * y + m[2]) / w,
                (m[3] * x + m[4] * y + m[5]) / w,
            )
        })
    }

    /// `self ∘ other` (apply `other` first).
    pub fn compose(&self, other: &Homography) -> Homography {
        let (a, b) = (&self.0, &other.0);
        let mut out = [0.0; 9];
        for r in 0..3 {
            for c in 0..3 {
                out[r * 3 + c] = (0..3).map(|k| a[r * 3 + k] * b[k * 3 + c]).sum();
            }
        }
        Homography(out)
    }

    /// The inverse (adjugate / determinant); `None` when singular.
    pub fn inverse(&self) -> Option<Homography> {
        let m = &self.0;
        let cof = [
            m[4] * m[8] - m[5] * m[7],
            m[2] * m[7] - m[1] * m[8],
            m[1] * m[5] - m[2] * m[4],
            m[5] * m[6] - m[3] * m[8],
            m[0] * m[8] - m[2] * m[6],
            m[2] * m[3] - m[0] * m[5],
            m[3] * m[7] - m[4] * m[6],
            m[1] * m[6] - m[0] * m[7],
            m[0] * m[4] - m[1] * m[3],
        ];
        let det = m[0] * cof[0] + m[1] * cof[3] + m[2] * cof[6];
        (det.abs() > 1e-15).then(|| Homography(cof.map(|v| v / det)))
    }

    /// A random local homography around the origin (patch-centred coordinates, about ±32 px):
    /// rotation, scale, anisotropy and shear, and a small perspective part; the origin stays
    /// fixed, so the patch centre always shows the same scene point.
    pub fn random_local(rng: &mut impl Rng, strength: f64) -> Homography {
        let th = rng.random_range(-0.45..0.45) * strength;
        let s = (rng.random_range(-0.22f64..0.22) * strength).exp();
        let an = (rng.random_range(-0.15f64..0.15) * strength).exp();
        let sh = rng.random_range(-0.15..0.15) * strength;
        let (c, si) = (th.cos(), th.sin());
        // R(θ) · [[s·an, sh], [0, s/an]]
        let (a, b, d) = (s * an, sh, s / an);
        let p = rng.random_range(-0.0015..0.0015) * strength;
        let q = rng.random_range(-0.0015..0.0015) * strength;
        Homography([
            c * a,
            c * b - si * d,
            0.0,
            si * a,
            si * b + c * d,
            0.0,
            p,
            q,
            1.0,
        ])
    }

    /// Reads the 3x3 matrix of an OpenCV FileStorage XML file (the `<data>` element), as the
    /// Graffiti ground truth `H1to3p.xml` is stored.
    pub fn parse_opencv_xml(text: &str) -> Result<Homography, String> {
        let start = text.find("<data>").ok_or("no <data> element")? + "<data>".len();
        let end = text[start..].find("</data>").ok_or("no </data>")? + start;
        let vals: Vec<f64> = text[start..end]
            .split_whitespace()
            .map(|t| {
                t.parse::<f64>()
                    .map_err(|_| format!("{t:?} is not a number"))
            })
            .collect::<Result<_, _>>()?;
        let m: [f64; 9] = vals
            .try_into()
            .map_err(|v: Vec<f64>| format!("{} numbers, 9 expected", v.len()))?;
        Ok(Homography(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn inverse_and_compose() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..20 {
            let h = Homography::random_local(&mut rng, 1.0);
            let id = h.compose(&h.inverse().unwrap());
            for (a, b) in id.0.iter().zip(Homography::IDENTITY.0) {
                assert!((a - b).abs() < 1e-9);
            }
            assert_eq!(h.apply(0.0, 0.0), Some((0.0, 0.0)));
        }
    }

    #[test]
    fn parses_the_graffiti_ground_truth_format() {
        let xml = "<opencv_storage><H13 type_id=\"opencv-matrix\"><rows>3</rows><data>\n 1 0 5\n 0 2 0\n 0 0 1 </data></H13></opencv_storage>";
        let h = Homography::parse_opencv_xml(xml).unwrap();
        assert_eq!(h.apply(1.0, 1.0), Some((6.0, 2.0)));
        assert!(
            Homography::parse_opencv_xml("<data>1 2</data>")
                .unwrap_err()
                .contains("9 expected")
        );
    }
}
