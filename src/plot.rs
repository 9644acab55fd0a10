//! Training curves as PNG and SVG: the document's "plot the cost" step, drawn from a
//! [`History`] after training; and, for the HTML report, the same curves, the learning rate
//! and a ROC curve as SVG text.
//!
//! One figure, two panels sharing the x axis (cost above, accuracy below), written twice: a
//! PNG to look at and an SVG to scale. Each panel's legend sits in a strip above its plot, so
//! no curve ever runs under it. The font is bundled (`assets/DejaVuSans.ttf`, licence
//! beside it) because deepcat must not depend on a system font library. This module only
//! draws; it records nothing and decides nothing about training.

use crate::metrics::RocPoint;
use crate::train::History;
use crate::{Error, Result};
use plotters::coord::Shift;
use plotters::data::float::pretty_print_float;
use plotters::prelude::*;
use plotters::style::register_font;
use std::ffi::OsString;
use std::io::Cursor;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// DejaVu Sans, embedded so that plots need no fonts installed on the machine.
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
/// The family name the font is registered under; every text style asks for it.
const FONT_FAMILY: &str = "sans-serif";

/// Figure size in pixels (width, height).
const SIZE: (u32, u32) = (900, 700);
/// Bytes per pixel in the RGB buffer the bitmap backend draws into.
const RGB_CHANNELS: usize = 3;
const TITLE: &str = "deepcat training";
const TITLE_PX: u32 = 26;
const AXIS_DESC_PX: u32 = 18;
const TICK_PX: u32 = 14;
const LEGEND_PX: u32 = 15;
/// Space around each panel, in pixels.
const PANEL_MARGIN: u32 = 12;
/// Wider on the right, where the last x tick label hangs half outside the plot.
const RIGHT_MARGIN: u32 = 30;
/// Height of the area under a panel for tick labels (and, below, the axis name).
const X_LABEL_AREA: u32 = 45;
/// Width of the area left of a panel for tick labels and the axis name.
const Y_LABEL_AREA: u32 = 70;
const LINE_WIDTH: u32 = 2;
/// Radius of the dot drawn for a series of one point.
const MARKER_RADIUS: u32 = 4;
/// Length of the line sample drawn beside each legend entry.
const LEGEND_SAMPLE: i32 = 20;
/// Empty space added above and below the data on a y axis, as a fraction of its span, so
/// that curves do not run along the frame.
const Y_MARGIN: f64 = 0.05;
/// Half-width of the axis drawn around a single value, as a fraction of that value (or of 1
/// for values below 1), since plotters cannot draw an axis of zero length.
const DEGENERATE_PAD: f64 = 0.1;

const TRAIN_COLOUR: RGBColor = RGBColor(31, 119, 180);
const VAL_COLOUR: RGBColor = RGBColor(255, 127, 14);

/// Writes the cost and accuracy curves of `history` next to `path` as `<stem>.png` and
/// `<stem>.svg`, returning the two paths, PNG first.
///
/// A `.png` or `.svg` extension on `path` is replaced; any other name gets both extensions
/// appended (`curves` → `curves.png`, `curves.svg`). The x axis is the epoch when every
/// record has one, the iteration (optimiser step) otherwise. Validation curves appear when
/// the history has validation figures.
///
/// # Errors
/// [`Error::Plot`] if the history is empty or a figure cannot be drawn or encoded;
/// [`Error::Io`] if a file cannot be written.
pub fn write_curves(history: &History, path: &Path) -> Result<Vec<PathBuf>> {
    let [png_path, svg_path] = output_paths(path);
    let curves = drawable_curves(history, &png_path)?;

    let png = render_png(&curves).map_err(|reason| plot_error(&png_path, reason))?;
    crate::model_file::write_atomically(&png_path, &png)?;
    let svg = render_svg(&curves).map_err(|reason| plot_error(&svg_path, reason))?;
    crate::model_file::write_atomically(&svg_path, svg.as_bytes())?;
    Ok(vec![png_path, svg_path])
}

/// The figure [`write_curves`] writes, as SVG text, for embedding in a page (the HTML
/// report). `name` is what the error says could not be drawn.
///
/// # Errors
/// [`Error::Plot`] if the history is empty or the figure cannot be drawn.
pub fn curves_svg(history: &History, name: &Path) -> Result<String> {
    let curves = drawable_curves(history, name)?;
    render_svg(&curves).map_err(|reason| plot_error(name, reason))
}

