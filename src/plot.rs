//! Charts for study reports, written as a PNG (1000×640 px) and an SVG side by side.
//!
//! [`draw_chart`] draws lines, dashed lines, markers with error bars and histograms on linear
//! or logarithmic axes, with dashed reference lines; [`draw_bars`] draws named values as bars
//! with error bars. Text uses the DejaVu Sans font shipped with the crate (registered once as
//! `sans-serif`), so the pictures do not depend on the fonts of the machine. Input is never
//! refused: non-finite points, and non-positive values on a logarithmic axis, are left out,
//! and a chart with nothing to draw shows an empty frame saying "no data".

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, KeyPointWeight, Ranged};
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::{Error, Result};

/// How one series is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Style {
    /// A solid line through the points.
    Line,
    /// A dashed line through the points.
    Dashed,
    /// A filled circle at each point.
    Markers,
    /// A histogram: the points are (bin centre, height) of bins of equal width, drawn as
    /// filled bars with their outline.
    Steps,
}

/// One series of a [`Chart`].
#[derive(Clone, Debug)]
pub struct Series {
    /// The legend entry (none when empty).
    pub label: String,
    /// The (x, y) points.
    pub points: Vec<(f64, f64)>,
    /// Vertical error bars (one standard error per point, drawn as y ± error with caps).
    pub errors: Option<Vec<f64>>,
    /// How the points are drawn.
    pub style: Style,
    /// The palette colour (an index, e.g. one per sampler so that its data and its fit
    /// match); `None`: the series' position.
    pub colour: Option<usize>,
}

/// A dashed reference line at a fixed x ([`Chart::vertical`]) or y ([`Chart::horizontal`]).
/// An unlabelled line takes the colour of the one before it (the other end of a window, say).
#[derive(Clone, Debug)]
pub struct Marker {
    /// Where the line is drawn.
    pub value: f64,
    /// The legend entry (none when empty).
    pub label: String,
    /// The palette colour (an index); `None`: the next free colour as described above.
    pub colour: Option<usize>,
}

/// A chart of series on linear or logarithmic axes.
#[derive(Clone, Debug, Default)]
pub struct Chart {
    /// Drawn above the plot.
    pub title: String,
    /// The x axis description.
    pub x_label: String,
    /// The y axis description.
    pub y_label: String,
    /// What is drawn, in order (later series on top).
    pub series: Vec<Series>,
    /// A logarithmic x axis.
    pub x_log: bool,
    /// A logarithmic y axis.
    pub y_log: bool,
    /// Dashed vertical reference lines, with their labels in the legend.
    pub vertical: Vec<Marker>,
    /// Dashed horizontal reference lines, with their labels in the legend.
    pub horizontal: Vec<Marker>,
    /// The x range shown; `None` (or an unusable range) takes it from the data, error bars and
    /// reference lines, with margins.
    pub x_range: Option<(f64, f64)>,
    /// The y range shown; `None` (or an unusable range) takes it from the data, error bars and
    /// reference lines, with margins.
    pub y_range: Option<(f64, f64)>,
}

/// One bar of a [`BarChart`].
#[derive(Clone, Debug)]
pub struct Bar {
    /// The category, written under the bar.
    pub label: String,
    /// The bar's height.
    pub value: f64,
    /// An error bar (± err) on top of the bar.
    pub err: Option<f64>,
}

/// Named values drawn as bars, each with its value printed above it.
#[derive(Clone, Debug, Default)]
pub struct BarChart {
    /// Drawn above the plot.
    pub title: String,
    /// The y axis description.
    pub y_label: String,
    /// The bars, left to right.
    pub bars: Vec<Bar>,
    /// A logarithmic y axis (bars with non-positive values are left out).
    pub y_log: bool,
    /// One line of small text under the plot.
    pub note: Option<String>,
}

/// Draws `chart` to `stem` + ".png" (1000×640 px) and `stem` + ".svg", each written
/// atomically; returns the two paths.
pub fn draw_chart(chart: &Chart, stem: &Path) -> Result<[PathBuf; 2]> {
    write_both(chart, stem)
}

/// Draws `chart` to `stem` + ".png" (1000×640 px) and `stem` + ".svg", each written
/// atomically; returns the two paths.
pub fn draw_bars(chart: &BarChart, stem: &Path) -> Result<[PathBuf; 2]> {
    write_both(chart, stem)
}

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 640;
const FONT: &str = "sans-serif";
const TITLE_SIZE: f64 = 28.0;
const AXIS_LABEL_SIZE: f64 = 22.0;
const TICK_SIZE: f64 = 18.0;
const LEGEND_SIZE: f64 = 18.0;
const SMALL_SIZE: f64 = 15.0;
const MAX_TICKS: usize = 8;

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

fn colour(index: usize) -> RGBColor {
    PALETTE[index % PALETTE.len()]
}

