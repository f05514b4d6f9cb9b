//! Drawing a [`Chart`]: its axes from the data (or named categories along x), lines and
//! dashed lines clipped to the frame, markers, bands, histograms, error bars and dashed
//! reference lines, with the legend beside the plot.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::backend::{DrawResult, Render, font};
use super::layout::{
    AXIS_LABEL_SIZE, LegendEntry, Swatch, TICK_SIZE, colour, draw_legend, draw_no_data,
    legend_width, under_title, widest,
};
use super::scale::{Extent, MAX_TICKS, Scale, usable};
use super::{Chart, Series, Style};

/// The visible part of the segment p–q, clipped in axis space (Liang–Barsky).
fn clip_segment(xs: &Scale, ys: &Scale, p: (f64, f64), q: (f64, f64)) -> Option<[(f64, f64); 2]> {
    let (x0, y0) = (xs.fraction(p.0), ys.fraction(p.1));
    let (x1, y1) = (xs.fraction(q.0), ys.fraction(q.1));
    let (dx, dy) = (x1 - x0, y1 - y0);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (denominator, numerator) in [(-dx, x0), (dx, 1.0 - x0), (-dy, y0), (dy, 1.0 - y0)] {
        if denominator == 0.0 {
            if numerator < 0.0 {
                return None;
            }
        } else {
            let t = numerator / denominator;
            if denominator < 0.0 {
                t0 = t0.max(t);
            } else {
                t1 = t1.min(t);
            }
        }
    }
    if t0.is_nan() || t1.is_nan() || t0 > t1 {
        return None;
    }
    let at = |t: f64| {
        (
            xs.inverse(
                xs.transform(xs.lo) + (x0 + t * dx) * (xs.transform(xs.hi) - xs.transform(xs.lo)),
            ),
            ys.inverse(
                ys.transform(ys.lo) + (y0 + t * dy) * (ys.transform(ys.hi) - ys.transform(ys.lo)),
            ),
        )
    };
    Some([at(t0), at(t1)])
}

/// The visible pieces of the line through `points` (points the axes cannot show break it).
fn clip_polyline(xs: &Scale, ys: &Scale, points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current: Vec<(f64, f64)> = Vec::new();
    let mut previous: Option<(f64, f64)> = None;
    for &p in points {
        if !xs.usable(p.0) || !ys.usable(p.1) {
            previous = None;
            if current.len() > 1 {
                runs.push(std::mem::take(&mut current));
            }
            current.clear();
            continue;
        }
        match previous {
            None => {
                if xs.contains(p.0) && ys.contains(p.1) {
                    current.push(p);
                }
                if points.len() == 1 && current.len() == 1 {
                    runs.push(std::mem::take(&mut current));
                }
            }
            Some(prev) => match clip_segment(xs, ys, prev, p) {
                Some([a, b]) => {
                    if current.last() != Some(&a) {
                        if current.len() > 1 {
                            runs.push(std::mem::take(&mut current));
                        }
                        current.clear();
                        current.push(a);
                    }
                    current.push(b);
                    if b != p {
                        runs.push(std::mem::take(&mut current));
                    }
                }
                None => {
                    if current.len() > 1 {
                        runs.push(std::mem::take(&mut current));
                    }
                    current.clear();
                }
            },
        }
        previous = Some(p);
    }
    if current.len() > 1 {
        runs.push(current);
    }
    runs
}

/// The common width of histogram bins centred at `centres`: the smallest gap between
/// neighbouring centres (1, or a tenth of the centre, for a single bin).
fn bin_width(centres: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = centres.iter().copied().filter(|c| c.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let width = sorted
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|&d| d > 0.0)
        .fold(f64::INFINITY, f64::min);
    if width.is_finite() {
        width
    } else {
        match sorted.first() {
            Some(&c) if c != 0.0 => 0.1 * c.abs(),
            _ => 1.0,
        }
    }
}

/// The usable points of a series with their error (0 when none is given or it is unusable).
fn points_with_errors(series: &Series) -> impl Iterator<Item = (f64, f64, f64)> + '_ {
    series.points.iter().enumerate().filter_map(|(i, &(x, y))| {
        if !x.is_finite() || !y.is_finite() {
            return None;
        }
        let e = series
            .errors
            .as_ref()
            .and_then(|errors| errors.get(i).copied())
            .filter(|e| e.is_finite())
            .map_or(0.0, f64::abs);
        Some((x, y, e))
    })
}