/// The curves of `history`, once it is known they can be drawn: records to draw, and the font.
fn drawable_curves(history: &History, name: &Path) -> Result<Curves> {
    if history.records.is_empty() {
        return Err(plot_error(
            name,
            "the training history is empty: nothing to plot",
        ));
    }
    if !font_registered() {
        return Err(plot_error(name, "the bundled font could not be loaded"));
    }
    Ok(Curves::from_history(history))
}

/// Side of the square ROC figure, in pixels.
const ROC_SIZE: u32 = 460;
/// The chance diagonal of a ROC figure.
const CHANCE_COLOUR: RGBColor = RGBColor(150, 150, 150);

/// A ROC curve (false positive rate → true positive rate, from
/// [`roc_curve`](crate::metrics::roc_curve)) with the chance diagonal and the AUC in the
/// title, as SVG text. `name` is what the error says could not be drawn.
///
/// # Errors
/// [`Error::Plot`] if the curve has no points or cannot be drawn.
pub fn roc_svg(curve: &[RocPoint], auc: f64, name: &Path) -> Result<String> {
    if curve.is_empty() {
        return Err(plot_error(name, "the ROC curve has no points"));
    }
    if !font_registered() {
        return Err(plot_error(name, "the bundled font could not be loaded"));
    }
    let points: Vec<(f64, f64)> = curve
        .iter()
        .map(|p| (p.false_positive_rate, p.true_positive_rate))
        .collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (ROC_SIZE, ROC_SIZE)).into_drawing_area();
        draw_roc(&root, &points, auc)
            .and_then(|()| root.present())
            .map_err(|e| plot_error(name, e.to_string()))?;
    }
    Ok(svg)
}

fn draw_roc<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    points: &[(f64, f64)],
    auc: f64,
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let title = format!("ROC curve (AUC = {auc:.4})");
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT_FAMILY, AXIS_DESC_PX + 2))
        .margin(PANEL_MARGIN)
        .margin_right(RIGHT_MARGIN)
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(0.0..1.0, 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("false positive rate")
        .y_desc("true positive rate")
        .axis_desc_style((FONT_FAMILY, AXIS_DESC_PX))
        .light_line_style(TRANSPARENT)
        .label_style((FONT_FAMILY, TICK_PX))
        .x_label_formatter(&|v| pretty_print_float(*v, false))
        .y_label_formatter(&|v| pretty_print_float(*v, false))
        .draw()?;
    let chance = CHANCE_COLOUR.stroke_width(1);
    chart.draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], chance))?;
    let style = TRAIN_COLOUR.stroke_width(LINE_WIDTH);
    chart.draw_series(LineSeries::new(points.iter().copied(), style))?;
    Ok(())
}

/// `<stem>.png` and `<stem>.svg` for the path the user gave.
fn output_paths(path: &Path) -> [PathBuf; 2] {
    let is_ours =
        |ext: &std::ffi::OsStr| ["png", "svg"].iter().any(|e| ext.eq_ignore_ascii_case(e));
    let stem = match path.extension() {
        Some(ext) if is_ours(ext) => path.with_extension(""),
        _ => path.to_path_buf(),
    };
    // Appending rather than `with_extension`, which would eat a dot in `run.v2`.
    let with = |ext: &str| {
        let mut name = OsString::from(stem.as_os_str());
        name.push(ext);
        PathBuf::from(name)
    };
    [with(".png"), with(".svg")]
}

fn plot_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Plot {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Registers the bundled font once per process and says whether that worked.
fn font_registered() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| register_font(FONT_FAMILY, FontStyle::Normal, FONT).is_ok())
}

/// The series to draw, as (x, y) points, with non-finite values left out so that a diverged
/// run still plots what it can.
struct Curves {
    x_desc: &'static str,
    /// The x axis counts whole epochs: ticks only at whole numbers.
    by_epoch: bool,
    cost: Vec<(f64, f64)>,
    val_cost: Vec<(f64, f64)>,
    accuracy: Vec<(f64, f64)>,
    val_accuracy: Vec<(f64, f64)>,
    rate: Vec<(f64, f64)>,
}

