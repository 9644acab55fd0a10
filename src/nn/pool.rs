//! Max-pooling: 2×2 windows, stride 2, image by image in parallel. No parameters. A training
//! pass keeps which input of each window held the maximum ([`ArgMax`]), so backward need not
//! compare the input again; after an inference pass backward finds it from the input and
//! output.

use super::layer::{Backward, BoxedLayer, Layer, Mode};
use super::spec::{Draw, Kind, LayerSpec};
use super::{Geometry, recycle, standard};
use ndarray::{Array2, ArrayView2, Zip};

/// Max-pooling's settings (none): `pool`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxPoolSpec {}

impl Kind for MaxPoolSpec {
    const NAME: &'static str = "maxpool";

    fn token(&self) -> String {
        "pool".into()
    }

    fn output(&self, input: Geometry) -> Result<Geometry, String> {
        if input.height < POOL || input.width < POOL {
            return Err(format!(
                "2×2 max-pooling needs at least 2×2 pixels, but gets {input}"
            ));
        }
        Ok(Geometry::new(
            input.height / POOL,
            input.width / POOL,
            input.channels,
        ))
    }

    fn build(&self, input: Geometry, _draw: &mut Draw<'_>) -> BoxedLayer {
        Box::new(MaxPool2d::new(input))
    }

    fn parse(token: &str) -> Option<Result<Vec<LayerSpec>, String>> {
        matches!(token, "pool" | "maxpool").then(|| Ok(vec![LayerSpec::MaxPool(MaxPoolSpec {})]))
    }
}

/// Max over each 2×2 window, stride 2: `h × w × c` → `⌊h/2⌋ × ⌊w/2⌋ × c` (a last odd row or
/// column is dropped, as in PyTorch). The gradient goes to the window's largest input (the
/// first one in reading order when several are equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2d {
    input: Geometry,
}

/// Side of a max-pool window, and its stride.
pub const POOL: usize = 2;

impl MaxPool2d {
    /// Max-pooling over `input` images.
    ///
    /// # Panics
    /// If the input is smaller than one window (the architecture is checked first).
    pub fn new(input: Geometry) -> Self {
        assert!(
            input.height >= POOL && input.width >= POOL,
            "max-pool needs at least {POOL}×{POOL} pixels, got {input}"
        );
        MaxPool2d { input }
    }

    /// The output geometry.
    pub fn output(&self) -> Geometry {
        Geometry::new(
            self.input.height / POOL,
            self.input.width / POOL,
            self.input.channels,
        )
    }

    /// One image: `y` gets each window's maximum, `which` (when given) which of the four
    /// inputs held it.
    pub(super) fn pool_image(&self, x: &[f32], y: &mut [f32], which: Option<&mut [u8]>) {
        let (c, row_len) = (self.input.channels, self.row_len());
        let out_row = self.output().width * c;
        let mut which = which.map(|w| w.chunks_exact_mut(c));
        for ((top, bottom), y) in row_pairs(x, row_len).zip(y.chunks_exact_mut(out_row)) {
            for ((t, b), y) in windows(top, bottom, c).zip(y.chunks_exact_mut(c)) {
                let ((p, q), (r, s)) = (t.split_at(c), b.split_at(c));
                for ((((y, &p), &q), &r), &s) in y.iter_mut().zip(p).zip(q).zip(r).zip(s) {
                    *y = p.max(q).max(r.max(s));
                }
                let Some(w) = which.as_mut().and_then(|w| w.next()) else {
                    continue;
                };
                for ((((w, &m), &p), &q), &r) in w.iter_mut().zip(&*y).zip(p).zip(q).zip(r) {
                    // Branch-free: the number of inputs before the first that equals the max.
                    let past_p = u8::from(p != m);
                    let past_q = past_p * u8::from(q != m);
                    let past_r = past_q * u8::from(r != m);
                    *w = past_p + past_q + past_r;
                }
            }
        }
    }

