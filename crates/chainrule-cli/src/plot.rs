//! Plots, as PNG and SVG, with an embedded font (DejaVu Sans) so they render the
//! same on a machine without fonts or external programs.

use anyhow::{Result, anyhow};
use chainrule::nn::Sequential;
use chainrule::train::predict;
use chainrule::{Tensor, io::write_atomic};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

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

/// Draws with `draw` into `<stem>.png` and `<stem>.svg`, each written atomically.
fn save_png_and_svg(
    stem: &Path,
    size: (u32, u32),
    draw_png: impl Fn(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()>,
    draw_svg: impl Fn(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<()>,
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
    write_atomic(&stem.with_extension("svg"), svg.as_bytes())?;
    Ok(())
}

/// One epoch's numbers as the plots need them.
#[derive(Debug, Clone)]
pub struct EpochPoint {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: Option<f64>,
    pub validation_loss: Option<f64>,
    pub validation_accuracy: Option<f64>,
}

macro_rules! plot_err {
    ($e:expr) => {
        $e.map_err(|e| anyhow!("plot: {e}"))
    };
}

/// A named line: its label, colour and (x, y) points.
type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

fn curves<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    y_label: &str,
    series: &[Series<'_>],
    y_range: std::ops::Range<f64>,
    last_epoch: f64,
    legend: SeriesLabelPosition,
) -> Result<()> {
    let mut chart = plot_err!(
        ChartBuilder::on(area)
            .caption(title, ("sans-serif", 24))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(1.0..last_epoch.max(2.0), y_range)
    )?;
    plot_err!(
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(y_label)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 17))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
    )?;
    for (name, color, points) in series {
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
            .position(legend)
            .draw()
    )?;
    Ok(())
}

/// Loss (and accuracy, for classification) per epoch, training and validation.
pub fn training_curves(stem: &Path, points: &[EpochPoint]) -> Result<()> {
    let classification = points.iter().any(|p| p.train_accuracy.is_some());
    let width = if classification { 1200 } else { 640 };
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
    let losses = series(&|p| Some(p.train_loss));
    let val_losses = series(&|p| p.validation_loss);
    let accs = series(&|p| p.train_accuracy.map(|a| 100.0 * a));
    let val_accs = series(&|p| p.validation_accuracy.map(|a| 100.0 * a));
    let max_loss = losses
        .iter()
        .chain(&val_losses)
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let min_acc = accs
        .iter()
        .chain(&val_accs)
        .map(|p| p.1)
        .fold(100.0, f64::min);
    plot_err!(root.fill(&WHITE))?;
    let panels = if classification {
        root.split_evenly((1, 2))
    } else {
        vec![root.clone()]
    };
    curves(
        &panels[0],
        "Loss",
        "loss",
        &[
            ("train", train_color, losses),
            ("validation", val_color, val_losses),
        ],
        // A finite top, however large the largest loss (1.05 × 1.7e308 is inf).
        0.0..(max_loss * 1.05).clamp(1e-6, f64::MAX),
        last,
        SeriesLabelPosition::UpperRight,
    )?;
    if classification {
        curves(
            &panels[1],
            "Accuracy",
            "accuracy (%)",
            &[
                ("train", train_color, accs),
                ("validation", val_color, val_accs),
            ],
            (min_acc - 5.0).clamp(0.0, 95.0)..100.5,
            last,
            SeriesLabelPosition::LowerRight,
        )?;
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
    save_png_and_svg(
        stem,
        (760, 700),
        |root| scene.draw(root),
        |root| scene.draw(root),
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

impl Boundary<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
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
        plot_err!(
            chart.draw_series(self.predicted.iter().enumerate().map(|(k, &class)| {
                let (i, j) = ((k % self.grid) as f64, (k / self.grid) as f64);
                let corner = (self.x.0 + i * dx, self.y.0 + j * dy);
                Rectangle::new(
                    [corner, (corner.0 + dx, corner.1 + dy)],
                    class_color(class).mix(0.25).filled(),
                )
            }))
        )?;
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
        Ok(())
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
