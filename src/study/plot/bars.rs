//! Drawing a [`BarChart`]: one bar per named value with its error bar and its value printed
//! above it, category labels upright, smaller or rotated (and shortened) as room allows, and an
//! optional note under the plot.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::BarChart;
use super::backend::{DrawResult, Render, font};
use super::chart::draw_error_bar;
use super::layout::{
    AXIS_LABEL_SIZE, SMALL_SIZE, TICK_SIZE, colour, draw_no_data, under_title, widest,
};
use super::scale::{Extent, MAX_TICKS, Scale, format_fixed, usable};

impl Render for BarChart {
    fn render<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let area = under_title(root, &self.title)?;
        let area = match self
            .note
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            Some(note) => {
                let (h, w) = (area.dim_in_pixel().1, area.dim_in_pixel().0);
                let (upper, lower) = area.split_vertically(h as i32 - (SMALL_SIZE as i32 + 14));
                lower.draw(&Text::new(
                    note,
                    (w as i32 / 2, (SMALL_SIZE as i32 + 14) / 2),
                    font(SMALL_SIZE)
                        .color(&RGBColor(70, 70, 70))
                        .pos(Pos::new(HPos::Center, VPos::Center)),
                ))?;
                upper
            }
            None => area,
        };

        let log = self.y_log;
        let mut extent = Extent::new(log);
        if !log {
            extent.add(0.0);
        }
        let mut any = false;
        for bar in &self.bars {
            if !usable(bar.value, log) {
                continue;
            }
            any = true;
            let e = bar.err.filter(|e| e.is_finite()).map_or(0.0, f64::abs);
            extent.add(bar.value);
            extent.add(bar.value + e);
            extent.add(bar.value - e);
        }
        // Room above the bars for their values.
        let mut ys = extent.scale(None, 0.04, true);
        if any {
            let (a, b) = (ys.transform(ys.lo), ys.transform(ys.hi));
            ys.hi = ys.inverse(b + 0.1 * (b - a));
        }
        let n = self.bars.len();
        let xs = Scale {
            lo: 0.0,
            hi: n.max(1) as f64,
            log: false,
            integer: false,
        };

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
        let y_area = y_tick_width + 16 + y_desc;

        // Category labels: upright at the tick size if they fit, smaller, or else rotated.
        let slot = (area.dim_in_pixel().0 as f64 - y_area as f64 - 42.0) / n.max(1) as f64;
        let labels: Vec<String> = self.bars.iter().map(|b| b.label.clone()).collect();
        let mut label_size = TICK_SIZE;
        let mut rotated = false;
        loop {
            let w = widest(&area, labels.iter().cloned(), &font(label_size))? as f64;
            if w <= 0.92 * slot {
                break;
            }
            if label_size > SMALL_SIZE {
                label_size = SMALL_SIZE;
                continue;
            }
            rotated = true;
            break;
        }
        let labels: Vec<String> = if rotated {
            let style = font(label_size);
            let mut shortened = Vec::with_capacity(labels.len());
            for label in labels {
                shortened.push(shorten_to_width(&area, label, MAX_ROTATED_LABEL, &style)?);
            }
            shortened
        } else {
            labels
        };
        let label_height = if rotated {
            widest(&area, labels.iter().cloned(), &font(label_size))? + 14
        } else {
            label_size as u32 + 16
        };

        let mut chart = ChartBuilder::on(&area)
            .margin_left(12)
            .margin_right(30)
            .margin_bottom(10)
            .margin_top(6)
            .x_label_area_size(label_height)
            .y_label_area_size(y_area)
            .build_cartesian_2d(xs, ys)?;
        let y_format = |v: &f64| ys.label(*v);
        let mut mesh = chart.configure_mesh();
        mesh.x_labels(0)
            .disable_x_mesh()
            .y_labels(MAX_TICKS)
            .y_label_formatter(&y_format)
            .label_style(tick_style.clone())
            .axis_desc_style(font(AXIS_LABEL_SIZE))
            .bold_line_style(RGBColor(205, 205, 205).stroke_width(1))
            .light_line_style(RGBColor(238, 238, 238).stroke_width(1))
            .axis_style(BLACK.stroke_width(1));
        if !self.y_label.trim().is_empty() {
            mesh.y_desc(self.y_label.as_str());
        }
        mesh.draw()?;

        let base = if log { ys.lo } else { ys.clamp(0.0) };
        let value_style = font(SMALL_SIZE + 1.0);
        for (i, (bar, label)) in self.bars.iter().zip(&labels).enumerate() {
            let centre = i as f64 + 0.5;
            let colour = colour(i);
            // The category under the bar, in backend pixels.
            let (px, py) = chart.backend_coord(&(centre, ys.lo));
            if rotated {
                root.draw(&Text::new(
                    label.as_str(),
                    (px, py + 8),
                    font(label_size)
                        .transform(FontTransform::Rotate270)
                        .pos(Pos::new(HPos::Right, VPos::Center)),
                ))?;
            } else {
                root.draw(&Text::new(
                    label.as_str(),
                    (px, py + 8),
                    font(label_size).pos(Pos::new(HPos::Center, VPos::Top)),
                ))?;
            }
            if !usable(bar.value, log) {
                let (bx, by) = chart.backend_coord(&(centre, base));
                root.draw(&Text::new(
                    if bar.value.is_finite() {
                        "not shown"
                    } else {
                        "n/a"
                    },
                    (bx, by - 6),
                    value_style.pos(Pos::new(HPos::Center, VPos::Bottom)),
                ))?;
                continue;
            }
            let top = ys.clamp(bar.value);
            chart.draw_series(std::iter::once(Rectangle::new(
                [(centre - 0.3, base), (centre + 0.3, top)],
                colour.mix(0.75).filled(),
            )))?;
            chart.draw_series(std::iter::once(Rectangle::new(
                [(centre - 0.3, base), (centre + 0.3, top)],
                colour.stroke_width(1),
            )))?;
            let e = bar.err.filter(|e| e.is_finite()).map_or(0.0, f64::abs);
            if e > 0.0 {
                draw_error_bar(
                    &mut chart,
                    &ys,
                    centre,
                    bar.value - e,
                    bar.value + e,
                    RGBColor(0, 0, 0),
                )?;
            }
            let text = format_fixed(
                bar.value,
                match self.value_digits {
                    0 => 2,
                    d => d,
                },
            );
            if bar.value >= 0.0 {
                let (bx, by) = chart.backend_coord(&(centre, ys.clamp(bar.value + e)));
                root.draw(&Text::new(
                    text,
                    (bx, by - 6),
                    value_style.pos(Pos::new(HPos::Center, VPos::Bottom)),
                ))?;
            } else {
                let (bx, by) = chart.backend_coord(&(centre, ys.clamp(bar.value - e)));
                root.draw(&Text::new(
                    text,
                    (bx, by + 6),
                    value_style.pos(Pos::new(HPos::Center, VPos::Top)),
                ))?;
            }
        }
        if !any {
            return draw_no_data(&chart.plotting_area().strip_coord_spec());
        }
        Ok(())
    }
}

/// The longest rotated category label, in pixels.
const MAX_ROTATED_LABEL: u32 = 190;

/// `text` cut to at most `max` pixels wide, ending in "…" when cut.
fn shorten_to_width<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: String,
    max: u32,
    style: &TextStyle<'_>,
) -> std::result::Result<String, DrawingAreaErrorKind<DB::ErrorType>> {
    if area.estimate_text_size(&text, style)?.0 <= max {
        return Ok(text);
    }
    let mut chars: Vec<char> = text.chars().collect();
    while !chars.is_empty() {
        chars.pop();
        let cut: String = chars.iter().chain(std::iter::once(&'…')).collect();
        if area.estimate_text_size(&cut, style)?.0 <= max {
            return Ok(cut);
        }
    }
    Ok(String::new())
}