    /// One image's gradient from the saved arg-max positions: `dx` at each window's input
    /// `which` says gets `dy`, the other three 0.
    fn unpool_image(&self, which: &[u8], dy: &[f32], dx: &mut [f32]) {
        let (c, row_len) = (self.input.channels, self.row_len());
        let out_row = self.output().width * c;
        let dx_pairs = dx
            .chunks_exact_mut(POOL * row_len)
            .map(|pair| pair.split_at_mut(row_len));
        let rows = which.chunks_exact(out_row).zip(dy.chunks_exact(out_row));
        for ((dtop, dbottom), (which, dy)) in dx_pairs.zip(rows) {
            let dwindows = dtop
                .chunks_exact_mut(POOL * c)
                .zip(dbottom.chunks_exact_mut(POOL * c));
            for ((dt, db), (w, g)) in dwindows.zip(which.chunks_exact(c).zip(dy.chunks_exact(c))) {
                let ((d0, d1), (d2, d3)) = (dt.split_at_mut(c), db.split_at_mut(c));
                // Every slice cut to `c` up front, so the loop below runs without bounds
                // checks and vectorises (a six-way zip did not).
                let (d0, d1, d2, d3) = (&mut d0[..c], &mut d1[..c], &mut d2[..c], &mut d3[..c]);
                let (w, g) = (&w[..c], &g[..c]);
                for ch in 0..c {
                    let (w, g) = (w[ch], g[ch]);
                    d0[ch] = if w == 0 { g } else { 0.0 };
                    d1[ch] = if w == 1 { g } else { 0.0 };
                    d2[ch] = if w == 2 { g } else { 0.0 };
                    d3[ch] = if w == 3 { g } else { 0.0 };
                }
            }
        }
    }

    /// Values in one row of input pixels.
    fn row_len(&self) -> usize {
        self.input.width * self.input.channels
    }
}

/// The 2×2 windows of one image, output row by output row: each output row's two input rows
/// (a last odd row is left out), as slices of `row_len` values.
fn row_pairs(x: &[f32], row_len: usize) -> impl Iterator<Item = (&[f32], &[f32])> {
    x.chunks_exact(POOL * row_len)
        .map(move |pair| pair.split_at(row_len))
}

/// The windows along a pair of rows: for each, the top row's two pixels and the bottom row's,
/// `2·c` values each (a last odd column is left out).
fn windows<'a>(
    top: &'a [f32],
    bottom: &'a [f32],
    c: usize,
) -> impl Iterator<Item = (&'a [f32], &'a [f32])> {
    top.chunks_exact(POOL * c)
        .zip(bottom.chunks_exact(POOL * c))
}

/// Runs `f(x_row, out_row)` over the rows of `x` and a new `(batch, width)` array, in
/// parallel.
pub(super) fn per_image(
    x: ArrayView2<'_, f32>,
    width: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) -> Array2<f32> {
    let x = x.as_standard_layout();
    let mut out = recycle::scratch((x.nrows(), width));
    Zip::from(out.rows_mut())
        .and(x.rows())
        .par_for_each(|mut o, x| {
            // Rows of standard-layout arrays are contiguous.
            if let (Some(o), Some(x)) = (o.as_slice_mut(), x.to_slice()) {
                f(x, o);
            }
        });
    out
}

/// What a training pass keeps: for each output value, which of its window's four inputs
/// held the maximum (0 to 3 in reading order, the first on ties), `(batch, outputs)`.
#[derive(Debug)]
pub struct ArgMax(Array2<u8>);

impl Layer for MaxPool2d {
    /// The arg-max positions in training; nothing at inference.
    type Saved = Option<ArgMax>;

    fn spec(&self) -> LayerSpec {
        LayerSpec::MaxPool(MaxPoolSpec {})
    }

    fn output(&self) -> Geometry {
        MaxPool2d::output(self)
    }