/// Registers the bundled DejaVu Sans as the `sans-serif` family (once per process).
fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(
            FONT,
            FontStyle::Normal,
            include_bytes!("../assets/DejaVuSans.ttf"),
        )
        .is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(Error::format(
            "font",
            "the bundled DejaVu Sans font does not parse",
        ))
    }
}

/// Text of `size` pixels per em (plotters takes sizes 1.24 times the em size).
fn font(size: f64) -> TextStyle<'static> {
    TextStyle::from((FONT, size * 1.24).into_font()).color(&BLACK)
}

/// `stem` with `extension` appended (the stem may itself contain dots).
fn with_suffix(stem: &Path, extension: &str) -> PathBuf {
    let mut name = stem.as_os_str().to_owned();
    name.push(".");
    name.push(extension);
    PathBuf::from(name)
}

type DrawResult<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Something that draws itself on any plotters backend.
trait Render {
    fn render<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

fn write_both<R: Render>(chart: &R, stem: &Path) -> Result<[PathBuf; 2]> {
    register_font()?;
    let png_path = with_suffix(stem, "png");
    let svg_path = with_suffix(stem, "svg");
    let failed =
        |path: &Path, reason: String| Error::format(format!("chart {}", path.display()), reason);

    let mut pixels = vec![255u8; WIDTH as usize * HEIGHT as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area();
        chart
            .render(&root)
            .and_then(|()| root.present())
            .map_err(|e| failed(&png_path, e.to_string()))?;
    }
    let png = encode_png(&pixels).map_err(|e| failed(&png_path, e.to_string()))?;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        chart
            .render(&root)
            .and_then(|()| root.present())
            .map_err(|e| failed(&svg_path, e.to_string()))?;
    }

    crate::io::write_atomic(&png_path, &png)?;
    crate::io::write_atomic(&svg_path, svg.as_bytes())?;
    Ok([png_path, svg_path])
}

/// Encodes an RGB buffer of WIDTH × HEIGHT pixels as a PNG file.
fn encode_png(rgb: &[u8]) -> std::result::Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Axes

/// One axis: the range shown, linear or logarithmic, with its ticks and their labels.
#[derive(Clone, Copy, Debug)]
struct Scale {
    lo: f64,
    hi: f64,
    log: bool,
}

impl Scale {
    /// Whether `v` can be placed on this axis at all.
    fn usable(&self, v: f64) -> bool {
        usable(v, self.log)
    }

    fn transform(&self, v: f64) -> f64 {
        if self.log { v.log10() } else { v }
    }

    fn inverse(&self, t: f64) -> f64 {
        if self.log { 10f64.powf(t) } else { t }
    }

    /// Where `v` lies between the ends (0 at `lo`, 1 at `hi`).
    fn fraction(&self, v: f64) -> f64 {
        let (a, b) = (self.transform(self.lo), self.transform(self.hi));
        (self.transform(v) - a) / (b - a)
    }

    fn contains(&self, v: f64) -> bool {
        let f = self.fraction(v);
        self.usable(v) && (-1e-9..=1.0 + 1e-9).contains(&f)
    }

    /// `v` moved into the range (the lower end for values a log axis cannot show).
    fn clamp(&self, v: f64) -> f64 {
        if !self.usable(v) {
            return self.lo;
        }
        v.clamp(self.lo, self.hi)
    }

    /// The labelled ticks, at most `max` of them.
    fn major_ticks(&self, max: usize) -> Vec<f64> {
        if max == 0 {
            return Vec::new();
        }
        if self.log {
            let (d0, d1) = (self.lo.log10().ceil(), self.hi.log10().floor());
            let decades = d1 - d0 + 1.0;
            if decades >= 3.0 {
                let stride = (decades / max as f64).ceil().max(1.0);
                let first = (d0 / stride).ceil() * stride;
                return (0..)
                    .map(|k| first + k as f64 * stride)
                    .take_while(|&d| d <= d1)
                    .map(|d| 10f64.powf(d))
                    .collect();
            }
            for mantissas in [
                &[1.0, 2.0, 5.0][..],
                &[1.0],
                &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
            ] {
                let ticks = self.log_subdivisions(mantissas);
                if ticks.len() >= 2 && ticks.len() <= max.max(3) {
                    return ticks;
                }
            }
        }
        linear_ticks(self.lo, self.hi, max).0
    }