impl Chart {
    /// The axes: the requested ranges, or the data with margins.
    fn scales(&self) -> (Scale, Scale) {
        let mut x = Extent::new(self.x_log);
        let mut y = Extent::new(self.y_log);
        let mut bars_from_zero = false;
        for series in &self.series {
            let width = bin_width(&series.points.iter().map(|p| p.0).collect::<Vec<_>>());
            for (px, py, e) in points_with_errors(series) {
                if !usable(px, self.x_log) || !usable(py, self.y_log) {
                    continue;
                }
                if series.style == Style::Steps {
                    x.add(px - width / 2.0);
                    x.add(px + width / 2.0);
                    if !self.y_log {
                        y.add(0.0);
                        bars_from_zero = true;
                    }
                } else {
                    x.add(px);
                }
                y.add(py);
                y.add(py + e);
                y.add(py - e);
            }
        }
        for marker in &self.vertical {
            x.add(marker.value);
        }
        for marker in &self.horizontal {
            y.add(marker.value);
        }
        let keep_zero = bars_from_zero && y.lo >= 0.0;
        (
            x.scale(self.x_range, 0.03, false),
            y.scale(self.y_range, 0.06, keep_zero),
        )
    }
}

impl Chart {
    /// The colour of each reference line, vertical ones first: each labelled line takes the
    /// next free colour, an unlabelled one continues the one before it (the other end of a
    /// window, say); a marker's own colour wins.
    fn reference_colours(&self) -> Vec<RGBColor> {
        let mut next = self.series.len();
        self.vertical
            .iter()
            .chain(&self.horizontal)
            .enumerate()
            .map(|(k, marker)| {
                if k > 0 && !marker.label.trim().is_empty() {
                    next += 1;
                }
                colour(marker.colour.unwrap_or(next))
            })
            .collect()
    }

    /// The legend: every labelled series with a point the axes show, and every labelled
    /// reference line inside the range.
    fn legend(&self, xs: &Scale, ys: &Scale) -> Vec<LegendEntry<'_>> {
        let mut legend = Vec::new();
        for (index, series) in self.series.iter().enumerate() {
            let visible = points_with_errors(series).any(|(x, y, _)| xs.usable(x) && ys.usable(y));
            if visible && !series.label.trim().is_empty() {
                legend.push(LegendEntry {
                    label: series.label.as_str(),
                    colour: colour(series.colour.unwrap_or(index)),
                    swatch: match series.style {
                        Style::Line => Swatch::Line,
                        Style::Dashed => Swatch::Dashed,
                        Style::Markers => Swatch::Marker,
                        Style::Steps | Style::Band => Swatch::Filled,
                    },
                });
            }
        }
        let colours = self.reference_colours();
        let references = self
            .vertical
            .iter()
            .map(|m| (m, xs))
            .chain(self.horizontal.iter().map(|m| (m, ys)));
        for ((marker, scale), colour) in references.zip(colours) {
            if scale.contains(marker.value) && !marker.label.trim().is_empty() {
                legend.push(LegendEntry {
                    label: marker.label.as_str(),
                    colour,
                    swatch: Swatch::Dashed,
                });
            }
        }
        legend
    }
}

impl Render for Chart {
    fn render<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let (mut xs, ys) = self.scales();
        let categories = &self.x_categories;
        if !categories.is_empty() {
            xs = Scale {
                lo: -0.5,
                hi: categories.len() as f64 - 0.5,
                log: false,
                integer: true,
            };
        }
        xs.integer |= self.x_integer && !xs.log;
        let area = under_title(root, &self.title)?;

        let tick_style = font(TICK_SIZE);
        let y_tick_width = widest(
            &area,
            ys.major_ticks(MAX_TICKS).into_iter().map(|v| ys.label(v)),
            &tick_style,
        )?;
        let y_desc = if self.y_label.trim().is_empty() {
            0
        } else {
            AXIS_LABEL_SIZE as u32 + 14
        };
        let x_desc = if self.x_label.trim().is_empty() {
            0
        } else {
            AXIS_LABEL_SIZE as u32 + 12
        };
        let legend = self.legend(&xs, &ys);
        // The legend sits to the right of the plot, clear of the data.
        let legend_w = if legend.is_empty() {
            0
        } else {
            legend_width(&area, &legend)?
        };
        let x_ticks = if categories.is_empty() {
            MAX_TICKS
        } else {
            categories.len() + 1
        };

