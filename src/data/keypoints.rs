//! Harris corners: the interest points patches are cut around (the paper's benchmark used
//! MSER regions; any standard detector serves — Harris is short and deterministic).

use super::image::GreyImage;

/// Up to `n` corners `(x, y)`, strongest first, at least `radius` px apart and `margin` px
/// from the border.
pub fn harris(img: &GreyImage, n: usize, radius: usize, margin: usize) -> Vec<(usize, usize)> {
    let (w, h) = (img.width, img.height);
    if w < 2 * margin + 3 || h < 2 * margin + 3 {
        return Vec::new();
    }
    // gradients (central differences), then 5x5 box-summed structure tensor
    let mut ix = vec![0f32; w * h];
    let mut iy = vec![0f32; w * h];
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            ix[y * w + x] = (img.at(x + 1, y) - img.at(x - 1, y)) * 0.5;
            iy[y * w + x] = (img.at(x, y + 1) - img.at(x, y - 1)) * 0.5;
        }
    }
    let mut resp = Vec::new();
    for y in margin..h - margin {
        for x in margin..w - margin {
            let (mut a, mut b, mut c) = (0f32, 0f32, 0f32);
            for dy in 0..5 {
                for dx in 0..5 {
                    let i = (y + dy - 2) * w + (x + dx - 2);
                    a += ix[i] * ix[i];
                    b += ix[i] * iy[i];
                    c += iy[i] * iy[i];
                }
            }
            let r = a * c - b * b - 0.05 * (a + c) * (a + c);
            if r > 1e-6 {
                resp.push((r, x, y));
            }
        }
    }
    resp.sort_by(|p, q| q.0.total_cmp(&p.0).then((p.2, p.1).cmp(&(q.2, q.1))));
    let mut out: Vec<(usize, usize)> = Vec::new();
    let r2 = (radius * radius) as isize;
    for (_, x, y) in resp {
        if out.len() == n {
            break;
        }
        let far = out.iter().all(|&(px, py)| {
            let (dx, dy) = (px as isize - x as isize, py as isize - y as isize);
            dx * dx + dy * dy >= r2
        });
        if far {
            out.push((x, y));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_corners_of_a_square() {
        let (w, h) = (64, 64);
        let mut px = vec![0f32; w * h];
        for y in 20..40 {
            for x in 20..40 {
                px[y * w + x] = 1.0;
            }
        }
        let img = GreyImage {
            width: w,
            height: h,
            px,
        };
        let mut c = harris(&img, 4, 8, 4);
        c.sort();
        assert_eq!(c.len(), 4);
        for ((x, y), (ex, ey)) in c.iter().zip([(20, 20), (20, 39), (39, 20), (39, 39)]) {
            assert!(
                (*x as isize - ex).abs() <= 2 && (*y as isize - ey).abs() <= 2,
                "{c:?}"
            );
        }
    }
}