    /// Ticks for grid lines only.
    fn minor_ticks(&self, max: usize) -> Vec<f64> {
        if self.log {
            let decades = self.hi.log10().floor() - self.lo.log10().ceil() + 1.0;
            if (2.0..=12.0).contains(&decades) {
                return self.log_subdivisions(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
            }
            return self.major_ticks(max);
        }
        let (_, step) = linear_ticks(self.lo, self.hi, max);
        let leading = step / 10f64.powf(step.log10().floor());
        let minor = if (leading - 2.0).abs() < 0.1 {
            step / 4.0
        } else {
            step / 5.0
        };
        let first = (self.lo / minor).ceil();
        let last = (self.hi / minor).floor();
        if !(last - first).is_finite() || last - first > 200.0 {
            return Vec::new();
        }
        (0..=(last - first) as usize)
            .map(|k| (first + k as f64) * minor)
            .collect()
    }

    /// The values m·10ᵏ inside the range for the given mantissas m.
    fn log_subdivisions(&self, mantissas: &[f64]) -> Vec<f64> {
        let (d0, d1) = (self.lo.log10().floor(), self.hi.log10().ceil());
        if !(d1 - d0).is_finite() || d1 - d0 > 40.0 {
            return Vec::new();
        }
        let mut ticks = Vec::new();
        let mut d = d0;
        while d <= d1 {
            for &m in mantissas {
                let v = m * 10f64.powf(d);
                if self.contains(v) {
                    ticks.push(v);
                }
            }
            d += 1.0;
        }
        ticks
    }

    /// The text of the tick at `v`.
    fn label(&self, v: f64) -> String {
        if self.log {
            // Powers of ten when the axis reaches beyond 0.001 … 10000, plain numbers otherwise.
            if self.lo >= 0.99e-3 && self.hi <= 1.01e4 {
                return format_significant(v, 2);
            }
            let exponent = v.log10().floor();
            let mantissa = (v / 10f64.powf(exponent) * 10.0).round() / 10.0;
            let power = format!("10{}", superscript(exponent as i64));
            return if (mantissa - 1.0).abs() < 1e-9 {
                power
            } else {
                format!("{}×{power}", format_significant(mantissa, 2))
            };
        }
        let (_, step) = linear_ticks(self.lo, self.hi, MAX_TICKS);
        format_tick(v, step, self.lo.abs().max(self.hi.abs()))
    }
}

impl Ranged for Scale {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let f = self.fraction(*value);
        // Far outside values are pinned a little beyond the frame; callers clip before drawing.
        let f = if f.is_finite() {
            f.clamp(-2.0, 3.0)
        } else {
            -2.0
        };
        (limit.0 as f64 + f * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        match hint.weight() {
            KeyPointWeight::Bold => self.major_ticks(hint.bold_points()),
            KeyPointWeight::Any => self.minor_ticks(hint.bold_points().max(1)),
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

fn usable(v: f64, log: bool) -> bool {
    v.is_finite() && (!log || v > 0.0)
}

/// Evenly spaced ticks at a 1, 2 or 5 × 10ᵏ step, at most `max` of them, and the step.
fn linear_ticks(lo: f64, hi: f64, max: usize) -> (Vec<f64>, f64) {
    let span = hi - lo;
    if !span.is_finite() || span <= 0.0 || max == 0 {
        return (Vec::new(), 1.0);
    }
    let raw = span / max as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let mut step = magnitude * 10.0;
    for m in [1.0, 2.0, 5.0, 10.0] {
        let candidate = m * magnitude;
        if span / candidate <= max as f64 - 1.0 + 1e-9 {
            step = candidate;
            break;
        }
    }
    let first = (lo / step - 1e-9).ceil();
    let last = (hi / step + 1e-9).floor();
    if last < first || last - first > 1000.0 {
        return (Vec::new(), step);
    }
    let ticks = (0..=(last - first) as usize)
        .map(|k| {
            let v = (first + k as f64) * step;
            if v.abs() < step * 1e-9 { 0.0 } else { v }
        })
        .collect();
    (ticks, step)
}

/// A tick label: as many decimals as the step needs, scientific for very large or small
/// numbers.
fn format_tick(v: f64, step: f64, magnitude: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let step_exponent = step.log10().floor();
    if !(1e-3..1e5).contains(&magnitude) {
        let digits = (v.abs().log10().floor() - step_exponent).clamp(0.0, 6.0) as usize;
        return format_scientific(v, digits);
    }
    let decimals = (-step_exponent).clamp(0.0, 10.0) as usize;
    format!("{v:.decimals$}")
}

/// `v` with `significant` digits, scientific when very small or large (`5.3e-5`).
fn format_significant(v: f64, significant: usize) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let exponent = v.abs().log10().floor();
    if !(-3.0..5.0).contains(&exponent) {
        return format_scientific(v, significant.saturating_sub(1));
    }
    let decimals = (significant as f64 - 1.0 - exponent).max(0.0) as usize;
    let text = format!("{v:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// `v` in scientific notation with `digits` decimals of mantissa (`5.3e-5`).
fn format_scientific(v: f64, digits: usize) -> String {
    let text = format!("{v:.digits$e}");
    match text.split_once('e') {
        Some((mantissa, exponent)) if mantissa.contains('.') => {
            let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
            format!("{mantissa}e{exponent}")
        }
        _ => text,
    }
}

fn superscript(n: i64) -> String {
    n.to_string()
        .chars()
        .map(|c| match c {
            '-' => '⁻',
            '0' => '⁰',
            '1' => '¹',
            '2' => '²',
            '3' => '³',
            '4' => '⁴',
            '5' => '⁵',
            '6' => '⁶',
            '7' => '⁷',
            '8' => '⁸',
            '9' => '⁹',
            other => other,
        })
        .collect()
}

/// The smallest and largest usable values seen.
#[derive(Clone, Copy, Debug)]
struct Extent {
    lo: f64,
    hi: f64,
    log: bool,
}

impl Extent {
    fn new(log: bool) -> Self {
        Self {
            lo: f64::INFINITY,
            hi: f64::NEG_INFINITY,
            log,
        }
    }

    fn add(&mut self, v: f64) {
        if usable(v, self.log) {
            self.lo = self.lo.min(v);
            self.hi = self.hi.max(v);
        }
    }

    fn is_empty(&self) -> bool {
        self.lo > self.hi
    }

    /// The axis: `requested` when usable, otherwise the extent widened by `margin` of its
    /// span on each side (padded when it is a single value). A lower end at exactly zero on a
    /// linear axis stays (`keep_zero`, for bars that start there).
    fn scale(&self, requested: Option<(f64, f64)>, margin: f64, keep_zero: bool) -> Scale {
        let log = self.log;
        if let Some((lo, hi)) = requested
            && usable(lo, log)
            && usable(hi, log)
            && lo < hi
        {
            return Scale { lo, hi, log };
        }
        if self.is_empty() {
            let (lo, hi) = if log { (1.0, 10.0) } else { (0.0, 1.0) };
            return Scale { lo, hi, log };
        }
        let probe = Scale {
            lo: self.lo,
            hi: self.hi,
            log,
        };
        let (a, b) = (probe.transform(self.lo), probe.transform(self.hi));
        let span = b - a;
        let (a, b) = if span <= 1e-12 * a.abs().max(b.abs()) || span == 0.0 {
            let half = if log {
                0.3
            } else if a != 0.0 {
                0.1 * a.abs()
            } else {
                1.0
            };
            (a - half, b + half)
        } else {
            let lo_margin = if keep_zero && !log && a == 0.0 {
                0.0
            } else {
                span * margin
            };
            (a - lo_margin, b + span * margin)
        };
        let (lo, hi) = (probe.inverse(a), probe.inverse(b));
        if usable(lo, log) && usable(hi, log) && lo < hi {
            Scale { lo, hi, log }
        } else {
            let (lo, hi) = if log { (1.0, 10.0) } else { (0.0, 1.0) };
            Scale { lo, hi, log }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Geometry

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

// ---------------------------------------------------------------------------------------------
// Legend

#[derive(Clone, Copy, Debug, PartialEq)]
enum Swatch {
    Line,
    Dashed,
    Marker,
    Filled,
}

struct LegendEntry<'a> {
    label: &'a str,
    colour: RGBColor,
    swatch: Swatch,
}

const LEGEND_PAD: i32 = 10;
const SWATCH_LEN: i32 = 36;
const LEGEND_GAP: i32 = 10;
const LEGEND_ROW: i32 = 26;
const LEGEND_INSET: i32 = 12;

/// Draws the legend into `area` (the plotting area, in pixels) in the corner that covers the
/// fewest of `occupied` pixels.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry<'_>],
    occupied: &[(i32, i32)],
) -> DrawResult<DB> {
    if entries.is_empty() {
        return Ok(());
    }
    let style = font(LEGEND_SIZE);
    let mut text_width = 0;
    for entry in entries {
        text_width = text_width.max(area.estimate_text_size(entry.label, &style)?.0 as i32);
    }
    let width = 2 * LEGEND_PAD + SWATCH_LEN + LEGEND_GAP + text_width;
    let height = 2 * LEGEND_PAD + LEGEND_ROW * entries.len() as i32 - 6;
    let (area_w, area_h) = area.dim_in_pixel();
    let (area_w, area_h) = (area_w as i32, area_h as i32);
    let left = LEGEND_INSET;
    let right = (area_w - width - LEGEND_INSET).max(left);
    let top = LEGEND_INSET;
    let bottom = (area_h - height - LEGEND_INSET).max(top);
    let corners = [(right, top), (left, top), (right, bottom), (left, bottom)];
    let covered = |&(x, y): &(i32, i32)| {
        occupied
            .iter()
            .filter(|&&(px, py)| {
                px >= x - 4 && px <= x + width + 4 && py >= y - 4 && py <= y + height + 4
            })
            .count()
    };
    let (x, y) = corners
        .iter()
        .copied()
        .enumerate()
        .min_by_key(|(i, c)| (covered(c), *i))
        .map_or((right, top), |(_, c)| c);

    area.draw(&Rectangle::new(
        [(x, y), (x + width, y + height)],
        WHITE.mix(0.85).filled(),
    ))?;
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
fn draw_no_data<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
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
fn widest<DB: DrawingBackend>(
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
fn under_title<DB: DrawingBackend>(
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

impl Render for Chart {
    fn render<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let (xs, ys) = self.scales();
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

        let mut chart = ChartBuilder::on(&area)
            .margin_left(12)
            .margin_right(30)
            .margin_bottom(10)
            .margin_top(6)
            .x_label_area_size(TICK_SIZE as u32 + 18 + x_desc)
            .y_label_area_size(y_tick_width + 16 + y_desc)
            .build_cartesian_2d(xs, ys)?;
        let x_format = |v: &f64| xs.label(*v);
        let y_format = |v: &f64| ys.label(*v);
        let mut mesh = chart.configure_mesh();
        mesh.x_labels(MAX_TICKS)
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

        let plot = chart.plotting_area().strip_coord_spec();
        let (plot_w, plot_h) = plot.dim_in_pixel();
        let to_pixel = |(x, y): (f64, f64)| -> (i32, i32) {
            (
                (xs.fraction(x) * plot_w as f64).round() as i32,
                ((1.0 - ys.fraction(y)) * plot_h as f64).round() as i32,
            )
        };
        let mut occupied: Vec<(i32, i32)> = Vec::new();
        let mut legend: Vec<LegendEntry<'_>> = Vec::new();
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
            let swatch = match series.style {
                Style::Line => Swatch::Line,
                Style::Dashed => Swatch::Dashed,
                Style::Markers => Swatch::Marker,
                Style::Steps => Swatch::Filled,
            };
            if !series.label.trim().is_empty() {
                legend.push(LegendEntry {
                    label: series.label.as_str(),
                    colour,
                    swatch,
                });
            }
            match series.style {
                Style::Line | Style::Dashed => {
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
                        sample_run(&run, &to_pixel, &mut occupied);
                        if series.style == Style::Line {
                            chart.draw_series(LineSeries::new(run, colour.stroke_width(2)))?;
                        } else {
                            chart.draw_series(DashedLineSeries::new(
                                run,
                                10,
                                6,
                                colour.stroke_width(2),
                            ))?;
                        }
                    }
                }
                Style::Markers => {
                    for &(x, y, _) in &points {
                        if xs.contains(x) && ys.contains(y) {
                            drew_any = true;
                            occupied.push(to_pixel((x, y)));
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
                    drew_any |= draw_steps(
                        &mut chart,
                        &xs,
                        &ys,
                        &points,
                        width,
                        colour,
                        fill,
                        &to_pixel,
                        &mut occupied,
                    )?;
                }
            }
            for &(x, y, e) in &points {
                if e > 0.0 && xs.contains(x) {
                    let (lo, hi) = (y - e, y + e);
                    if draw_error_bar(&mut chart, &ys, x, lo, hi, colour)? {
                        drew_any = true;
                        occupied.push(to_pixel((x, ys.clamp(lo))));
                        occupied.push(to_pixel((x, ys.clamp(hi))));
                    }
                }
            }
        }

        // Each labelled reference line takes the next colour; an unlabelled one continues the
        // one before it (the other end of a window, say).
        let mut reference_colour = self.series.len();
        let references = self
            .vertical
            .iter()
            .map(|m| (m, true))
            .chain(self.horizontal.iter().map(|m| (m, false)));
        for (k, (marker, vertical)) in references.enumerate() {
            if k == 0 || !marker.label.trim().is_empty() {
                reference_colour += usize::from(k > 0);
            }
            let colour = colour(marker.colour.unwrap_or(reference_colour));
            let (scale, ends) = if vertical {
                (&xs, [(marker.value, ys.lo), (marker.value, ys.hi)])
            } else {
                (&ys, [(xs.lo, marker.value), (xs.hi, marker.value)])
            };
            if !scale.contains(marker.value) {
                continue;
            }
            drew_any = true;
            sample_run(&ends, &to_pixel, &mut occupied);
            chart.draw_series(DashedLineSeries::new(ends, 9, 6, colour.stroke_width(2)))?;
            if !marker.label.trim().is_empty() {
                legend.push(LegendEntry {
                    label: marker.label.as_str(),
                    colour,
                    swatch: Swatch::Dashed,
                });
            }
        }

        if !drew_any {
            return draw_no_data(&plot);
        }
        draw_legend(&plot, &legend, &occupied)
    }
}

/// Records pixels along a drawn line (about every 6 px) for placing the legend.
fn sample_run(
    run: &[(f64, f64)],
    to_pixel: &impl Fn((f64, f64)) -> (i32, i32),
    occupied: &mut Vec<(i32, i32)>,
) {
    for pair in run.windows(2) {
        let (a, b) = (to_pixel(pair[0]), to_pixel(pair[1]));
        let length = ((b.0 - a.0) as f64).hypot((b.1 - a.1) as f64);
        let steps = ((length / 6.0).ceil() as usize).clamp(1, 400);
        for k in 0..=steps {
            let t = k as f64 / steps as f64;
            occupied.push((
                a.0 + ((b.0 - a.0) as f64 * t).round() as i32,
                a.1 + ((b.1 - a.1) as f64 * t).round() as i32,
            ));
        }
    }
    if run.len() == 1 {
        occupied.push(to_pixel(run[0]));
    }
}

type Cartesian<'a, DB> = ChartContext<'a, DB, Cartesian2d<Scale, Scale>>;

/// Draws a histogram (filled bins and their outline); whether anything was visible.
#[allow(clippy::too_many_arguments)]
fn draw_steps<DB: DrawingBackend>(
    chart: &mut Cartesian<'_, DB>,
    xs: &Scale,
    ys: &Scale,
    points: &[(f64, f64, f64)],
    width: f64,
    colour: RGBColor,
    fill: f64,
    to_pixel: &impl Fn((f64, f64)) -> (i32, i32),
    occupied: &mut Vec<(i32, i32)>,
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
        sample_run(&run, to_pixel, occupied);
        chart.draw_series(LineSeries::new(run, colour.stroke_width(2)))?;
    }
    Ok(drew)
}

/// Draws a vertical error bar from `lo` to `hi` at `x`, with caps on the ends inside the
/// range; whether any of it was visible.
fn draw_error_bar<DB: DrawingBackend>(
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

// ---------------------------------------------------------------------------------------------
// Bar charts

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
            let text = format_significant(bar.value, 2);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh empty directory under the system temporary directory.
    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("latflow-plot-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Checks the PNG signature and its 1000×640 size, and that the SVG is an SVG holding
    /// each of `texts`.
    fn check_files(paths: &[PathBuf; 2], texts: &[&str]) {
        let png = std::fs::read(&paths[0]).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{}", paths[0].display());
        assert_eq!(&png[12..16], b"IHDR");
        let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
        assert_eq!((width, height), (1000, 640));
        let svg = std::fs::read_to_string(&paths[1]).unwrap();
        let start = svg.trim_start();
        assert!(
            start.starts_with("<svg") || start.starts_with("<?xml"),
            "{}",
            &svg[..svg.len().min(80)]
        );
        assert!(svg.trim_end().ends_with("</svg>"));
        for text in texts {
            assert!(svg.contains(text), "{} lacks {text:?}", paths[1].display());
        }
    }

    /// Γ(t)-like normalised autocorrelation with a summation window.
    fn gamma_chart() -> Chart {
        let points: Vec<(f64, f64)> = (0..=30)
            .map(|t| (t as f64, (-(t as f64) / 6.5).exp()))
            .collect();
        let errors = points.iter().map(|&(t, _)| 0.004 * (1.0 + t)).collect();
        Chart {
            title: "Normalised autocorrelation of |φ|²".into(),
            x_label: "lag t".into(),
            y_label: "ρ(t)".into(),
            series: vec![
                Series {
                    label: "ρ(t) with errors".into(),
                    points,
                    errors: Some(errors),
                    style: Style::Markers,
                    colour: None,
                },
                Series {
                    label: "exp(−t/τ), τ = 6.5".into(),
                    points: (0..=300)
                        .map(|k| (k as f64 / 10.0, (-(k as f64) / 65.0).exp()))
                        .collect(),
                    errors: None,
                    style: Style::Dashed,
                    colour: None,
                },
            ],
            y_log: true,
            vertical: vec![Marker {
                value: 19.0,
                label: "window W = 19".into(),
                colour: None,
            }],
            y_range: Some((0.01, 1.2)),
            ..Chart::default()
        }
    }

    /// A histogram of log-weights on log-y, with a Gaussian curve.
    fn histogram_chart() -> Chart {
        let centres: Vec<f64> = (0..40).map(|k| -6.0 + 0.3 * k as f64 + 0.15).collect();
        let density =
            |x: f64| (-(x + 0.2) * (x + 0.2) / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let counts: Vec<(f64, f64)> = centres
            .iter()
            .map(|&c| {
                (
                    c,
                    if c > 4.5 {
                        0.0
                    } else {
                        density(c) * (1.0 + 0.1 * (7.0 * c).sin())
                    },
                )
            })
            .collect();
        Chart {
            title: "Log-weight distribution".into(),
            x_label: "log w − mean".into(),
            y_label: "density".into(),
            series: vec![
                Series {
                    label: "flow proposals".into(),
                    points: counts,
                    errors: None,
                    style: Style::Steps,
                    colour: None,
                },
                Series {
                    label: "normal density".into(),
                    points: (0..=240)
                        .map(|k| (-6.0 + 0.05 * k as f64, density(-6.0 + 0.05 * k as f64)))
                        .collect(),
                    errors: None,
                    style: Style::Line,
                    colour: None,
                },
            ],
            y_log: true,
            horizontal: vec![Marker {
                value: 1e-3,
                label: "resolution 10⁻³".into(),
                colour: None,
            }],
            ..Chart::default()
        }
    }

    /// A correlator with errors on log-y and a cosh fit line, going negative at large t.
    fn correlator_chart() -> Chart {
        let (extent, mass) = (32.0, 0.35);
        let cosh = |t: f64| 0.8 * ((-mass * t).exp() + (-mass * (extent - t)).exp());
        let points: Vec<(f64, f64)> = (0..32)
            .map(|t| {
                let t = t as f64;
                let noise = 0.002 * (1.7 * t).sin();
                (t, cosh(t) + noise)
            })
            .collect();
        let errors = points.iter().map(|&(_, c)| 0.03 * c + 0.0015).collect();
        Chart {
            title: "Two-point correlator".into(),
            x_label: "time separation t".into(),
            y_label: "C(t)".into(),
            series: vec![
                Series {
                    label: "measured".into(),
                    points,
                    errors: Some(errors),
                    style: Style::Markers,
                    colour: None,
                },
                Series {
                    label: "cosh fit, m = 0.350(4)".into(),
                    points: (20..=280)
                        .map(|k| (k as f64 / 10.0, cosh(k as f64 / 10.0)))
                        .collect(),
                    errors: None,
                    style: Style::Line,
                    colour: None,
                },
            ],
            y_log: true,
            vertical: vec![
                Marker {
                    value: 2.0,
                    label: "fit range".into(),
                    colour: None,
                },
                Marker {
                    value: 28.0,
                    label: String::new(),
                    colour: None,
                },
            ],
            ..Chart::default()
        }
    }

    fn bar_chart() -> BarChart {
        let values = [5.3e-5, 1.2e-5, 9.8e-5, 3.1e-5, 6.6e-5];
        let names = [
            "HMC",
            "local Metropolis",
            "flow",
            "flow + HMC",
            "flow + local",
        ];
        BarChart {
            title: "Cost per effective sample".into(),
            y_label: "CPU seconds".into(),
            bars: names
                .iter()
                .zip(values)
                .map(|(name, value)| Bar {
                    label: name.to_string(),
                    value,
                    err: Some(0.12 * value),
                })
                .collect(),
            y_log: false,
            note: Some("L = 16, λ = 0.5; errors from the Γ-method".into()),
        }
    }

    #[test]
    fn line_chart_with_error_bars() {
        let dir = temp_dir("line");
        let chart = Chart {
            title: "Line with errors".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![Series {
                label: "data".into(),
                points: (0..10).map(|i| (i as f64, (i * i) as f64)).collect(),
                errors: Some(vec![1.5; 10]),
                style: Style::Line,
                colour: None,
            }],
            ..Chart::default()
        };
        let paths = draw_chart(&chart, &dir.join("line")).unwrap();
        assert_eq!(paths[0], dir.join("line.png"));
        assert_eq!(paths[1], dir.join("line.svg"));
        check_files(&paths, &["Line with errors", "data"]);
    }

    #[test]
    fn histogram_on_log_axis() {
        let dir = temp_dir("hist");
        let paths = draw_chart(&histogram_chart(), &dir.join("hist.v1")).unwrap();
        assert_eq!(paths[0], dir.join("hist.v1.png"));
        check_files(
            &paths,
            &["Log-weight distribution", "flow proposals", "resolution"],
        );
    }

    #[test]
    fn chart_with_reference_lines() {
        let dir = temp_dir("markers");
        let paths = draw_chart(&gamma_chart(), &dir.join("gamma")).unwrap();
        check_files(&paths, &["Normalised autocorrelation", "window W = 19"]);
        let paths = draw_chart(&correlator_chart(), &dir.join("correlator")).unwrap();
        check_files(&paths, &["Two-point correlator", "cosh fit", "fit range"]);
    }

    #[test]
    fn empty_chart_says_no_data() {
        let dir = temp_dir("empty");
        let paths = draw_chart(&Chart::default(), &dir.join("empty")).unwrap();
        check_files(&paths, &["no data"]);
        let log_empty = Chart {
            title: "Nothing positive".into(),
            y_log: true,
            x_log: true,
            series: vec![Series {
                label: "negative".into(),
                points: vec![(-1.0, -2.0), (0.0, 0.0)],
                errors: None,
                style: Style::Markers,
                colour: None,
            }],
            ..Chart::default()
        };
        let paths = draw_chart(&log_empty, &dir.join("log-empty")).unwrap();
        check_files(&paths, &["Nothing positive", "no data"]);
        let paths = draw_bars(&BarChart::default(), &dir.join("bars-empty")).unwrap();
        check_files(&paths, &["no data"]);
    }

    #[test]
    fn bar_chart_draws() {
        let dir = temp_dir("bars");
        let paths = draw_bars(&bar_chart(), &dir.join("bars")).unwrap();
        check_files(
            &paths,
            &[
                "Cost per effective sample",
                "local Metropolis",
                "5.3e-5",
                "Γ-method",
            ],
        );
    }

    #[test]
    fn awkward_input_draws() {
        let dir = temp_dir("awkward");
        let nan = f64::NAN;
        let inf = f64::INFINITY;
        let series = |points: Vec<(f64, f64)>, errors: Option<Vec<f64>>, style| Series {
            label: "s".into(),
            points,
            errors,
            style,
            colour: None,
        };
        let styles = [Style::Line, Style::Dashed, Style::Markers, Style::Steps];
        type PointsAndErrors = (Vec<(f64, f64)>, Option<Vec<f64>>);
        let inputs: Vec<PointsAndErrors> = vec![
            (vec![], None),
            (vec![(nan, nan)], Some(vec![nan])),
            (vec![(1.0, 2.0)], Some(vec![0.5])),
            (vec![(1.0, 2.0), (1.0, 2.0)], None),
            (vec![(0.0, 0.0), (0.0, 0.0)], Some(vec![0.0, 0.0])),
            (
                vec![(1.0, inf), (2.0, -inf), (nan, 3.0), (4.0, 5.0)],
                Some(vec![inf, nan]),
            ),
            (
                vec![(1e-300, 1e300), (1e300, 1e-300)],
                Some(vec![1e300, 1e300]),
            ),
            (
                vec![(-5.0, -1.0), (5.0, 10.0), (6.0, -3.0)],
                Some(vec![20.0, 1.0, 1.0, 7.0]),
            ),
        ];
        let ranges = [
            None,
            Some((1.0, 1.0)),
            Some((nan, 2.0)),
            Some((-1.0, 2.0)),
            Some((2.0, 3.0)),
        ];
        let mut k = 0;
        for (points, errors) in &inputs {
            for (s, &style) in styles.iter().enumerate() {
                for x_log in [false, true] {
                    for y_log in [false, true] {
                        let chart = Chart {
                            series: vec![series(points.clone(), errors.clone(), style)],
                            x_log,
                            y_log,
                            vertical: vec![
                                Marker {
                                    value: nan,
                                    label: "v".into(),
                                    colour: None,
                                },
                                Marker {
                                    value: 1.0,
                                    label: String::new(),
                                    colour: None,
                                },
                            ],
                            horizontal: vec![Marker {
                                value: -1.0,
                                label: "h".into(),
                                colour: None,
                            }],
                            x_range: ranges[(k + s) % ranges.len()],
                            y_range: ranges[(k + 2 * s + 1) % ranges.len()],
                            ..Chart::default()
                        };
                        draw_chart(&chart, &dir.join(format!("c{k}"))).unwrap();
                        k += 1;
                    }
                }
            }
        }
        let bar_inputs = [
            vec![],
            vec![Bar {
                label: String::new(),
                value: nan,
                err: Some(nan),
            }],
            vec![Bar {
                label: "zero".into(),
                value: 0.0,
                err: None,
            }],
            vec![
                Bar {
                    label: "neg".into(),
                    value: -3.0,
                    err: Some(1.0),
                },
                Bar {
                    label: "pos".into(),
                    value: 2.0,
                    err: Some(inf),
                },
            ],
            (0..40)
                .map(|i| Bar {
                    label: format!("a rather long category name number {i}"),
                    value: i as f64,
                    err: None,
                })
                .collect(),
        ];
        for (i, bars) in bar_inputs.into_iter().enumerate() {
            for y_log in [false, true] {
                let chart = BarChart {
                    bars: bars.clone(),
                    y_log,
                    note: Some(String::new()),
                    ..BarChart::default()
                };
                draw_bars(&chart, &dir.join(format!("b{i}-{y_log}"))).unwrap();
            }
        }
    }

    #[test]
    fn tick_labels() {
        assert_eq!(format_significant(5.3e-5, 2), "5.3e-5");
        assert_eq!(format_significant(0.25, 2), "0.25");
        assert_eq!(format_significant(1200.0, 2), "1200");
        let scale = Scale {
            lo: 0.0,
            hi: 30.0,
            log: false,
        };
        assert_eq!(
            scale.major_ticks(8),
            vec![0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0]
        );
        let log = Scale {
            lo: 0.01,
            hi: 1.2,
            log: true,
        };
        assert_eq!(log.major_ticks(8), vec![0.01, 0.1, 1.0]);
        assert_eq!(log.label(0.01), "0.01");
        let deep = Scale {
            lo: 1e-9,
            hi: 1.0,
            log: true,
        };
        assert_eq!(deep.label(1e-6), "10⁻⁶");
    }

    /// With `LATFLOW_PLOT_GALLERY=1`, writes example charts to `target/plot-gallery/` for
    /// looking at.
    #[test]
    fn gallery() {
        if std::env::var("LATFLOW_PLOT_GALLERY").as_deref() != Ok("1") {
            return;
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/plot-gallery");
        std::fs::create_dir_all(&dir).unwrap();
        draw_chart(&gamma_chart(), &dir.join("gamma")).unwrap();
        draw_chart(&histogram_chart(), &dir.join("histogram")).unwrap();
        draw_chart(&correlator_chart(), &dir.join("correlator")).unwrap();
        draw_bars(&bar_chart(), &dir.join("bars")).unwrap();
        let mut long = bar_chart();
        for bar in &mut long.bars {
            bar.label = format!("{} with a long description", bar.label);
        }
        long.y_log = true;
        draw_bars(&long, &dir.join("bars-long")).unwrap();
        draw_chart(
            &Chart {
                title: "Empty".into(),
                ..Chart::default()
            },
            &dir.join("empty"),
        )
        .unwrap();
    }
}
