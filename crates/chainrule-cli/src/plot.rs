//! Plots, as PNG and SVG, with an embedded font (DejaVu Sans) so they render the
//! same on a machine without fonts or external programs: the PNGs are drawn with it,
//! and the SVGs carry it as an `@font-face` (their text stays text).

use anyhow::{Result, anyhow};
use base64::Engine;
use chainrule::nn::Sequential;
use chainrule::train::predict;
use chainrule::{Tensor, io::write_atomic};
use plotters::coord::Shift;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

/// The family name under which the SVGs embed DejaVu Sans.
const SVG_FONT: &str = "chainrule-dejavu-sans";

/// The per-class colours (matplotlib's tab10).
const CLASS_COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn class_color(class: usize) -> RGBColor {
    CLASS_COLORS[class % CLASS_COLORS.len()]
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font shipped by the dejavu crate.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold());
    });
}

/// Draws into `<stem>.png` and `<stem>.svg`, each written atomically.
fn save_png_and_svg(
    stem: &Path,
    size: (u32, u32),
    draw_png: impl Fn(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()>,
    draw_svg: impl Fn(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<()>,
) -> Result<()> {
    save_png_and_finished_svg(stem, size, draw_png, draw_svg, Ok)
}

/// [`save_png_and_svg`], with the SVG's text passed through `finish` before it is
/// written.
fn save_png_and_finished_svg(
    stem: &Path,
    size: (u32, u32),
    draw_png: impl Fn(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()>,
    draw_svg: impl Fn(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<()>,
    finish: impl FnOnce(String) -> Result<String>,
) -> Result<()> {
    register_font();
    let png = stem.with_extension("png");
    // The image encoder picks the format from the extension, so the temporary name
    // ends in .png too.
    let temp = stem.with_file_name(format!(
        ".{}.tmp.png",
        stem.file_name().unwrap_or_default().to_string_lossy()
    ));
    {
        let root = BitMapBackend::new(&temp, size).into_drawing_area();
        draw_png(&root)?;
        root.present()
            .map_err(|e| anyhow!("{}: {e}", png.display()))?;
    }
    std::fs::rename(&temp, &png).map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        anyhow!("{}: {e}", png.display())
    })?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw_svg(&root)?;
        root.present()
            .map_err(|e| anyhow!("{}: {e}", stem.display()))?;
    }
    write_atomic(
        &stem.with_extension("svg"),
        with_font(&finish(svg)?).as_bytes(),
    )?;
    Ok(())
}

/// `svg` with DejaVu Sans embedded as a web font and its text set in it.
fn with_font(svg: &str) -> String {
    // Encoded once per process: a run draws several SVGs, eval one more.
    static FONT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let font = FONT
        .get_or_init(|| base64::engine::general_purpose::STANDARD.encode(dejavu::sans::regular()));
    let style = format!(
        "<defs><style>@font-face {{ font-family: \"{SVG_FONT}\"; src: url(data:font/ttf;base64,{font}) format(\"truetype\"); }}</style></defs>"
    );
    let body = svg.replace(
        "font-family=\"sans-serif\"",
        &format!("font-family=\"{SVG_FONT}, sans-serif\""),
    );
    insert_after_opening_tag(&body, &style)
}

/// `svg` with `element` placed first inside its `<svg …>` element.
fn insert_after_opening_tag(svg: &str, element: &str) -> String {
    match svg
        .find("<svg")
        .and_then(|start| svg[start..].find('>').map(|end| start + end + 1))
    {
        Some(at) => format!("{}{element}{}", &svg[..at], &svg[at..]),
        None => svg.to_string(),
    }
}

/// `svg` with a PNG (`rgb`, `width` × `height` pixels, rows from the top) drawn
/// over `area` (left, top, right, bottom in SVG pixels) just after the background,
/// beneath everything else.
fn with_image_layer(
    svg: &str,
    rgb: &[u8],
    (width, height): (u32, u32),
    area: (i32, i32, i32, i32),
) -> Result<String> {
    let mut png_bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut png_bytes, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| anyhow!("plot: {e}"))?;
        writer
            .write_image_data(rgb)
            .map_err(|e| anyhow!("plot: {e}"))?;
    }
    let (left, top, right, bottom) = area;
    let image = format!(
        "<image x=\"{left}\" y=\"{top}\" width=\"{}\" height=\"{}\" preserveAspectRatio=\"none\" style=\"image-rendering: pixelated\" href=\"data:image/png;base64,{}\"/>",
        right - left,
        bottom - top,
        base64::engine::general_purpose::STANDARD.encode(&png_bytes)
    );
    // The background is the first element plotters writes (a full-size rect).
    let after_background = svg
        .find("<rect")
        .and_then(|start| svg[start..].find("/>").map(|end| start + end + 2));
    Ok(match after_background {
        Some(at) => format!("{}{image}{}", &svg[..at], &svg[at..]),
        None => insert_after_opening_tag(svg, &image),
    })
}

