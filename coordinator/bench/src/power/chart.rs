//! The power bench's chart, as the article's figure 4: for each function,
//! median execution time (log scale, left) and x86 cost per 8M calls
//! (right) against memory size. SVG, drawn with plotters.

use plotters::prelude::*;

use super::summary::{FunctionFigures, MODEL_TARGET_USD};

const PANEL_WIDTH: u32 = 520;
const HEIGHT: u32 = 420;
const TIME_COLOUR: RGBColor = RGBColor(31, 119, 180);
const COST_COLOUR: RGBColor = RGBColor(214, 39, 40);
const TARGET_COLOUR: RGBColor = RGBColor(120, 120, 120);

/// One panel per function, side by side, as an SVG document.
pub fn svg(functions: &[FunctionFigures]) -> anyhow::Result<String> {
    let mut out = String::new();
    let width = PANEL_WIDTH * u32::try_from(functions.len().max(1))?;
    {
        let root = SVGBackend::with_string(&mut out, (width, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let panels = root.split_evenly((1, functions.len().max(1)));
        for (panel, function) in panels.iter().zip(functions) {
            draw_panel(panel, function)?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(out)
}

fn plot_error(error: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {error}")
}

fn draw_panel(
    panel: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    function: &FunctionFigures,
) -> anyhow::Result<()> {
    let sizes: Vec<_> = function.sizes.iter().filter(|s| s.calls > 0).collect();
    let max_memory = sizes.iter().map(|s| s.memory_mb).max().unwrap_or(3008);
    let (min_ms, max_ms) = sizes.iter().fold((f64::MAX, 0.0_f64), |(lo, hi), s| {
        (lo.min(s.p50_ms), hi.max(s.p50_ms))
    });
    let min_ms = if min_ms.is_finite() && min_ms > 0.0 {
        min_ms
    } else {
        1.0
    };
    let max_cost = sizes
        .iter()
        .map(|s| s.x86.per_8m_usd)
        .fold(0.0_f64, f64::max);
    let x_range = 0_u32..max_memory + max_memory / 20 + 1;

    let mut chart = ChartBuilder::on(panel)
        .caption(&function.function, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .right_y_label_area_size(60)
        .build_cartesian_2d(
            x_range.clone(),
            (min_ms / 1.5..max_ms.max(min_ms) * 1.5).log_scale(),
        )
        .map_err(plot_error)?
        .set_secondary_coord(x_range.clone(), 0.0..max_cost.max(MODEL_TARGET_USD) * 1.15);
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .y_labels(10)
        .x_desc("memory (MB)")
        .y_desc("p50 execution time (ms)")
        .y_label_formatter(&|ms| format!("{ms:.0}"))
        .draw()
        .map_err(plot_error)?;
    chart
        .configure_secondary_axes()
        .y_desc("x86 USD per 8M calls")
        .y_label_formatter(&|usd| format!("{usd:.2}"))
        .draw()
        .map_err(plot_error)?;

    let time: Vec<(u32, f64)> = sizes.iter().map(|s| (s.memory_mb, s.p50_ms)).collect();
    chart
        .draw_series(LineSeries::new(time.clone(), TIME_COLOUR.stroke_width(2)))
        .map_err(plot_error)?
        .label("execution time")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], TIME_COLOUR));
    chart
        .draw_series(
            time.iter()
                .map(|&point| Circle::new(point, 3, TIME_COLOUR.filled())),
        )
        .map_err(plot_error)?;
    let cost: Vec<(u32, f64)> = sizes
        .iter()
        .map(|s| (s.memory_mb, s.x86.per_8m_usd))
        .collect();
    chart
        .draw_secondary_series(LineSeries::new(cost.clone(), COST_COLOUR.stroke_width(2)))
        .map_err(plot_error)?
        .label("cost per 8M")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], COST_COLOUR));
    chart
        .draw_secondary_series(
            cost.iter()
                .map(|&point| Circle::new(point, 3, COST_COLOUR.filled())),
        )
        .map_err(plot_error)?;
    chart
        .draw_secondary_series(LineSeries::new(
            [x_range.start, x_range.end - 1].map(|mb| (mb, MODEL_TARGET_USD)),
            TARGET_COLOUR.stroke_width(1),
        ))
        .map_err(plot_error)?
        .label(format!("target ${MODEL_TARGET_USD:.2}"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], TARGET_COLOUR));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperMiddle)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    Ok(())
}