    /// `x (batch, h·w·c)` → `(batch, ⌊h/2⌋·⌊w/2⌋·c)`. A training pass saves, for each
    /// output, which of its window's four inputs held the maximum (0 to 3 in reading order,
    /// the first on ties), so backward need not read the input again.
    fn forward(
        &self,
        x: ArrayView2<'_, f32>,
        mode: &mut Mode<'_>,
    ) -> (Array2<f32>, Option<ArgMax>) {
        assert_eq!(
            x.ncols(),
            self.input.len(),
            "max-pool expects {}",
            self.input
        );
        let x = x.as_standard_layout();
        let shape = (x.nrows(), self.output().len());
        let mut y = recycle::scratch(shape);
        if !mode.is_train() {
            Zip::from(y.rows_mut())
                .and(x.rows())
                .par_for_each(|mut y, x| {
                    if let (Some(y), Some(x)) = (y.as_slice_mut(), x.to_slice()) {
                        self.pool_image(x, y, None);
                    }
                });
            return (y, None);
        }
        let mut which = Array2::<u8>::zeros(shape);
        Zip::from(y.rows_mut())
            .and(which.rows_mut())
            .and(x.rows())
            .par_for_each(|mut y, mut which, x| {
                if let (Some(y), Some(w), Some(x)) =
                    (y.as_slice_mut(), which.as_slice_mut(), x.to_slice())
                {
                    self.pool_image(x, y, Some(w));
                }
            });
        (y, Some(ArgMax(which)))
    }

    /// `dx` is `dy` at each window's arg-max and 0 elsewhere: the first of the window's four
    /// inputs (in reading order) that equals the output gets the gradient.
    fn backward(
        &self,
        x: ArrayView2<'_, f32>,
        y: ArrayView2<'_, f32>,
        saved: &Option<ArgMax>,
        dy: Array2<f32>,
        _need_dx: bool,
    ) -> Backward {
        let dy = standard(dy);
        let (g, c, row_len) = (self.input, self.input.channels, self.row_len());
        if let Some(ArgMax(which)) = saved {
            let mut dx = if g.height % POOL == 0 && g.width % POOL == 0 {
                recycle::scratch(x.dim())
            } else {
                recycle::zeros(x.dim())
            };
            Zip::from(dx.rows_mut())
                .and(which.rows())
                .and(dy.rows())
                .par_for_each(|mut dx, which, dy| {
                    if let (Some(dx), Some(w), Some(dy)) =
                        (dx.as_slice_mut(), which.to_slice(), dy.to_slice())
                    {
                        self.unpool_image(w, dy, dx);
                    }
                });
            recycle::give(dy);
            return Backward {
                dx: Some(dx),
                grads: Vec::new(),
            };
        }
        let (x, y) = (x.as_standard_layout(), y.as_standard_layout());
        // Windows cover every input unless a side is odd; then the last row or column stays 0.
        let mut dx = if g.height % POOL == 0 && g.width % POOL == 0 {
            recycle::scratch(x.dim())
        } else {
            recycle::zeros(x.dim())
        };
        Zip::from(dx.rows_mut())
            .and(x.rows())
            .and(y.rows())
            .and(dy.rows())
            .par_for_each(|mut dx, x, y, dy| {
                let (Some(dx), Some(x), Some(y), Some(dy)) =
                    (dx.as_slice_mut(), x.to_slice(), y.to_slice(), dy.to_slice())
                else {
                    return; // rows of standard-layout arrays are contiguous
                };
                let out_row = self.output().width * c;
                let dx_pairs = dx
                    .chunks_exact_mut(POOL * row_len)
                    .map(|pair| pair.split_at_mut(row_len));
                let rows = row_pairs(x, row_len)
                    .zip(dx_pairs)
                    .zip(y.chunks_exact(out_row).zip(dy.chunks_exact(out_row)));
                for (((top, bottom), (dtop, dbottom)), (y, dy)) in rows {
                    let dwindows = dtop
                        .chunks_exact_mut(POOL * c)
                        .zip(dbottom.chunks_exact_mut(POOL * c));
                    let all = windows(top, bottom, c)
                        .zip(dwindows)
                        .zip(y.chunks_exact(c).zip(dy.chunks_exact(c)));
                    for (((t, b), (dt, db)), (y, dy)) in all {
                        route(t, b, dt, db, y, dy, c);
                    }
                }
            });
        recycle::give(dy);
        Backward {
            dx: Some(dx),
            grads: Vec::new(),
        }
    }
}

