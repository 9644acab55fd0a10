//! How a row of activations is read: height × width × channels, channels last.
//!
//! Every layer still takes and returns `(batch, features)`; a [`Geometry`] says how those
//! features are laid out. The loader's rows are `size × size × 3` (row, column, RGB: the
//! `hwc_rgb` layout), conv and pool layers keep that channels-last order, and a dense layer's
//! `units` outputs are `1 × 1 × units`.

/// The shape of one example's features: `height × width × channels`, stored row by row, pixel
/// by pixel, channel by channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Geometry {
    /// Rows of pixels.
    pub height: usize,
    /// Pixels per row.
    pub width: usize,
    /// Values per pixel.
    pub channels: usize,
}

impl Geometry {
    /// `height × width × channels`.
    pub fn new(height: usize, width: usize, channels: usize) -> Self {
        Geometry {
            height,
            width,
            channels,
        }
    }

    /// A square RGB image of side `size`: what the loader makes.
    pub fn image(size: usize) -> Self {
        Geometry::new(size, size, 3)
    }

    /// `units` values with no spatial extent (a dense layer's output): `1 × 1 × units`.
    pub fn flat(units: usize) -> Self {
        Geometry::new(1, 1, units)
    }

    /// Pixels per example, `height · width`.
    pub fn pixels(&self) -> usize {
        self.height * self.width
    }

    /// Values per example, `height · width · channels`.
    pub fn len(&self) -> usize {
        self.pixels() * self.channels
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this is `1 × 1 × units`.
    pub fn is_flat(&self) -> bool {
        self.height == 1 && self.width == 1
    }
}

impl std::fmt::Display for Geometry {
    /// `64×64×16` (height × width × channels).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}×{}×{}", self.height, self.width, self.channels)
    }
}