impl Curves {
    fn from_history(history: &History) -> Self {
        let by_epoch = history.records.iter().all(|r| r.epoch.is_some());
        let x = |r: &crate::train::Record| match r.epoch {
            Some(epoch) if by_epoch => epoch as f64,
            _ => r.step as f64,
        };
        let series = |y: fn(&crate::train::Record) -> Option<f64>| -> Vec<(f64, f64)> {
            let points = history.records.iter().filter_map(|r| Some((x(r), y(r)?)));
            points.filter(|(_, y)| y.is_finite()).collect()
        };
        Curves {
            x_desc: if by_epoch { "epoch" } else { "iteration" },
            by_epoch,
            cost: series(|r| Some(r.cost)),
            val_cost: series(|r| r.val_cost),
            accuracy: series(|r| Some(r.train_accuracy)),
            val_accuracy: series(|r| r.val_accuracy),
            rate: series(|r| Some(f64::from(r.learning_rate))),
        }
    }

    fn x_range(&self) -> Range<f64> {
        let xs = self.cost.iter().chain(&self.accuracy).map(|p| p.0);
        axis_range(xs, 0.0)
    }
}

/// The span of the finite `values`, widened by `margin` of it on each side; a single value
/// gets a small axis around it, no values the unit axis.
fn axis_range(values: impl Iterator<Item = f64>, margin: f64) -> Range<f64> {
    let bounds = values
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((f64::min(lo, v), f64::max(hi, v))),
        });
    let Some((lo, hi)) = bounds else {
        return 0.0..1.0;
    };
    let span = hi - lo;
    let pad = if span > f64::EPSILON * lo.abs().max(1.0) {
        span * margin
    } else {
        lo.abs().max(1.0) * DEGENERATE_PAD
    };
    (lo - pad)..(hi + pad)
}

fn render_png(curves: &Curves) -> Result<Vec<u8>, String> {
    let (width, height) = SIZE;
    let mut pixels = vec![0u8; width as usize * height as usize * RGB_CHANNELS];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area();
        draw(&root, curves).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    let image = image::RgbImage::from_raw(width, height, pixels)
        .ok_or("the pixel buffer does not match the figure size")?;
    let mut png = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| format!("cannot encode PNG: {e}"))?;
    Ok(png)
}

fn render_svg(curves: &Curves) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw(&root, curves).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

type DrawResult<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Draws the titled two-panel figure on any backend, so PNG and SVG are the same picture.
fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, curves: &Curves) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let body = root.titled(TITLE, (FONT_FAMILY, TITLE_PX))?;
    let (top, bottom) = body.split_vertically(body.dim_in_pixel().1 / 2);
    let x = curves.x_range();
    // Only the bottom panel names the shared x axis; the top one keeps its ticks for reading.
    let cost = [curves.cost.as_slice(), &curves.val_cost];
    let axes = Axes {
        x: x.clone(),
        whole_x: curves.by_epoch,
        y: None,
    };
    panel(&top, &axes, ("", "cost"), cost)?;
    let accuracy = [curves.accuracy.as_slice(), &curves.val_accuracy];
    let descs = (curves.x_desc, "accuracy");
    // Accuracy on its whole scale: an auto-scaled axis made 0.55 to 0.61 look like a collapse.
    let axes = Axes {
        y: Some(0.0..ACCURACY_TOP),
        ..axes
    };
    panel(&bottom, &axes, descs, accuracy)
}

/// Top of the accuracy axis: a little above 1 so a perfect run does not hide in the frame.
const ACCURACY_TOP: f64 = 1.02;

/// A panel's axes: the x span, whether x counts whole units, and a fixed y span (or `None`
/// to fit the data).
struct Axes {
    x: Range<f64>,
    whole_x: bool,
    y: Option<Range<f64>>,
}

/// One line of a panel: its points, colour and legend label.
type Series<'a> = (&'a [(f64, f64)], RGBColor, String);

/// One panel: a training series and, when not empty, a validation series, with a legend in
/// a strip above the plot, where no curve can run under it.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    axes: &Axes,
    (x_desc, y_desc): (&str, &str),
    [train, val]: [&[(f64, f64)]; 2],
) -> DrawResult<DB> {
    let series: Vec<Series> = [
        (train, TRAIN_COLOUR, "training"),
        (val, VAL_COLOUR, "validation"),
    ]
    .into_iter()
    .filter(|(points, ..)| !points.is_empty())
    .map(|(points, colour, name)| (points, colour, format!("{name} {y_desc}")))
    .collect();
    let (strip, plot) = area.split_vertically(LEGEND_STRIP);
    legend(&strip, &series)?;
    let y = match &axes.y {
        Some(fixed) => fixed.clone(),
        None => axis_range(train.iter().chain(val).map(|p| p.1), Y_MARGIN),
    };
    lines(&plot, axes, y, (x_desc, y_desc), &series, &|v| {
        pretty_print_float(*v, false)
    })
}