        let mut chart = ChartBuilder::on(&area)
            .margin_left(12)
            .margin_right(if legend.is_empty() { 30 } else { legend_w + 24 })
            .margin_bottom(10)
            .margin_top(6)
            .x_label_area_size(TICK_SIZE as u32 + 18 + x_desc)
            .y_label_area_size(y_tick_width + 16 + y_desc)
            .build_cartesian_2d(xs, ys)?;
        let x_format = |v: &f64| {
            if categories.is_empty() {
                xs.label(*v)
            } else {
                let i = v.round();
                if (v - i).abs() < 1e-6 && i >= 0.0 {
                    categories.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            }
        };
        let y_format = |v: &f64| ys.label(*v);
        let mut mesh = chart.configure_mesh();
        mesh.x_labels(x_ticks)
            .y_labels(MAX_TICKS)
            .x_label_formatter(&x_format)
            .y_label_formatter(&y_format)
            .label_style(tick_style.clone())
            .axis_desc_style(font(AXIS_LABEL_SIZE))
            .bold_line_style(RGBColor(205, 205, 205).stroke_width(1))
            .light_line_style(RGBColor(238, 238, 238).stroke_width(1))
            .axis_style(BLACK.stroke_width(1));
        if !self.x_label.trim().is_empty() {
            mesh.x_desc(self.x_label.as_str());
        }
        if !self.y_label.trim().is_empty() {
            mesh.y_desc(self.y_label.as_str());
        }
        mesh.draw()?;

        let mut drew_any = false;
        let histograms = self
            .series
            .iter()
            .filter(|s| s.style == Style::Steps)
            .count();
        // Overlaid histograms are told apart by their outlines; one alone is filled.
        let fill = if histograms > 1 { 0.06 } else { 0.3 };
        for (index, series) in self.series.iter().enumerate() {
            let colour = colour(series.colour.unwrap_or(index));
            let points: Vec<(f64, f64, f64)> = points_with_errors(series)
                .filter(|&(x, y, _)| xs.usable(x) && ys.usable(y))
                .collect();
            if points.is_empty() {
                continue;
            }
            match series.style {
                Style::Line | Style::Dashed | Style::Band => {
                    if series.style == Style::Band {
                        drew_any |= draw_band(&mut chart, &xs, &ys, &points, colour)?;
                    }
                    let mut ordered: Vec<(f64, f64)> = Vec::with_capacity(series.points.len());
                    // Points the axes cannot show break the line.
                    for &(x, y) in &series.points {
                        ordered.push(if x.is_finite() && y.is_finite() {
                            (x, y)
                        } else {
                            (f64::NAN, f64::NAN)
                        });
                    }
                    for run in clip_polyline(&xs, &ys, &ordered) {
                        drew_any = true;
                        if series.style == Style::Dashed {
                            chart.draw_series(DashedLineSeries::new(
                                run,
                                10,
                                6,
                                colour.stroke_width(2),
                            ))?;
                        } else {
                            chart.draw_series(LineSeries::new(run, colour.stroke_width(2)))?;
                        }
                    }
                }
                Style::Markers => {
                    for &(x, y, _) in &points {
                        if xs.contains(x) && ys.contains(y) {
                            drew_any = true;
                            chart.draw_series(std::iter::once(Circle::new(
                                (x, y),
                                5,
                                colour.filled(),
                            )))?;
                        }
                    }
                }
                Style::Steps => {
                    let width = bin_width(&points.iter().map(|p| p.0).collect::<Vec<_>>());
                    drew_any |= draw_steps(&mut chart, &xs, &ys, &points, width, colour, fill)?;
                }
            }
            if series.style == Style::Band {
                continue;
            }
            for &(x, y, e) in &points {
                if e > 0.0
                    && xs.contains(x)
                    && draw_error_bar(&mut chart, &ys, x, y - e, y + e, colour)?
                {
                    drew_any = true;
                }
            }
        }

        let references = self
            .vertical
            .iter()
            .map(|m| (m, true))
            .chain(self.horizontal.iter().map(|m| (m, false)));
        for ((marker, vertical), colour) in references.zip(self.reference_colours()) {
            let (scale, ends) = if vertical {
                (&xs, [(marker.value, ys.lo), (marker.value, ys.hi)])
            } else {
                (&ys, [(xs.lo, marker.value), (xs.hi, marker.value)])
            };
            if !scale.contains(marker.value) {
                continue;
            }
            drew_any = true;
            chart.draw_series(DashedLineSeries::new(ends, 9, 6, colour.stroke_width(2)))?;
        }

        let plot = chart.plotting_area().strip_coord_spec();
        if !drew_any {
            return draw_no_data(&plot);
        }
        let (plot_x, plot_y) = plot.get_base_pixel();
        let (area_x, area_y) = area.get_base_pixel();
        let (plot_w, _) = plot.dim_in_pixel();
        let left = plot_x - area_x + plot_w as i32 + 16;
        draw_legend(&area, &legend, (left, plot_y - area_y))
    }
}

