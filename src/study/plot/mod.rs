//! Charts for study reports, written as a PNG (1000×640 px) and an SVG side by side.
//!
//! [`draw_chart`] draws lines, dashed lines, markers with error bars, bands and histograms on
//! linear or logarithmic axes (or named categories along x), with dashed reference lines and
//! the legend to the right of the plot, clear of the data; [`draw_bars`] draws named values as bars
//! with error bars. Text uses the DejaVu Sans font shipped with the crate (registered once as
//! `sans-serif`), so the pictures do not depend on the fonts of the machine. Input is never
//! refused: non-finite points, and non-positive values on a logarithmic axis, are left out,
//! and a chart with nothing to draw shows an empty frame saying "no data".
//!
//! Split by what it holds: `scale` the axes (linear and logarithmic ranges, ticks and their
//! labels), `layout` the look and the geometry of a figure (text sizes, palette, title,
//! legend), `chart` and `bars` the drawing of the two kinds of chart, and
//! `backend` the PNG and SVG files with the bundled font.

mod backend;
mod bars;
mod chart;
mod layout;
mod scale;

use std::path::{Path, PathBuf};

use crate::Result;
use backend::write_both;

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
    /// A band: the points with their errors, drawn as a translucent area from y − error to
    /// y + error with a line through the points (a fitted value with its error, say).
    Band,
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
    /// Ticks of the (linear) x axis at whole numbers only: lattice distances, counts.
    pub x_integer: bool,
    /// Names written under x = 0, 1, 2, … instead of numbers (a chart of categories).
    pub x_categories: Vec<String>,
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
    /// Significant digits of the values printed above the bars (trailing zeros kept, so
    /// that every bar reads alike; 0 means 2).
    pub value_digits: usize,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh empty directory under the system temporary directory, removed on drop.
    fn temp_dir(name: &str) -> crate::testing::TempDir {
        crate::testing::TempDir::new(&format!("latflow-plot-{name}-{}", std::process::id()))
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
            value_digits: 2,
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