/// Height of the strip above a panel that holds its legend.
const LEGEND_STRIP: u32 = 26;
/// Space between two legend entries, and between a line sample and its label.
const LEGEND_GAP: i32 = 24;

/// The legend: for each series a line sample and its label, left to right, starting where
/// the plot starts (right of the y labels).
fn legend<DB: DrawingBackend>(strip: &DrawingArea<DB, Shift>, series: &[Series]) -> DrawResult<DB> {
    let font = TextStyle::from((FONT_FAMILY, LEGEND_PX).into_font());
    let mid = LEGEND_STRIP as i32 / 2 + PANEL_MARGIN as i32 / 2;
    let mut x = (PANEL_MARGIN + Y_LABEL_AREA) as i32;
    for (_, colour, label) in series {
        let sample = [(x, mid), (x + LEGEND_SAMPLE, mid)];
        strip.draw(&PathElement::new(
            sample,
            colour.stroke_width(LINE_WIDTH + 1),
        ))?;
        x += LEGEND_SAMPLE + LEGEND_GAP / 3;
        let (width, height) = strip.estimate_text_size(label, &font)?;
        let top = mid - height as i32 / 2;
        strip.draw(&Text::new(label.clone(), (x, top), font.clone()))?;
        x += width as i32 + LEGEND_GAP;
    }
    Ok(())
}

/// A chart of `series` on `axes` (y spanning `y`), with its mesh and labelled axes.
fn lines<DB: DrawingBackend>(
    plot: &DrawingArea<DB, Shift>,
    axes: &Axes,
    y: Range<f64>,
    (x_desc, y_desc): (&str, &str),
    series: &[Series],
    y_format: &dyn Fn(&f64) -> String,
) -> DrawResult<DB> {
    let x = axes.x.clone();
    // Whole epochs: as many labels as epochs (at most 10), and none at fractions.
    let x_labels = if axes.whole_x {
        ((x.end - x.start).round() as usize + 1).clamp(2, 10)
    } else {
        10
    };
    let whole_x = axes.whole_x;
    let x_format = move |v: &f64| {
        if whole_x && (v.fract().abs() > 1e-9) {
            String::new()
        } else {
            pretty_print_float(*v, false)
        }
    };
    let mut chart = ChartBuilder::on(plot)
        .margin(PANEL_MARGIN)
        .margin_top(PANEL_MARGIN / 2)
        .margin_right(RIGHT_MARGIN)
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .axis_desc_style((FONT_FAMILY, AXIS_DESC_PX))
        // Only the labelled grid lines: the fine ones between them made the panels hard to read.
        .light_line_style(TRANSPARENT)
        .label_style((FONT_FAMILY, TICK_PX))
        .x_labels(x_labels)
        // Plotters' default keeps one decimal (`2500.0`); iterations and epochs read better bare.
        .x_label_formatter(&x_format)
        .y_label_formatter(y_format)
        .draw()?;
    for &(points, colour, _) in series {
        let style = colour.stroke_width(LINE_WIDTH);
        chart.draw_series(LineSeries::new(points.iter().copied(), style))?;
        // A line through one point draws nothing; mark a lone point so the run is visible.
        if let [point] = points {
            chart.draw_series([Circle::new(*point, MARKER_RADIUS, colour.filled())])?;
        }
    }
    Ok(())
}

/// Size of the learning-rate figure in pixels (width, height).
const RATE_SIZE: (u32, u32) = (900, 300);

/// The learning rate of every record of `history` against the same x axis as the curves
/// (epochs or iterations), as SVG text. The y axis starts at 0. `name` is what the error says
/// could not be drawn.
///
/// # Errors
/// [`Error::Plot`] if no record has a learning rate (older models) or the figure cannot be
/// drawn.
pub fn learning_rate_svg(history: &History, name: &Path) -> Result<String> {
    let curves = drawable_curves(history, name)?;
    if curves.rate.is_empty() {
        return Err(plot_error(name, "the history records no learning rate"));
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, RATE_SIZE).into_drawing_area();
        draw_rate(&root, &curves)
            .and_then(|()| root.present())
            .map_err(|e| plot_error(name, e.to_string()))?;
    }
    Ok(svg)
}

fn draw_rate<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, curves: &Curves) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let top = curves.rate.iter().map(|p| p.1).fold(0.0, f64::max);
    let top = if top > 0.0 {
        top * (1.0 + 2.0 * Y_MARGIN)
    } else {
        1.0
    };
    let axes = Axes {
        x: curves.x_range(),
        whole_x: curves.by_epoch,
        y: None,
    };
    let series = [(curves.rate.as_slice(), TRAIN_COLOUR, String::new())];
    let descs = (curves.x_desc, "learning rate");
    lines(root, &axes, 0.0..top, descs, &series, &|v| rate_label(*v))
}