/// One epoch's numbers as the plots need them.
#[derive(Debug, Clone)]
pub struct EpochPoint {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: Option<f64>,
    pub validation_loss: Option<f64>,
    pub validation_accuracy: Option<f64>,
    /// The learning rate of the epoch, when known.
    pub lr: Option<f64>,
}

macro_rules! plot_err {
    ($e:expr) => {
        $e.map_err(|e| anyhow!("plot: {e}"))
    };
}

/// A named line: its label, colour and (x, y) points.
type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

/// One panel of the training plot: its title, its axis, its lines, and the epoch
/// to mark.
struct Panel<'a> {
    title: &'a str,
    y_label: &'a str,
    series: Vec<Series<'a>>,
    legend: SeriesLabelPosition,
    /// The epoch with the lowest validation loss, marked by a vertical line.
    best: Option<f64>,
    /// Whether the values may be drawn on a log scale (positive quantities).
    may_log: bool,
}

/// A tick label without float noise: 0.25, 1500, 3e-5.
fn tick(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let magnitude = v.abs();
    if (1e-3..1e5).contains(&magnitude) {
        let text = format!("{v:.4}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.0e}")
    }
}

impl Panel<'_> {
    /// The finite values of every line.
    fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.series
            .iter()
            .flat_map(|(_, _, points)| points.iter().map(|p| p.1))
            .filter(|v| v.is_finite())
    }

    /// Draws the panel on `area`, over epochs 1..=`last_epoch`: on a log scale when
    /// its values are positive and span two decades or more (a loss that falls from
    /// 2 to 0.01 is a flat line at the bottom otherwise).
    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        last_epoch: f64,
    ) -> Result<()> {
        let (lo, hi) = self
            .values()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
        let x_range = 1.0..last_epoch.max(2.0);
        let builder = |area| {
            let mut b = ChartBuilder::on(area);
            b.caption(self.title, ("sans-serif", 24))
                .margin(16)
                .x_label_area_size(48)
                .y_label_area_size(64);
            b
        };
        // Up to 30 decades: beyond that (a diverged run) the axis stays linear, and
        // its bounds finite.
        if self.may_log && lo > 0.0 && (100.0..1e30).contains(&(hi / lo)) {
            let (bottom, top) = (lo / 1.5, hi * 1.5);
            let y = (bottom..top).log_scale();
            let chart = plot_err!(builder(area).build_cartesian_2d(x_range, y))?;
            self.finish(
                chart,
                (bottom, top),
                &format!("{} (log scale)", self.y_label),
            )
        } else {
            let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
            // Losses from 0; a finite top, however large the largest value
            // (1.05 × 1.7e308 is inf).
            let bottom = if self.may_log {
                0.0
            } else {
                lo - 0.05 * (hi - lo).max(1e-9)
            };
            let top = (hi + 0.05 * (hi - bottom).max(1e-9)).clamp(bottom + 1e-9, f64::MAX);
            let chart = plot_err!(builder(area).build_cartesian_2d(x_range, bottom..top))?;
            self.finish(chart, (bottom, top), self.y_label)
        }
    }

    fn finish<'a, DB: DrawingBackend + 'a, Y>(
        &self,
        mut chart: ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
        (bottom, top): (f64, f64),
        y_label: &str,
    ) -> Result<()>
    where
        Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        plot_err!(
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc(y_label)
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_label_formatter(&|v| tick(*v))
                .label_style(("sans-serif", 15))
                .axis_desc_style(("sans-serif", 17))
                .light_line_style(RGBColor(235, 235, 235))
                .draw()
        )?;
        if let Some(best) = self.best {
            let grey = RGBColor(110, 110, 110);
            plot_err!(chart.draw_series(DashedLineSeries::new(
                [(best, bottom), (best, top)],
                6,
                4,
                grey.stroke_width(1)
            )))?
            .label(format!("best epoch ({best:.0})"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], grey.stroke_width(1))
            });
        }
        for (name, color, points) in &self.series {
            if points.is_empty() {
                continue;
            }
            let color = *color;
            plot_err!(chart.draw_series(LineSeries::new(points.clone(), color.stroke_width(2))))?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
                });
        }
        plot_err!(
            chart
                .configure_series_labels()
                .label_font(("sans-serif", 16))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(180, 180, 180))
                .position(self.legend.clone())
                .draw()
        )?;
        Ok(())
    }
}

