//! The loss and AUC chart: a PNG with the training loss (mean per stretch of about 1/50
//! epoch) on the left and both AUCs per epoch (epoch 0: the initial vectors) on the right.
//!
//! Drawn with plotters' bitmap backend; text uses a small subset of DejaVu Sans embedded
//! in the binary (`assets/DejaVuSans-subset.ttf`, license beside it), so the chart looks
//! the same everywhere and needs no system font.

use std::ops::Range;
use std::path::Path;
use std::sync::Once;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::error::Error;
use crate::train::History;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");
const FAMILY: &str = "sans-serif";

fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if register_font(FAMILY, FontStyle::Normal, FONT).is_err() {
            panic!("the embedded font is a valid TrueType font");
        }
    });
}

/// Draws `history` into the PNG file `path` (`width × height` pixels). `title` heads it.
///
/// # Errors
///
/// [`Error::Plot`] when the history has no epoch or the file cannot be written.
pub fn plot_history(
    history: &History,
    title: &str,
    path: &Path,
    (width, height): (u32, u32),
) -> Result<(), Error> {
    draw(history, title, path, (width, height)).map_err(|reason| Error::Plot {
        path: path.to_path_buf(),
        reason,
    })
}

fn draw(
    history: &History,
    title: &str,
    path: &Path,
    (width, height): (u32, u32),
) -> Result<(), String> {
    if history.epochs.is_empty() {
        return Err("no epoch to draw".into());
    }
    register();
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let epochs = history.epochs.len() as f64;
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(title, (FAMILY, 22).into_font())
        .map_err(|e| err(&e))?;
    let (left, right) = root.split_horizontally(width / 2);

    // Loss.
    let losses = history.loss_curve.iter().map(|p| p.1);
    let (low, high) = losses.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
        (l.min(v), h.max(v))
    });
    let pad = ((high - low) * 0.05).max(1e-3);
    let mut chart = panel(
        &left,
        "skip-gram loss (mean per 1/50 epoch)",
        "loss",
        0.0..epochs,
        (low - pad)..(high + pad),
        history.epochs.len(),
    )?;
    chart
        .draw_series(LineSeries::new(
            history.loss_curve.iter().copied(),
            BLUE.stroke_width(2),
        ))
        .map_err(|e| err(&e))?;

    // AUCs.
    let mut direct: Vec<(f64, f64)> = Vec::new();
    let mut grandparent: Vec<(f64, f64)> = Vec::new();
    if let Some((d, g)) = history.initial_aucs {
        direct.push((0.0, d));
        grandparent.push((0.0, g));
    }
    for e in &history.epochs {
        direct.push((e.epoch as f64, e.direct_auc));
        grandparent.push((e.epoch as f64, e.grandparent_auc));
    }
    let lowest = direct
        .iter()
        .chain(&grandparent)
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::min);
    let floor = ((lowest - 0.05) * 10.0).floor() / 10.0;
    let first = history.epochs[0].epoch as f64 - 1.0;
    let first = if history.initial_aucs.is_some() {
        0.0
    } else {
        first
    };
    let mut chart = panel(
        &right,
        "ROC AUC, cosine of input vectors",
        "ROC AUC",
        first..epochs,
        floor.max(0.0)..1.0,
        history.epochs.len(),
    )?;
    for (points, color, label) in [
        (&direct, BLUE, "direct hypernym pairs"),
        (&grandparent, RED, "grandparent pairs"),
    ] {
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// One half of the figure, in its common style: `caption` above, epochs along `x`, `y_desc`
/// along `y`, axes and labels drawn.
fn panel<'a, 'p>(
    area: &'a DrawingArea<BitMapBackend<'p>, Shift>,
    caption: &str,
    y_desc: &str,
    x: Range<f64>,
    y: Range<f64>,
    epochs: usize,
) -> Result<ChartContext<'a, BitMapBackend<'p>, Cartesian2d<RangedCoordf64, RangedCoordf64>>, String>
{
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FAMILY, 17))
        .margin(14)
        .x_label_area_size(42)
        .y_label_area_size(58)
        .build_cartesian_2d(x, y)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_desc)
        .x_labels(x_labels(epochs))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 15))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(chart)
}

/// One label per epoch up to 10 epochs, then plotters' choice.
fn x_labels(epochs: usize) -> usize {
    if epochs <= 10 {
        epochs + 1
    } else {
        10
    }
}