/// One window's gradient: of its four inputs (top-left, top-right, bottom-left, bottom-right),
/// the first that equals the output `y` gets `dy`, the others 0, channel by channel.
fn route(
    top: &[f32],
    bottom: &[f32],
    dtop: &mut [f32],
    dbottom: &mut [f32],
    y: &[f32],
    dy: &[f32],
    c: usize,
) {
    // The bottom-right input needs no test: it gets the gradient when no other one does.
    let ((xa, xb), (xd, _)) = (top.split_at(c), bottom.split_at(c));
    let ((da, db), (dd, de)) = (dtop.split_at_mut(c), dbottom.split_at_mut(c));
    // Every slice cut to `c` up front, so the loop below runs without bounds checks.
    let (xb, db, de, y, dy) = (&xb[..c], &mut db[..c], &mut de[..c], &y[..c], &dy[..c]);
    for ch in 0..c {
        let (m, g) = (y[ch], dy[ch]);
        let at_a = xa[ch] == m;
        let at_b = !at_a && xb[ch] == m;
        let at_d = !at_a && !at_b && xd[ch] == m;
        let at_e = !at_a && !at_b && !at_d;
        da[ch] = if at_a { g } else { 0.0 };
        db[ch] = if at_b { g } else { 0.0 };
        dd[ch] = if at_d { g } else { 0.0 };
        de[ch] = if at_e { g } else { 0.0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn max_pool_keeps_each_windows_largest_value_and_routes_its_gradient() {
        // One 2×4 image, one channel: windows [1 5 / 2 0] and [3 3 / 7 3].
        let pool = MaxPool2d::new(Geometry::new(2, 4, 1));
        let x = array![[1.0f32, 5.0, 3.0, 3.0, 2.0, 0.0, 7.0, 3.0]];
        let (y, _) = pool.forward(x.view(), &mut Mode::Infer);
        assert_eq!(y, array![[5.0, 7.0]]);
        let back = pool.backward(x.view(), y.view(), &None, array![[10.0, 20.0]], true);
        assert_eq!(
            back.dx.unwrap(),
            array![[0.0, 10.0, 0.0, 0.0, 0.0, 0.0, 20.0, 0.0]]
        );
    }

    #[test]
    fn a_training_pass_routes_the_gradient_like_inference_ties_to_the_first() {
        use rand::SeedableRng;
        // Ties in the second window: its first 4 (top-right) gets the gradient either way.
        let pool = MaxPool2d::new(Geometry::new(3, 4, 2));
        let x = array![[
            1.0f32, 2.0, 4.0, 4.0, 3.0, 0.0, 4.0, 4.0, 4.0, 9.0, 0.0, 1.0, 2.0, 4.0, 4.0, 4.0, 7.0,
            7.0, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0
        ]];
        let dy = array![[10.0f32, 20.0, 30.0, 40.0]];
        let (y, none) = pool.forward(x.view(), &mut Mode::Infer);
        let mut rng = crate::Rng::seed_from_u64(1);
        let (y_train, which) = pool.forward(x.view(), &mut Mode::Train(&mut rng));
        assert!(none.is_none() && which.is_some());
        assert_eq!(y, y_train);
        let plain = pool.backward(x.view(), y.view(), &None, dy.clone(), true);
        let saved = pool.backward(x.view(), y.view(), &which, dy, true);
        assert_eq!(plain.dx, saved.dx);
        let dx = saved.dx.unwrap();
        // Window 2, channel 0: inputs 3 (top-left), 4, 4, 4: the top-right one gets it.
        assert_eq!((dx[[0, 4]], dx[[0, 6]], dx[[0, 14]]), (0.0, 30.0, 0.0));
        // The dropped third row gets nothing.
        assert!(dx.slice(ndarray::s![0, 16..]).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn max_pool_drops_an_odd_last_row_and_keeps_channels_apart() {
        let pool = MaxPool2d::new(Geometry::new(3, 2, 2));
        assert_eq!(pool.output(), Geometry::new(1, 1, 2));
        // Pixels (channel 0, channel 1); the last row would win both channels if it counted.
        let x = array![[
            1.0f32, 8.0, 4.0, 2.0, 3.0, 6.0, 5.0, 7.0, 9.0, 9.0, 9.0, 9.0
        ]];
        let (y, _) = pool.forward(x.view(), &mut Mode::Infer);
        assert_eq!(y, array![[5.0, 8.0]]);
    }
}