/// Draws a band from y − e to y + e through the points (sorted by x), translucent; whether
/// any of it was visible.
fn draw_band<DB: DrawingBackend>(
    chart: &mut Cartesian<'_, DB>,
    xs: &Scale,
    ys: &Scale,
    points: &[(f64, f64, f64)],
    colour: RGBColor,
) -> std::result::Result<bool, DrawingAreaErrorKind<DB::ErrorType>> {
    let mut sorted: Vec<(f64, f64, f64)> = points
        .iter()
        .copied()
        .filter(|p| xs.contains(p.0))
        .collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    if sorted.len() < 2 {
        return Ok(false);
    }
    let upper = sorted.iter().map(|&(x, y, e)| (x, ys.clamp(y + e)));
    let lower = sorted.iter().rev().map(|&(x, y, e)| (x, ys.clamp(y - e)));
    let outline: Vec<(f64, f64)> = upper.chain(lower).collect();
    chart.draw_series(std::iter::once(Polygon::new(
        outline,
        colour.mix(0.18).filled(),
    )))?;
    Ok(true)
}

pub(super) type Cartesian<'a, DB> = ChartContext<'a, DB, Cartesian2d<Scale, Scale>>;

/// Draws a histogram (filled bins and their outline); whether anything was visible.
fn draw_steps<DB: DrawingBackend>(
    chart: &mut Cartesian<'_, DB>,
    xs: &Scale,
    ys: &Scale,
    points: &[(f64, f64, f64)],
    width: f64,
    colour: RGBColor,
    fill: f64,
) -> std::result::Result<bool, DrawingAreaErrorKind<DB::ErrorType>> {
    let base = if ys.log { ys.lo } else { ys.clamp(0.0) };
    let mut bins: Vec<(f64, f64, f64)> = points
        .iter()
        .map(|&(c, h, _)| (c - width / 2.0, c + width / 2.0, h))
        .collect();
    bins.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut outline: Vec<(f64, f64)> = Vec::new();
    let mut outlines: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut drew = false;
    for &(left, right, height) in &bins {
        let (l, r) = (xs.clamp(left), xs.clamp(right));
        if r <= l || !xs.usable(right) {
            continue;
        }
        let h = ys.clamp(height);
        if let Some(&(last_x, _)) = outline.last()
            && (l - last_x).abs() > 1e-9 * width.abs().max(f64::MIN_POSITIVE)
        {
            outline.push((last_x, base));
            outlines.push(std::mem::take(&mut outline));
        }
        if outline.is_empty() {
            outline.push((l, base));
        }
        outline.push((l, h));
        outline.push((r, h));
        chart.draw_series(std::iter::once(Rectangle::new(
            [(l, base), (r, h)],
            colour.mix(fill).filled(),
        )))?;
        drew = true;
    }
    if let Some(&(last_x, _)) = outline.last() {
        outline.push((last_x, base));
        outlines.push(outline);
    }
    for run in outlines {
        chart.draw_series(LineSeries::new(run, colour.stroke_width(2)))?;
    }
    Ok(drew)
}

/// Draws a vertical error bar from `lo` to `hi` at `x`, with caps on the ends inside the
/// range; whether any of it was visible.
pub(super) fn draw_error_bar<DB: DrawingBackend>(
    chart: &mut Cartesian<'_, DB>,
    ys: &Scale,
    x: f64,
    lo: f64,
    hi: f64,
    colour: RGBColor,
) -> std::result::Result<bool, DrawingAreaErrorKind<DB::ErrorType>> {
    if !ys.usable(hi) || hi < ys.lo || (ys.usable(lo) && lo > ys.hi) {
        return Ok(false);
    }
    let (a, b) = (ys.clamp(lo), ys.clamp(hi));
    let style = colour.stroke_width(2);
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(x, a), (x, b)],
        style,
    )))?;
    for (end, clamped) in [(lo, a), (hi, b)] {
        if ys.usable(end) && end == clamped {
            chart.draw_series(std::iter::once(
                EmptyElement::at((x, end)) + PathElement::new(vec![(-6, 0), (6, 0)], style),
            ))?;
        }
    }
    Ok(true)
}