/// Loss (and accuracy, for classification) and the learning rate per epoch,
/// training and validation, with the best epoch (lowest validation loss) marked.
pub fn training_curves(stem: &Path, points: &[EpochPoint]) -> Result<()> {
    let classification = points.iter().any(|p| p.train_accuracy.is_some());
    let width = if classification { 1500 } else { 1000 };
    save_png_and_svg(
        stem,
        (width, 480),
        |root| draw_training(root, points),
        |root| draw_training(root, points),
    )
}

fn draw_training<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    points: &[EpochPoint],
) -> Result<()> {
    let classification = points.iter().any(|p| p.train_accuracy.is_some());
    let last = points.last().map_or(1, |p| p.epoch) as f64;
    let (train_color, val_color) = (class_color(0), class_color(1));
    // Non-finite values (a run with skip_nonfinite on infinite data) stay out of
    // the plot: plotters' axis computation never ended on them.
    let series = |f: &dyn Fn(&EpochPoint) -> Option<f64>| -> Vec<(f64, f64)> {
        points
            .iter()
            .filter_map(|p| Some((p.epoch as f64, f(p)?)))
            .filter(|(_, y)| y.is_finite())
            .collect()
    };
    let val_losses = series(&|p| p.validation_loss);
    let best = val_losses
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|p| p.0);
    let mut panels = vec![Panel {
        title: "Loss",
        y_label: "loss",
        series: vec![
            ("train", train_color, series(&|p| Some(p.train_loss))),
            ("validation", val_color, val_losses),
        ],
        legend: SeriesLabelPosition::UpperRight,
        best,
        may_log: true,
    }];
    if classification {
        panels.push(Panel {
            title: "Accuracy",
            y_label: "accuracy (%)",
            series: vec![
                (
                    "train",
                    train_color,
                    series(&|p| p.train_accuracy.map(|a| 100.0 * a)),
                ),
                (
                    "validation",
                    val_color,
                    series(&|p| p.validation_accuracy.map(|a| 100.0 * a)),
                ),
            ],
            legend: SeriesLabelPosition::LowerRight,
            best,
            may_log: false,
        });
    }
    panels.push(Panel {
        title: "Learning rate",
        y_label: "learning rate",
        series: vec![("lr", class_color(2), series(&|p| p.lr))],
        legend: SeriesLabelPosition::UpperRight,
        best: None,
        may_log: true,
    });
    plot_err!(root.fill(&WHITE))?;
    for (panel, area) in panels.iter().zip(root.split_evenly((1, panels.len()))) {
        panel.draw(&area, last)?;
    }
    Ok(())
}