/// A learning rate as a tick label: small rates in scientific notation (`7.5e-3`).
fn rate_label(v: f64) -> String {
    if v == 0.0 {
        "0".to_string()
    } else if v.abs() < 0.01 {
        format!("{v:.1e}")
    } else {
        pretty_print_float(v, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Record;

    /// `n` records every 100 iterations, cost falling and accuracy rising, optionally by
    /// epoch and with validation figures.
    fn history(n: usize, by_epoch: bool, validation: bool) -> History {
        let records = (0..n)
            .map(|i| {
                let t = i as f64 / n.max(2) as f64;
                Record {
                    step: i * 100,
                    epoch: by_epoch.then_some(i + 1),
                    cost: 0.69 * (-2.0 * t).exp(),
                    train_accuracy: 0.5 + 0.45 * t,
                    val_cost: validation.then_some(0.7 * (-1.5 * t).exp() + 0.05),
                    val_accuracy: validation.then_some(0.5 + 0.35 * t),
                    learning_rate: 0.0075,
                }
            })
            .collect();
        History { records }
    }

    /// Writes the curves into a fresh folder; returns the folder (kept alive), the paths, and
    /// the SVG text after checking the PNG decodes to the figure size and is not blank.
    fn write_and_check(history: &History) -> (tempfile::TempDir, Vec<PathBuf>, String) {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_curves(history, &dir.path().join("curves")).unwrap();
        assert_eq!(
            paths,
            [dir.path().join("curves.png"), dir.path().join("curves.svg")]
        );
        let png = image::open(&paths[0]).unwrap().to_rgb8();
        assert_eq!(png.dimensions(), SIZE);
        let first = png.get_pixel(0, 0);
        assert!(
            png.pixels().any(|p| p != first),
            "the PNG is one flat colour"
        );
        let svg = std::fs::read_to_string(&paths[1]).unwrap();
        assert!(svg.contains("<svg"), "{}", &svg[..svg.len().min(200)]);
        (dir, paths, svg)
    }

    #[test]
    fn writes_png_and_svg_by_iteration_with_validation() {
        let (_dir, _paths, svg) = write_and_check(&history(25, false, true));
        // The SVG backend puts each text on a line of its own.
        let texts: Vec<&str> = svg.lines().collect();
        for text in [
            TITLE,
            "iteration",
            "cost",
            "accuracy",
            "training cost",
            "validation accuracy",
        ] {
            assert!(texts.contains(&text), "the SVG lacks the text {text:?}");
        }
    }

    #[test]
    fn writes_curves_by_epoch_without_validation() {
        let (_dir, _paths, svg) = write_and_check(&history(25, true, false));
        let texts: Vec<&str> = svg.lines().collect();
        assert!(texts.contains(&"epoch") && texts.contains(&"training accuracy"));
        assert!(!svg.contains("iteration") && !svg.contains("validation"));
    }

    #[test]
    fn plots_a_single_record() {
        write_and_check(&history(1, false, true));
        write_and_check(&history(1, true, false));
    }

    #[test]
    fn replaces_png_or_svg_extension_and_appends_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_curves(&history(25, false, false), &dir.path().join("run.png")).unwrap();
        assert_eq!(
            paths,
            [dir.path().join("run.png"), dir.path().join("run.svg")]
        );
        assert!(paths.iter().all(|p| p.is_file()));
        let [png, svg] = output_paths(Path::new("out/run.v2.SVG"));
        assert_eq!(
            (png, svg),
            ("out/run.v2.png".into(), "out/run.v2.svg".into())
        );
        let [png, svg] = output_paths(Path::new("run.v2"));
        assert_eq!((png, svg), ("run.v2.png".into(), "run.v2.svg".into()));
    }

    #[test]
    fn curves_and_roc_render_to_svg_text() {
        let svg = curves_svg(&history(25, true, true), Path::new("report")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("validation cost"));
        let err = curves_svg(&History::default(), Path::new("report")).unwrap_err();
        assert!(err.to_string().contains("nothing to plot"), "{err}");
        let curve =
            crate::metrics::roc_curve(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap();
        let svg = roc_svg(&curve, 0.75, Path::new("report")).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        assert!(svg.contains("AUC = 0.7500") && svg.contains("false positive rate"));
        assert!(roc_svg(&[], 0.5, Path::new("report")).is_err());
    }

    /// The y coordinates of every point of the SVG's lines of more than two points (the
    /// curves; a legend sample has two), and the y of every text that is one of `labels`.
    fn curve_and_label_heights(svg: &str, labels: &[&str]) -> (Vec<f64>, Vec<f64>) {
        let attr = |tag: &str, name: &str| -> Option<String> {
            let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
            Some(tag[at..at + tag[at..].find('"')?].to_string())
        };
        let mut curves = Vec::new();
        let mut texts = Vec::new();
        let lines: Vec<&str> = svg.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if let Some(points) = attr(line, "points") {
                let ys: Vec<f64> = points
                    .split_whitespace()
                    .filter_map(|p| p.split(',').nth(1)?.parse().ok())
                    .collect();
                if ys.len() > 2 {
                    curves.extend(ys);
                }
            }
            if labels.contains(&line.trim()) && i > 0 {
                texts.extend(attr(lines[i - 1], "y").and_then(|y| y.parse::<f64>().ok()));
            }
        }
        (curves, texts)
    }

    #[test]
    fn legends_sit_above_every_curve() {
        // Curves that touch the top of their axes: cost starts at its maximum, accuracy
        // reaches 1, where a legend inside the plot would cover them.
        let mut h = history(30, true, true);
        for r in &mut h.records {
            r.train_accuracy = 1.0;
            r.val_accuracy = Some(1.0);
        }
        let svg = curves_svg(&h, Path::new("report")).unwrap();
        let labels = [
            "training cost",
            "validation cost",
            "training accuracy",
            "validation accuracy",
        ];
        let (curves, texts) = curve_and_label_heights(&svg, &labels);
        assert_eq!(texts.len(), 4, "not every legend label was found");
        // Each label's panel: cost in the top half, accuracy in the bottom one.
        let half = f64::from(SIZE.1) / 2.0;
        for (label, y) in labels.iter().zip(&texts) {
            let in_panel = |c: &&f64| (**c > half) == (*y > half);
            let highest = curves
                .iter()
                .filter(in_panel)
                .fold(f64::INFINITY, |a, &c| a.min(c));
            let bottom = y + f64::from(LEGEND_PX);
            assert!(
                bottom < highest,
                "{label} (y {y}) reaches a curve at {highest}"
            );
        }
    }

    #[test]
    fn the_learning_rate_is_drawn_when_recorded() {
        let mut h = history(20, true, false);
        for (i, r) in h.records.iter_mut().enumerate() {
            r.learning_rate = 0.001 * (20 - i) as f32;
        }
        let svg = learning_rate_svg(&h, Path::new("report")).unwrap();
        let texts: Vec<&str> = svg.lines().map(str::trim).collect();
        assert!(texts.contains(&"learning rate") && texts.contains(&"epoch"));
        assert!(texts.contains(&"0") && texts.contains(&"0.01"), "{texts:?}");
        let (curves, _) = curve_and_label_heights(&svg, &[]);
        assert_eq!(curves.len(), 20);
        for r in &mut h.records {
            r.learning_rate = f32::NAN;
        }
        let err = learning_rate_svg(&h, Path::new("report")).unwrap_err();
        assert!(err.to_string().contains("no learning rate"), "{err}");
        assert_eq!(rate_label(0.0075), "7.5e-3");
        assert_eq!(rate_label(0.05), "0.05");
    }

    #[test]
    fn empty_history_is_a_plot_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_curves(&History::default(), &dir.path().join("curves")).unwrap_err();
        assert!(matches!(err, Error::Plot { .. }), "{err:?}");
        assert!(err.to_string().contains("nothing to plot"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn axis_range_pads_single_values_and_skips_non_finite() {
        assert_eq!(axis_range([0.2, 0.6].into_iter(), 0.0), 0.2..0.6);
        let r = axis_range([0.0, f64::NAN, 1.0, f64::INFINITY].into_iter(), Y_MARGIN);
        assert!(
            (r.start + 0.05).abs() < 1e-12 && (r.end - 1.05).abs() < 1e-12,
            "{r:?}"
        );
        let r = axis_range(std::iter::once(5.0), 0.0);
        assert!(r.start < 5.0 && r.end > 5.0, "{r:?}");
        assert!(!axis_range(std::iter::once(0.0), 0.0).is_empty());
        assert_eq!(axis_range(std::iter::empty(), Y_MARGIN), 0.0..1.0);
    }
}
