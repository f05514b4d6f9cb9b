//! Rendering a chart to files: the figure size, the bundled DejaVu Sans registered as the
//! `sans-serif` family, the [`Render`] shape every chart implements, and the PNG and SVG
//! written side by side.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::{Error, Result};

/// The size of every figure, in pixels (the SVG in its units).
const WIDTH: u32 = 1000;
const HEIGHT: u32 = 640;
/// The family the bundled font is registered as.
const FONT: &str = "sans-serif";

/// Registers the bundled DejaVu Sans as the `sans-serif` family (once per process).
fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(
            FONT,
            FontStyle::Normal,
            include_bytes!("../../../assets/DejaVuSans.ttf"),
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
pub(super) fn font(size: f64) -> TextStyle<'static> {
    TextStyle::from((FONT, size * 1.24).into_font()).color(&BLACK)
}

/// `stem` with `extension` appended (the stem may itself contain dots).
fn with_suffix(stem: &Path, extension: &str) -> PathBuf {
    let mut name = stem.as_os_str().to_owned();
    name.push(".");
    name.push(extension);
    PathBuf::from(name)
}

/// What drawing on a plotters backend gives.
pub(super) type DrawResult<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Something that draws itself on any plotters backend.
pub(super) trait Render {
    fn render<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

/// Draws `chart` to `stem` + ".png" and `stem` + ".svg", each written atomically; returns
/// the two paths.
pub(super) fn write_both<R: Render>(chart: &R, stem: &Path) -> Result<[PathBuf; 2]> {
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