/// The model's predicted class over the plane of a 2-D data set, with the points.
pub fn decision_boundary(
    stem: &Path,
    model: &Sequential<f32>,
    x: &Tensor<f32>,
    classes: &[usize],
    names: &[String],
) -> Result<()> {
    let values = x.to_vec();
    let (xs, ys): (Vec<f64>, Vec<f64>) = values
        .chunks_exact(2)
        .map(|p| (f64::from(p[0]), f64::from(p[1])))
        .unzip();
    let span = |v: &[f64]| {
        let (lo, hi) = v
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        let pad = 0.08 * (hi - lo).max(1e-3);
        (lo - pad, hi + pad)
    };
    let ((x0, x1), (y0, y1)) = (span(&xs), span(&ys));
    const GRID: usize = 160;
    let mut grid = Vec::with_capacity(GRID * GRID * 2);
    for j in 0..GRID {
        for i in 0..GRID {
            grid.push((x0 + (x1 - x0) * (i as f64 + 0.5) / GRID as f64) as f32);
            grid.push((y0 + (y1 - y0) * (j as f64 + 0.5) / GRID as f64) as f32);
        }
    }
    let out = predict(
        &mut model.clone(),
        &Tensor::from_vec(grid, &[GRID * GRID, 2])?,
    )?;
    let width = out.shape()[1];
    let predicted: Vec<usize> = out
        .to_vec()
        .chunks_exact(width)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold(0, |b, (i, &v)| if v > row[b] { i } else { b })
        })
        .collect();
    let scene = Boundary {
        x: (x0, x1),
        y: (y0, y1),
        grid: GRID,
        predicted,
        points: xs.into_iter().zip(ys).collect(),
        classes,
        names,
    };
    // The PNG paints the grid cell by cell; the SVG gets it as one image beneath the
    // axes and points instead of GRID² rectangles.
    let area = std::cell::Cell::new((0, 0, 0, 0));
    save_png_and_finished_svg(
        stem,
        (760, 700),
        |root| scene.draw(root, true).map(drop),
        |root| scene.draw(root, false).map(|a| area.set(a)),
        |svg| {
            with_image_layer(
                &svg,
                &scene.grid_pixels(),
                (GRID as u32, GRID as u32),
                area.get(),
            )
        },
    )
}

struct Boundary<'a> {
    x: (f64, f64),
    y: (f64, f64),
    grid: usize,
    predicted: Vec<usize>,
    points: Vec<(f64, f64)>,
    classes: &'a [usize],
    names: &'a [String],
}

/// A class's colour at a quarter strength over white: the predicted regions.
fn region_color(class: usize) -> RGBColor {
    let RGBColor(r, g, b) = class_color(class);
    let mix = |c: u8| (255.0 - 0.25 * (255.0 - f64::from(c))).round() as u8;
    RGBColor(mix(r), mix(g), mix(b))
}

impl Boundary<'_> {
    /// The predicted regions as RGB pixels, one per grid cell, rows from the top.
    fn grid_pixels(&self) -> Vec<u8> {
        let mut rgb = Vec::with_capacity(self.grid * self.grid * 3);
        for row in (0..self.grid).rev() {
            for column in 0..self.grid {
                let RGBColor(r, g, b) = region_color(self.predicted[row * self.grid + column]);
                rgb.extend([r, g, b]);
            }
        }
        rgb
    }

    /// Draws the axes and the points, and with `regions` the predicted class of each
    /// grid cell; returns the plotting area in pixels (left, top, right, bottom).
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        regions: bool,
    ) -> Result<(i32, i32, i32, i32)> {
        plot_err!(root.fill(&WHITE))?;
        let mut chart = plot_err!(
            ChartBuilder::on(root)
                .caption("Decision boundary", ("sans-serif", 24))
                .margin(16)
                .x_label_area_size(48)
                .y_label_area_size(56)
                .build_cartesian_2d(self.x.0..self.x.1, self.y.0..self.y.1)
        )?;
        let (dx, dy) = (
            (self.x.1 - self.x.0) / self.grid as f64,
            (self.y.1 - self.y.0) / self.grid as f64,
        );
        if regions {
            plot_err!(
                chart.draw_series(self.predicted.iter().enumerate().map(|(k, &class)| {
                    let (i, j) = ((k % self.grid) as f64, (k / self.grid) as f64);
                    let corner = (self.x.0 + i * dx, self.y.0 + j * dy);
                    Rectangle::new(
                        [corner, (corner.0 + dx, corner.1 + dy)],
                        region_color(class).filled(),
                    )
                }))
            )?;
        }
        let (xs, ys) = chart.plotting_area().get_pixel_range();
        plot_err!(
            chart
                .configure_mesh()
                .disable_mesh()
                .x_desc("feature 1 (scaled)")
                .y_desc("feature 2 (scaled)")
                .label_style(("sans-serif", 15))
                .axis_desc_style(("sans-serif", 17))
                .draw()
        )?;
        let count = self.classes.iter().max().map_or(0, |m| m + 1);
        for class in 0..count {
            let color = class_color(class);
            let name = self
                .names
                .get(class)
                .cloned()
                .unwrap_or_else(|| format!("class {class}"));
            let points = self
                .points
                .iter()
                .zip(self.classes)
                .filter(|&(_, &c)| c == class)
                .map(|(&p, _)| p);
            plot_err!(chart.draw_series(points.map(move |p| Circle::new(
                p,
                4,
                ShapeStyle::from(color).filled().stroke_width(1)
            ))))?
            .label(name)
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, color.filled()));
        }
        plot_err!(
            chart
                .configure_series_labels()
                .label_font(("sans-serif", 16))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(180, 180, 180))
                .draw()
        )?;
        Ok((xs.start, ys.start, xs.end, ys.end))
    }
}

