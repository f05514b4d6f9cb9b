//! The look and the geometry of a figure: text sizes, the colour palette, the title above the
//! plot, the "no data" notice, text widths, and the legend (drawn beside the plot).

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::backend::{DrawResult, font};

// Text sizes, in pixels per em.
const TITLE_SIZE: f64 = 28.0;
pub(super) const AXIS_LABEL_SIZE: f64 = 22.0;
pub(super) const TICK_SIZE: f64 = 18.0;
const LEGEND_SIZE: f64 = 16.0;
pub(super) const SMALL_SIZE: f64 = 15.0;

/// The Okabe–Ito colours (told apart with the common colour-vision deficiencies), yellow last
/// as it is faint on white.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
];

/// The palette colour of `index` (the palette repeats).
pub(super) fn colour(index: usize) -> RGBColor {
    PALETTE[index % PALETTE.len()]
}

// Legend

/// How a legend entry shows what it names.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Swatch {
    Line,
    Dashed,
    Marker,
    Filled,
}

/// One row of the legend.
pub(super) struct LegendEntry<'a> {
    pub(super) label: &'a str,
    pub(super) colour: RGBColor,
    pub(super) swatch: Swatch,
}

const LEGEND_PAD: i32 = 10;
const SWATCH_LEN: i32 = 36;
const LEGEND_GAP: i32 = 10;
const LEGEND_ROW: i32 = 26;

/// The width in pixels of the legend of `entries`.
pub(super) fn legend_width<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry<'_>],
) -> std::result::Result<i32, DrawingAreaErrorKind<DB::ErrorType>> {
    let style = font(LEGEND_SIZE);
    let mut text_width = 0;
    for entry in entries {
        text_width = text_width.max(area.estimate_text_size(entry.label, &style)?.0 as i32);
    }
    Ok(2 * LEGEND_PAD + SWATCH_LEN + LEGEND_GAP + text_width)
}

/// Draws the legend into `area` with its top left corner at (`x`, `y`): outside the plot,
/// so that it hides no data.
pub(super) fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry<'_>],
    (x, y): (i32, i32),
) -> DrawResult<DB> {
    if entries.is_empty() {
        return Ok(());
    }
    let style = font(LEGEND_SIZE);
    let width = legend_width(area, entries)?;
    let height = 2 * LEGEND_PAD + LEGEND_ROW * entries.len() as i32 - 6;
    area.draw(&Rectangle::new(
        [(x, y), (x + width, y + height)],
        RGBColor(120, 120, 120).stroke_width(1),
    ))?;
    for (row, entry) in entries.iter().enumerate() {
        let cy = y + LEGEND_PAD + LEGEND_ROW * row as i32 + (LEGEND_ROW - 6) / 2;
        let (x0, x1) = (x + LEGEND_PAD, x + LEGEND_PAD + SWATCH_LEN);
        let line = entry.colour.stroke_width(2);
        match entry.swatch {
            Swatch::Line => area.draw(&PathElement::new(vec![(x0, cy), (x1, cy)], line))?,
            Swatch::Dashed => area.draw(&DashedPathElement::new(
                vec![(x0, cy), (x1, cy)],
                8,
                5,
                line,
            ))?,
            Swatch::Marker => {
                area.draw(&PathElement::new(
                    vec![(x0, cy), (x1, cy)],
                    entry.colour.stroke_width(1),
                ))?;
                area.draw(&Circle::new(((x0 + x1) / 2, cy), 5, entry.colour.filled()))?;
            }
            Swatch::Filled => {
                area.draw(&Rectangle::new(
                    [(x0, cy - 7), (x1, cy + 7)],
                    entry.colour.mix(0.35).filled(),
                ))?;
                area.draw(&Rectangle::new([(x0, cy - 7), (x1, cy + 7)], line))?;
            }
        }
        area.draw(&Text::new(
            entry.label,
            (x1 + LEGEND_GAP, cy),
            style.pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
    }
    Ok(())
}

/// Draws "no data" in the middle of `area`.
pub(super) fn draw_no_data<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
    let (w, h) = area.dim_in_pixel();
    area.draw(&Text::new(
        "no data",
        (w as i32 / 2, h as i32 / 2),
        font(AXIS_LABEL_SIZE)
            .color(&RGBColor(110, 110, 110))
            .pos(Pos::new(HPos::Center, VPos::Center)),
    ))
}

/// Width in pixels of the widest text.
pub(super) fn widest<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    texts: impl IntoIterator<Item = String>,
    style: &TextStyle<'_>,
) -> std::result::Result<u32, DrawingAreaErrorKind<DB::ErrorType>> {
    let mut width = 0;
    for text in texts {
        width = width.max(area.estimate_text_size(&text, style)?.0);
    }
    Ok(width)
}

/// The area under the title (all of `root` when there is none).
pub(super) fn under_title<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
) -> std::result::Result<DrawingArea<DB, Shift>, DrawingAreaErrorKind<DB::ErrorType>> {
    if title.trim().is_empty() {
        let (_, below) = root.split_vertically(12);
        return Ok(below);
    }
    let (top, below) = root.split_vertically(TITLE_SIZE as i32 + 22);
    let (w, h) = top.dim_in_pixel();
    top.draw(&Text::new(
        title,
        (w as i32 / 2, h as i32 / 2 + 2),
        font(TITLE_SIZE).pos(Pos::new(HPos::Center, VPos::Center)),
    ))?;
    Ok(below)
}

// ---------------------------------------------------------------------------------------------
// Line charts