/// A confusion matrix as a heat map: rows are true classes, columns predictions,
/// colour the row-normalised fraction, each cell labelled with its count.
pub fn confusion_heatmap(stem: &Path, matrix: &[Vec<usize>], names: &[String]) -> Result<()> {
    let size = (160 + 56 * matrix.len() as u32).max(480);
    save_png_and_svg(
        stem,
        (size + 80, size),
        |root| draw_confusion(root, matrix, names),
        |root| draw_confusion(root, matrix, names),
    )
}

fn draw_confusion<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    matrix: &[Vec<usize>],
    names: &[String],
) -> Result<()> {
    let n = matrix.len().max(1);
    plot_err!(root.fill(&WHITE))?;
    let mut chart = plot_err!(
        ChartBuilder::on(root)
            .caption("Confusion matrix", ("sans-serif", 24))
            .margin(16)
            .x_label_area_size(56)
            .y_label_area_size(90)
            .build_cartesian_2d((0..n - 1).into_segmented(), (0..n - 1).into_segmented())
    )?;
    let name = |i: usize| names.get(i).cloned().unwrap_or_else(|| i.to_string());
    let x_label = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) if *i < n => name(*i),
        _ => String::new(),
    };
    // Row 0 is drawn at the top, so the y axis counts down.
    let y_label = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) if *i < n => name(n - 1 - *i),
        _ => String::new(),
    };
    plot_err!(
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("predicted class")
            .y_desc("true class")
            .x_labels(n)
            .y_labels(n)
            .x_label_formatter(&x_label)
            .y_label_formatter(&y_label)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 17))
            .draw()
    )?;
    for (row, counts) in matrix.iter().enumerate() {
        let total = counts.iter().sum::<usize>().max(1) as f64;
        for (col, &count) in counts.iter().enumerate() {
            let fraction = count as f64 / total;
            let shade = RGBColor(
                (247.0 - 239.0 * fraction) as u8,
                (251.0 - 203.0 * fraction) as u8,
                (255.0 - 148.0 * fraction) as u8,
            );
            // Row 0 at the top, as tables read.
            let y = n - 1 - row;
            let cell = [
                (SegmentValue::Exact(col), SegmentValue::Exact(y)),
                (SegmentValue::Exact(col + 1), SegmentValue::Exact(y + 1)),
            ];
            plot_err!(chart.draw_series(std::iter::once(Rectangle::new(cell, shade.filled()))))?;
            let text_color = if fraction > 0.5 { WHITE } else { BLACK };
            plot_err!(chart.draw_series(std::iter::once(Text::new(
                count.to_string(),
                (SegmentValue::CenterOf(col), SegmentValue::CenterOf(y)),
                ("sans-serif", 14).into_font().color(&text_color).pos(
                    plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Center,
                    )
                ),
            ))))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chainrule::nn::Module;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("chainrule-plot-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_training_svg_embeds_its_font_marks_the_best_epoch_and_goes_log_when_the_loss_spans_decades()
     {
        let dir = scratch("curves");
        // The validation loss falls from 3 to 0.004 and rises again after epoch 7.
        let validation = [3.0, 1.0, 0.3, 0.1, 0.03, 0.01, 0.004, 0.006, 0.009];
        let points: Vec<EpochPoint> = validation
            .iter()
            .enumerate()
            .map(|(i, &v)| EpochPoint {
                epoch: i + 1,
                train_loss: v * 0.9,
                train_accuracy: None,
                validation_loss: Some(v),
                validation_accuracy: None,
                lr: Some(0.1),
            })
            .collect();
        let stem = dir.join("training");
        training_curves(&stem, &points).unwrap();
        let svg = std::fs::read_to_string(stem.with_extension("svg")).unwrap();
        assert!(svg.contains("@font-face") && svg.contains("data:font/ttf;base64,"));
        assert!(
            !svg.contains("font-family=\"sans-serif\""),
            "every text in the embedded font"
        );
        assert!(svg.contains("loss (log scale)"));
        assert!(svg.contains("best epoch (7)"));
        assert!(svg.contains("learning rate"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_loss_within_one_decade_stays_on_a_linear_axis() {
        let dir = scratch("linear");
        let points: Vec<EpochPoint> = (1..=5)
            .map(|epoch| EpochPoint {
                epoch,
                train_loss: 1.0 / epoch as f64,
                train_accuracy: None,
                validation_loss: None,
                validation_accuracy: None,
                lr: Some(0.1),
            })
            .collect();
        let stem = dir.join("training");
        training_curves(&stem, &points).unwrap();
        let svg = std::fs::read_to_string(stem.with_extension("svg")).unwrap();
        assert!(
            !svg.contains("log scale") && !svg.contains("best epoch"),
            "no validation, no best"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_decision_boundary_svg_is_one_image_beneath_the_points_and_matches_the_png() {
        let dir = scratch("boundary");
        // One linear layer: class 1 where x₀ > 0, class 0 elsewhere.
        let mut model = Sequential::<f32>::from_json(
            r#"{"layers": [{"type": "linear", "in": 2, "out": 2}]}"#,
            0,
        )
        .unwrap();
        model.params_mut()[0].value = Tensor::from_vec(vec![-1.0, 0.0, 1.0, 0.0], &[2, 2]).unwrap();
        model.params_mut()[1].value = Tensor::zeros(&[2]);
        let x =
            Tensor::from_vec(vec![-1.0, -1.0, -0.5, 1.0, 0.5, -1.0, 1.0, 1.0], &[4, 2]).unwrap();
        let names = vec!["left".to_string(), "right".to_string()];
        let stem = dir.join("boundary");
        decision_boundary(&stem, &model, &x, &[0, 0, 1, 1], &names).unwrap();
        let svg = std::fs::read_to_string(stem.with_extension("svg")).unwrap();
        assert_eq!(svg.matches("<image").count(), 1);
        assert!(
            svg.matches("<rect").count() < 20,
            "not a rectangle per grid cell"
        );
        assert_eq!(
            svg.matches("<circle").count(),
            4 + 2,
            "the points and the legend's marks"
        );
        // The image comes before the points (beneath them).
        assert!(svg.find("<image").unwrap() < svg.find("<circle").unwrap());
        // Its left half is class 0's colour and its right half class 1's, as the
        // model predicts.
        let payload = svg.split("data:image/png;base64,").nth(1).unwrap();
        let png_bytes = base64::engine::general_purpose::STANDARD
            .decode(&payload[..payload.find('"').unwrap()])
            .unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut pixels).unwrap();
        let at = |column: usize, row: usize| {
            let i = (row * info.width as usize + column) * 3;
            RGBColor(pixels[i], pixels[i + 1], pixels[i + 2])
        };
        let (w, h) = (info.width as usize, info.height as usize);
        assert_eq!(at(2, h / 2), region_color(0));
        assert_eq!(at(w - 3, h / 2), region_color(1));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn training_curves_with_non_finite_and_huge_losses_are_drawn_and_end() {
        // Before: a run with skip_nonfinite on infinite data hung in plotters.
        let dir = std::env::temp_dir().join(format!("chainrule-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let point = |epoch, loss: f64, accuracy: f64| EpochPoint {
            epoch,
            train_loss: loss,
            train_accuracy: Some(accuracy),
            validation_loss: Some(-loss),
            validation_accuracy: Some(accuracy),
            lr: Some(loss),
        };
        let points = [
            point(1, f64::INFINITY, f64::NAN),
            point(2, f64::NAN, 0.5),
            point(3, f64::MAX, 0.6),
            point(4, 1.0, f64::INFINITY),
        ];
        // The drawing runs on its own thread, so that a hang fails the test (after a
        // minute) instead of stopping the whole suite.
        let (done, finished) = std::sync::mpsc::channel();
        let stem = dir.join("curves");
        std::thread::spawn(move || {
            done.send(training_curves(&stem, &points).map_err(|e| e.to_string()))
        });
        let result = finished
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("drawing ended");
        result.unwrap();
        assert!(dir.join("curves.png").is_file() && dir.join("curves.svg").is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
